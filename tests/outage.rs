//! The store going away under serving instances, made real: a PostgreSQL
//! server of the test's own stopped and started again under two
//! instances, and a SQLite data directory on a small file system the test
//! fills up. Whatever happens, the instances keep running, say what is
//! wrong at a bounded rate, record the runs that ended meanwhile once the
//! store is back, and run no slot twice.

mod common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::cluster::{Cluster, count, field, summary};
use common::own_postgres::OwnPostgres;
use common::serve_env::{Env, Serve, start_serving};
use serde_json::Value;

/// Everything an instance printed, kept while waiting for a line.
struct Printed {
    lines: Vec<String>,
}

impl Printed {
    fn new() -> Self {
        Printed { lines: Vec::new() }
    }

    /// Reads `rx` until a line contains `text`; panics after `within`.
    fn wait_for(&mut self, rx: &Receiver<String>, text: &str, within: Duration, who: &str) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.lines.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "{who} did not print '{text}' within {within:?}; it printed:\n{}",
                    self.lines.join("\n")
                ),
            }
        }
    }

    fn count(&self, text: &str) -> usize {
        self.lines.iter().filter(|l| l.contains(text)).count()
    }
}

/// A configuration of the misbehaving test task that sleeps `ms` every
/// second: one run is always in flight, so one ends during a fault.
fn add_slow(env: &Env, ms: &str) {
    env.ok(&[
        "task",
        "add",
        "slow",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1s",
        "-p",
        "action=sleep",
        "-p",
        &format!("ms={ms}"),
    ]);
}

/// `serve` on `env` as instance `name`, its API at `listen`, with the
/// default lease: longer than any fault here, as in production.
fn serve_on(env: &Env, name: &str, listen: &str) -> Serve {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cronwerk"));
    cmd.arg("--data-dir")
        .arg(&env.data)
        .env("CRONWERK_CACHE_DIR", common::compile_cache_dir())
        .args(["serve", "--lease", "30s", "--grace", "2s", "--name", name])
        .args(["--listen", listen, "--plugins"])
        .arg(&env.plugins);
    start_serving(cmd, name)
}

fn time(run: &Value, name: &str) -> Option<DateTime<Utc>> {
    run[name].as_str().and_then(|t| t.parse().ok())
}

#[test]
fn a_postgres_restart_under_two_instances_loses_no_run_and_runs_no_slot_twice() {
    let Some(pg) = OwnPostgres::start() else {
        return;
    };
    let cluster = Cluster::new(Some(pg.backend()), &["hello.wasm", "misbehave.wasm"]).unwrap();
    // The default lease: longer than the outage, as in production.
    let serves = [
        cluster.serve_with_lease("a", "30s"),
        cluster.serve_with_lease("b", "30s"),
    ];
    let mut printed = [Printed::new(), Printed::new()];
    cluster.ok(&[
        "task",
        "add",
        "tick",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
        "--misfire",
        "skip",
    ]);
    // Four-second runs back to back: one is always in flight, so one ends
    // while the database is down.
    cluster.ok(&[
        "task",
        "add",
        "slow",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1s",
        "-p",
        "action=sleep",
        "-p",
        "ms=4000",
    ]);
    cluster.wait_runs("tick", "three ticks", |r| count(r, "succeeded") >= 3);
    cluster.wait_runs("slow", "a slow run in flight", |r| {
        count(r, "succeeded") >= 1 && count(r, "running") == 1
    });

    let stopped_at = Utc::now();
    pg.stop();
    for (serve, printed) in serves.iter().zip(&mut printed) {
        printed.wait_for(
            &serve.lines,
            "the store is unavailable",
            Duration::from_secs(10),
            &serve.name,
        );
    }
    // The outage itself: ten seconds of a database that is not there.
    std::thread::sleep(
        Duration::from_secs(10)
            .saturating_sub((Utc::now() - stopped_at).to_std().unwrap_or_default()),
    );
    pg.start_again();
    let back_at = Utc::now();
    for (serve, printed) in serves.iter().zip(&mut printed) {
        printed.wait_for(
            &serve.lines,
            "the store is available again",
            Duration::from_secs(30),
            &serve.name,
        );
    }

    let ticks = cluster.wait_runs("tick", "three ticks after the restart", |r| {
        r.iter()
            .filter(|x| field(x, "state") == "succeeded")
            .filter(|x| time(x, "scheduled_for").is_some_and(|s| s > back_at))
            .count()
            >= 3
    });
    let slow = cluster.wait_runs(
        "slow",
        "a slow run recorded that ended in the outage",
        |r| {
            r.iter().any(|x| {
                field(x, "state") == "succeeded"
                    && time(x, "finished_at").is_some_and(|f| f > stopped_at && f < back_at)
            })
        },
    );

    let mut exits = Vec::new();
    for (serve, mut printed) in serves.into_iter().zip(printed) {
        let name = serve.name.clone();
        let (code, rest) = serve.stop();
        printed.lines.extend(rest);
        exits.push((name, code, printed));
    }
    for (name, code, printed) in &exits {
        let log = printed.lines.join("\n");
        eprintln!("instance {name} printed:\n{log}");
        assert_eq!(*code, Some(0), "instance {name}:\n{log}");
        // One line when it starts, one per 10 s while it lasts, one when
        // it ends: not one per failed call.
        let reports = printed.count("the store is unavailable")
            + printed.count("the store is still unavailable");
        assert!(
            (1..=3).contains(&reports),
            "{reports} reports by {name}:\n{log}"
        );
        for flood in [
            "dispatcher pass failed",
            "heartbeat failed",
            "renewing run leases",
        ] {
            assert_eq!(printed.count(flood), 0, "'{flood}' by {name}:\n{log}");
        }
        assert!(
            printed.count("change listener is back") >= 1,
            "{name}:\n{log}"
        );
    }

    // No slot ran twice; the slots missed during the outage were recorded
    // skipped, as the misfire policy says; nothing was left running or
    // recorded abandoned.
    drop((ticks, slow));
    let final_ticks = cluster.runs("tick");
    let mut slots: Vec<&str> = final_ticks
        .iter()
        .map(|r| field(r, "scheduled_for"))
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(
        slots.len(),
        final_ticks.len(),
        "a slot ran twice: {:#?}",
        summary(&final_ticks)
    );
    assert!(
        final_ticks
            .iter()
            .any(|r| field(r, "state") == "skipped" && field(r, "message").contains("missed")),
        "no missed slot recorded: {:#?}",
        summary(&final_ticks)
    );
    for task in ["tick", "slow"] {
        let runs = cluster.runs(task);
        for state in ["abandoned", "running", "failed"] {
            assert_eq!(count(&runs, state), 0, "{task}: {:#?}", summary(&runs));
        }
    }

    let events = cluster.ok(&["events", "--json", "--limit", "1000"]);
    assert!(
        events.contains("STORE_UNAVAILABLE"),
        "no STORE_UNAVAILABLE event:\n{events}"
    );
}

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped:
/// a file system the test can really fill. Mounting needs root, as
/// `cargo xtask test` runs.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("cronwerk-test")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs on {} failed (the full-disk test needs root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes `file` until the file system refuses more.
    fn fill(&self, file: &str) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.path().join(file)).unwrap();
        let chunk = vec![0xA5u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    break;
                }
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a serve that a failed assertion left running keeps files open.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_under_sqlite_loses_no_run_and_corrupts_nothing() {
    let disk = SmallDisk::mount("24m");
    let mut env = Env::new(&["hello.wasm", "misbehave.wasm"]);
    env.data = disk.path().join("data");
    env.ok(&[
        "task",
        "add",
        "tick",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    // Its events fill the database quickly once the disk is full.
    env.ok(&[
        "task",
        "add",
        "noisy",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1s",
        "-p",
        "action=print",
        "-p",
        "n=200",
    ]);
    add_slow(&env, "3000");
    let mut serve = serve_on(&env, "full", "127.0.0.1:0");
    let mut printed = Printed::new();
    printed.wait_for(
        &serve.lines,
        "API and dashboard on",
        Duration::from_secs(10),
        "serve",
    );
    let base = printed
        .lines
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();
    let health = |expected: u16| {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut reply = agent.get(format!("{base}api/health")).call().unwrap();
        let body = reply.body_mut().read_to_string().unwrap();
        assert_eq!(reply.status().as_u16(), expected, "{body}");
        body
    };
    health(200);
    env.wait_runs("tick", "three ticks", |r| {
        r.iter().filter(|x| x.state.as_str() == "succeeded").count() >= 3
    });

    let full_at = Utc::now();
    disk.fill("filler");
    printed.wait_for(
        &serve.lines,
        "the store is unavailable",
        Duration::from_secs(30),
        "serve",
    );
    let report = printed.lines.last().unwrap().clone();
    assert!(report.contains("disk is full"), "{report}");
    // Full for a while: runs go on ending, and reading still works.
    let listed = env.cli(&["runs", "--task", "tick"]);
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let failing = health(503);
    assert!(failing.contains("disk is full"), "{failing}");
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "serve exited on a full disk: {}",
        printed.lines.join("\n")
    );

    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let freed_at = Utc::now();
    printed.wait_for(
        &serve.lines,
        "the store is available again",
        Duration::from_secs(60),
        "serve",
    );
    printed.wait_for(
        &serve.lines,
        "that finished while the store was unavailable",
        Duration::from_secs(30),
        "serve",
    );
    health(200);
    env.wait_runs("tick", "ticks after the space came back", |r| {
        r.iter()
            .filter(|x| x.state.as_str() == "succeeded")
            .filter(|x| x.scheduled_for.is_some_and(|s| s > freed_at))
            .count()
            >= 2
    });
    let slow = env.runs("slow");
    assert!(
        slow.iter().any(|r| r.state.as_str() == "succeeded"
            && r.finished_at.is_some_and(|f| f > full_at && f < freed_at)),
        "no slow run that ended on the full disk was recorded: {:#?}",
        slow.iter()
            .map(|r| (r.state, r.finished_at))
            .collect::<Vec<_>>()
    );

    let (code, rest) = serve.stop();
    printed.lines.extend(rest);
    let log = printed.lines.join("\n");
    eprintln!("serve printed:\n{log}");
    assert_eq!(code, Some(0), "{log}");
    let reports =
        printed.count("the store is unavailable") + printed.count("the store is still unavailable");
    assert!(reports <= 6, "{reports} reports:\n{log}");
    for task in ["tick", "noisy", "slow"] {
        let runs = env.runs(task);
        assert!(
            runs.iter()
                .all(|r| !matches!(r.state.as_str(), "running" | "abandoned")),
            "{task}: {:#?}",
            runs.iter()
                .map(|r| (r.state, &r.message))
                .collect::<Vec<_>>()
        );
    }
    let db = rusqlite::Connection::open(env.data.join("cronwerk.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let events = env.ok(&["events", "--json", "--limit", "100000"]);
    assert!(
        events.contains("STORE_UNAVAILABLE"),
        "no STORE_UNAVAILABLE event"
    );
}

#[test]
fn a_sqlite_database_locked_beyond_the_busy_timeout_loses_no_run() {
    let env = Env::new(&["misbehave.wasm"]);
    add_slow(&env, "2000");
    let serve = serve_on(&env, "locked", "none");
    let mut printed = Printed::new();
    env.wait_runs("slow", "a run in flight after one succeeded", |r| {
        r.iter().any(|x| x.state.as_str() == "succeeded")
            && r.iter().any(|x| x.state.as_str() == "running")
    });

    // Another program holds the write lock for longer than serve's busy
    // timeout (10 s), as a stuck backup or an open `sqlite3` session does.
    let locker = rusqlite::Connection::open(env.data.join("cronwerk.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked_at = Utc::now();
    printed.wait_for(
        &serve.lines,
        "the store is unavailable",
        Duration::from_secs(30),
        "serve",
    );
    assert!(
        printed.lines.last().unwrap().contains("locked"),
        "{}",
        printed.lines.join("\n")
    );
    // The run in flight ended within 2 s of the lock and has been waiting
    // on it since; 14 s in all outlasts that wait too.
    std::thread::sleep(
        Duration::from_secs(14)
            .saturating_sub((Utc::now() - locked_at).to_std().unwrap_or_default()),
    );
    locker.execute_batch("ROLLBACK").unwrap();
    let released_at = Utc::now();
    printed.wait_for(
        &serve.lines,
        "the store is available again",
        Duration::from_secs(30),
        "serve",
    );
    // Whether the run's end waited out the lock (the writes queue behind
    // the one that failed) or was held and recorded after it, it is
    // recorded as it ended.
    let runs = env.wait_runs("slow", "a run after the lock", |r| {
        r.iter().any(|x| {
            x.state.as_str() == "succeeded" && x.scheduled_for.is_some_and(|s| s > released_at)
        })
    });
    assert!(
        runs.iter().any(|r| r.state.as_str() == "succeeded"
            && r.finished_at
                .is_some_and(|f| f > locked_at && f < released_at)),
        "the run that ended while the database was locked was not recorded: {:#?}",
        runs.iter()
            .map(|r| (r.state, r.finished_at))
            .collect::<Vec<_>>()
    );
    let (code, rest) = serve.stop();
    printed.lines.extend(rest);
    assert_eq!(code, Some(0), "{}", printed.lines.join("\n"));
    let runs = env.runs("slow");
    assert!(
        runs.iter()
            .all(|r| !matches!(r.state.as_str(), "running" | "abandoned")),
        "{:#?}",
        runs.iter()
            .map(|r| (r.state, &r.message))
            .collect::<Vec<_>>()
    );
}
