//! Several `cronwerk serve` instances on one store, as operators run them
//! when one machine is not enough: the real binary, two processes, one
//! PostgreSQL database (or one SQLite file on one machine). Every slot runs
//! on exactly one instance, and a killed instance's run is recorded
//! abandoned by the survivor while the schedule goes on. Waits are for
//! records in the store, read through `cronwerk runs --json`.
//!
//! PostgreSQL comes from `CRONWERK_TEST_POSTGRES` (`cargo xtask test`
//! starts one); without it those tests are skipped, unless
//! `CRONWERK_REQUIRE_POSTGRES=1` makes that a failure.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::serve_env::{Serve, start_serving};
use serde_json::Value;

/// Where the instances keep their shared store.
enum Backend {
    Postgres {
        /// The server's URL, for creating and dropping the database.
        admin: String,
        database: String,
        url: String,
    },
    /// One `cronwerk.db` in a data directory every process uses.
    Sqlite,
}

struct Cluster {
    dir: tempfile::TempDir,
    plugins: PathBuf,
    backend: Backend,
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let config: tokio_postgres::Config = url.parse().expect("CRONWERK_TEST_POSTGRES");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connecting to the test server");
    tokio::spawn(connection);
    client
}

/// The PostgreSQL server to test against, or `None` to skip.
fn postgres() -> Option<String> {
    match std::env::var("CRONWERK_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert_ne!(
                std::env::var("CRONWERK_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "CRONWERK_REQUIRE_POSTGRES=1 but CRONWERK_TEST_POSTGRES is not set: run \
                 `cargo xtask test`, or point CRONWERK_TEST_POSTGRES at a server"
            );
            eprintln!(
                "skipped: CRONWERK_TEST_POSTGRES is not set (`cargo xtask test` starts a server)"
            );
            None
        }
    }
}

impl Cluster {
    fn new(backend: Option<Backend>, components: &[&str]) -> Option<Cluster> {
        let backend = backend?;
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for c in components {
            std::fs::copy(common::component_path(c), plugins.join(c)).unwrap();
        }
        Some(Cluster {
            dir,
            plugins,
            backend,
        })
    }

    /// A fresh database on the test server.
    fn postgres() -> Option<Backend> {
        let url = postgres()?;
        let database = format!("cronwerk_e2e_{}", uuid::Uuid::now_v7().simple());
        block_on(async {
            admin_client(&url)
                .await
                .batch_execute(&format!("CREATE DATABASE {database}"))
                .await
                .unwrap()
        });
        // Same server, the new database: swap the path of the URL.
        let admin = url.clone();
        let url = match url.split_once('?') {
            Some((base, query)) => format!("{}/{database}?{query}", base_without_db(base)),
            None => format!("{}/{database}", base_without_db(&url)),
        };
        Some(Backend::Postgres {
            admin,
            database,
            url,
        })
    }

    /// The data directory of instance `name` (its compile cache; also the
    /// store when that is SQLite, then shared by all).
    fn data_dir(&self, name: &str) -> PathBuf {
        match self.backend {
            Backend::Postgres { .. } => self.dir.path().join(format!("data-{name}")),
            Backend::Sqlite => self.dir.path().join("data"),
        }
    }

    fn command(&self, data: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronwerk"));
        cmd.arg("--data-dir").arg(data);
        if let Backend::Postgres { url, .. } = &self.backend {
            cmd.args(["--database", url]);
        }
        cmd
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(&self.data_dir("cli"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `serve` as instance `name`; returns once it says it is serving.
    fn serve(&self, name: &str) -> Serve {
        let mut cmd = self.command(&self.data_dir(name));
        cmd.args(["serve", "--lease", "1s", "--grace", "2s", "--name", name])
            .arg("--plugins")
            .arg(&self.plugins);
        start_serving(cmd, name)
    }

    /// The task's runs, oldest first.
    fn runs(&self, task: &str) -> Vec<Value> {
        let json = self.ok(&["runs", "--task", task, "--json", "--limit", "100000"]);
        let mut runs: Vec<Value> = serde_json::from_str(&json).unwrap();
        runs.reverse();
        runs
    }

    /// Polls until `done` holds for the task's runs.
    fn wait_runs(&self, task: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self.runs(task);
            if done(&runs) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; runs: {:#?}",
                summary(&runs)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `postgresql://host:5432/db` or `postgresql:///db` without the `/db`.
fn base_without_db(base: &str) -> &str {
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kept when the test failed, for a look.
        if std::thread::panicking() {
            return;
        }
        if let Backend::Postgres {
            admin, database, ..
        } = &self.backend
        {
            block_on(async {
                admin_client(admin)
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                    .await
                    .unwrap()
            });
        }
    }
}

fn field<'a>(run: &'a Value, name: &str) -> &'a str {
    run[name].as_str().unwrap_or("")
}

fn summary(runs: &[Value]) -> Vec<(String, String, String, String)> {
    runs.iter()
        .map(|r| {
            (
                field(r, "scheduled_for").to_owned(),
                field(r, "state").to_owned(),
                field(r, "instance").to_owned(),
                field(r, "message").to_owned(),
            )
        })
        .collect()
}

fn count(runs: &[Value], state: &str) -> usize {
    runs.iter().filter(|r| field(r, "state") == state).count()
}

/// Two instances, one configuration every second: each slot runs once.
fn each_slot_runs_once(cluster: Cluster) {
    let a = cluster.serve("a");
    let b = cluster.serve("b");
    // Added while both serve: the change reaches both.
    cluster.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    cluster.wait_runs("hello", "8 successful runs", |r| count(r, "succeeded") >= 8);
    // A manual request goes to one instance too.
    cluster.ok(&["task", "disable", "hello"]);
    let out = cluster.ok(&["task", "run", "hello"]);
    assert!(out.contains("manual") && out.contains("succeeded"), "{out}");
    assert_eq!(a.stop().0, Some(0));
    assert_eq!(b.stop().0, Some(0));

    let runs = cluster.runs("hello");
    let manual: Vec<&Value> = runs.iter().filter(|r| r["trigger"] == "manual").collect();
    assert_eq!(manual.len(), 1, "{:#?}", summary(&runs));
    let mut per_slot: BTreeMap<chrono::DateTime<chrono::Utc>, Vec<&Value>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r["trigger"] == "schedule") {
        let slot = field(r, "scheduled_for").parse().unwrap();
        per_slot.entry(slot).or_default().push(r);
    }
    for (slot, records) in &per_slot {
        assert_eq!(
            records.len(),
            1,
            "slot {slot} has {} records",
            records.len()
        );
        assert_eq!(
            field(records[0], "state"),
            "succeeded",
            "slot {slot}: {:#?}",
            summary(&runs)
        );
    }
    let slots: Vec<_> = per_slot.keys().collect();
    for pair in slots.windows(2) {
        assert_eq!(
            *pair[1] - *pair[0],
            chrono::TimeDelta::seconds(1),
            "no slot between {} and {} was left out",
            pair[0],
            pair[1]
        );
    }
    let mut by_instance: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &runs {
        *by_instance.entry(field(r, "instance")).or_default() += 1;
    }
    eprintln!("{} slots, runs per instance: {by_instance:?}", slots.len());
}

/// An instance killed mid-run: the survivor records the run abandoned once
/// its lease expires, and the schedule goes on there.
fn a_killed_instances_run_is_abandoned_by_the_survivor(cluster: Cluster) {
    let mut serves = vec![cluster.serve("a"), cluster.serve("b")];
    cluster.ok(&[
        "task",
        "add",
        "long",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1s",
        "-p",
        "action=sleep",
        "-p",
        "ms=60000",
    ]);
    let runs = cluster.wait_runs("long", "a running run", |r| count(r, "running") == 1);
    let running = runs
        .iter()
        .find(|r| field(r, "state") == "running")
        .unwrap();
    let victim = field(running, "id").to_owned();
    let holder = field(running, "instance").to_owned();
    let index = serves.iter().position(|s| s.name == holder).unwrap();
    serves.remove(index).kill_9();
    let survivor = serves.pop().unwrap();

    let runs = cluster.wait_runs(
        "long",
        "the killed run abandoned and a new one running on the survivor",
        |r| {
            r.iter()
                .any(|x| field(x, "id") == victim && field(x, "state") == "abandoned")
                && r.iter().any(|x| {
                    field(x, "state") == "running" && field(x, "instance") == survivor.name
                })
        },
    );
    let abandoned = runs.iter().find(|r| field(r, "id") == victim).unwrap();
    assert!(
        field(abandoned, "message").contains(&format!("instance {holder} stopped renewing")),
        "{}",
        field(abandoned, "message")
    );
    assert_eq!(count(&runs, "running"), 1, "{:#?}", summary(&runs));
    assert_eq!(survivor.stop().0, Some(0));
    assert_eq!(count(&cluster.runs("long"), "running"), 0);
}

#[test]
fn two_instances_on_one_postgres_database_run_each_slot_once() {
    if let Some(cluster) = Cluster::new(Cluster::postgres(), &["hello.wasm"]) {
        each_slot_runs_once(cluster);
    }
}

#[test]
fn two_instances_on_one_sqlite_file_run_each_slot_once() {
    let cluster = Cluster::new(Some(Backend::Sqlite), &["hello.wasm"]).unwrap();
    each_slot_runs_once(cluster);
}

#[test]
fn on_postgres_a_killed_instances_run_is_abandoned_by_the_survivor() {
    if let Some(cluster) = Cluster::new(Cluster::postgres(), &["misbehave.wasm"]) {
        a_killed_instances_run_is_abandoned_by_the_survivor(cluster);
    }
}

#[test]
fn on_one_sqlite_file_a_killed_instances_run_is_abandoned_by_the_survivor() {
    let cluster = Cluster::new(Some(Backend::Sqlite), &["misbehave.wasm"]).unwrap();
    a_killed_instances_run_is_abandoned_by_the_survivor(cluster);
}
