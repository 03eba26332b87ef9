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
