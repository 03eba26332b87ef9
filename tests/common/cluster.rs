//! Several `cronwerk serve` processes on one store, for the suites that
//! test what a cluster promises (`cluster`, `chaos`): a fresh PostgreSQL
//! database on the test server, or one SQLite file in a data directory
//! every process shares; the real binary started through the shared serve
//! driver; the run history read through `cronwerk runs --json` or through
//! the library's own store.
//!
//! PostgreSQL comes from `CRONWERK_TEST_POSTGRES` (`cargo xtask test`
//! starts one); without it those tests are skipped, unless
//! `CRONWERK_REQUIRE_POSTGRES=1` makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cronwerk::store::{PostgresStore, SqliteStore, Store};
use serde_json::Value;

use super::serve_env::{Serve, start_serving};

/// Where the instances keep their shared store.
pub enum Backend {
    Postgres {
        /// The server's URL, for creating and dropping the database.
        admin: String,
        database: String,
        url: String,
    },
    /// One `cronwerk.db` in a data directory every process uses.
    Sqlite,
}

pub struct Cluster {
    dir: tempfile::TempDir,
    pub plugins: PathBuf,
    pub backend: Backend,
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
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
pub fn postgres_server() -> Option<String> {
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
    pub fn new(backend: Option<Backend>, components: &[&str]) -> Option<Cluster> {
        let backend = backend?;
        let dir = tempfile::tempdir().unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for c in components {
            std::fs::copy(super::component_path(c), plugins.join(c)).unwrap();
            super::warm_compile_cache(c);
        }
        Some(Cluster {
            dir,
            plugins,
            backend,
        })
    }

    /// A fresh database on the test server.
    pub fn postgres() -> Option<Backend> {
        let url = postgres_server()?;
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
    pub fn data_dir(&self, name: &str) -> PathBuf {
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

    /// The global flags `cli` gives: the data directory and, on
    /// PostgreSQL, the database.
    pub fn cli_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = vec!["--data-dir".into(), self.data_dir("cli").into_os_string()];
        if let Backend::Postgres { url, .. } = &self.backend {
            args.extend(["--database".into(), url.into()]);
        }
        args
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(&self.data_dir("cli"))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
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

    /// Starts `serve` as instance `name` with a 1 s lease; returns once it
    /// says it is serving.
    pub fn serve(&self, name: &str) -> Serve {
        self.serve_with_lease(name, "1s")
    }

    /// Starts `serve` as instance `name` with a plugins folder of its own
    /// holding `components` (as each machine of a web farm has).
    pub fn serve_with_components(&self, name: &str, components: &[&str]) -> Serve {
        let plugins = self.dir.path().join(format!("plugins-{name}"));
        std::fs::create_dir_all(&plugins).unwrap();
        for c in components {
            std::fs::copy(super::component_path(c), plugins.join(c)).unwrap();
            super::warm_compile_cache(c);
        }
        let mut cmd = self.command(&self.data_dir(name));
        cmd.env("CRONWERK_CACHE_DIR", super::compile_cache_dir())
            .args(["serve", "--lease", "1s", "--grace", "2s", "--name", name])
            .args(["--listen", "none"])
            .arg("--plugins")
            .arg(&plugins);
        start_serving(cmd, name)
    }

    /// Starts `serve` as instance `name` with `--lease lease` (e.g. "3s").
    /// Every instance shares the test processes' compile cache, so a start
    /// (or a restart) loads its components without compiling them.
    pub fn serve_with_lease(&self, name: &str, lease: &str) -> Serve {
        let mut cmd = self.command(&self.data_dir(name));
        cmd.env("CRONWERK_CACHE_DIR", super::compile_cache_dir())
            .args(["serve", "--lease", lease, "--grace", "2s", "--name", name])
            .args(["--listen", "none"])
            .arg("--plugins")
            .arg(&self.plugins);
        start_serving(cmd, name)
    }

    /// The library's own store on the cluster's database (the same one
    /// `serve` opens), with the runtime it lives on.
    pub fn store(&self) -> ClusterStore {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store: Arc<dyn Store> = match &self.backend {
            Backend::Postgres { url, .. } => {
                Arc::new(runtime.block_on(PostgresStore::open(url)).unwrap())
            }
            Backend::Sqlite => Arc::new(SqliteStore::open(&self.data_dir("cli")).unwrap()),
        };
        ClusterStore { store, runtime }
    }

    /// The task's runs, oldest first.
    pub fn runs(&self, task: &str) -> Vec<Value> {
        let json = self.ok(&["runs", "--task", task, "--json", "--limit", "100000"]);
        let mut runs: Vec<Value> = serde_json::from_str(&json).unwrap();
        runs.reverse();
        runs
    }

    /// Polls until `done` holds for the task's runs.
    pub fn wait_runs(&self, task: &str, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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

/// A store opened by the test itself, and the runtime its connections run on.
pub struct ClusterStore {
    // Dropped before the runtime its connections ran on.
    pub store: Arc<dyn Store>,
    runtime: tokio::runtime::Runtime,
}

impl ClusterStore {
    /// Runs a store call (or anything else async) to completion.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// "Now" as every instance on this store sees it.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.store.clock().now()
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

pub fn field<'a>(run: &'a Value, name: &str) -> &'a str {
    run[name].as_str().unwrap_or("")
}

pub fn summary(runs: &[Value]) -> Vec<(String, String, String, String)> {
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

pub fn count(runs: &[Value], state: &str) -> usize {
    runs.iter().filter(|r| field(r, "state") == state).count()
}
