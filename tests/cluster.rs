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

use common::cluster::{Backend, Cluster, count, field, summary};
use serde_json::Value;

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

/// A configuration whose row another transaction holds (an instance in the
/// middle of claiming it, a slow edit) does not hold up the others: the
/// instance claims theirs and runs them on time, and the held one runs once
/// the row is let go, no slot twice.
#[test]
fn on_postgres_a_configuration_whose_row_is_held_does_not_delay_the_others() {
    let Some(cluster) = Cluster::new(Cluster::postgres(), &["hello.wasm"]) else {
        return;
    };
    let Backend::Postgres { url, .. } = &cluster.backend else {
        unreachable!()
    };
    for name in ["held", "free"] {
        cluster.ok(&[
            "task",
            "add",
            name,
            "--implementation",
            "Acme.HelloScheduledTask",
            "--every",
            "1s",
        ]);
    }
    let serve = cluster.serve("a");
    let runs = cluster.wait_runs("held", "a run of 'held'", |r| count(r, "succeeded") >= 1);
    let last: chrono::DateTime<chrono::Utc> = field(runs.last().unwrap(), "scheduled_for")
        .parse()
        .unwrap();
    // Take the row between a run's end and the next claim (250 ms before
    // the next slot), so no run of 'held' is in flight while it is held.
    let (held_from, held_until) = common::cluster::block_on(async {
        let mut slot = last;
        while chrono::Utc::now() > slot + chrono::TimeDelta::milliseconds(300) {
            slot += chrono::TimeDelta::seconds(1);
        }
        let start = slot + chrono::TimeDelta::milliseconds(300);
        tokio::time::sleep((start - chrono::Utc::now()).to_std().unwrap_or_default()).await;
        let config: tokio_postgres::Config = url.parse().unwrap();
        let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let holder = client.transaction().await.unwrap();
        holder
            .execute("SELECT id FROM tasks WHERE name = 'held' FOR UPDATE", &[])
            .await
            .unwrap();
        let from = chrono::Utc::now();
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let until = chrono::Utc::now();
        holder.rollback().await.unwrap();
        (from, until)
    });
    let after = held_until + chrono::TimeDelta::seconds(2);
    let slot_of =
        |r: &Value| -> chrono::DateTime<chrono::Utc> { field(r, "scheduled_for").parse().unwrap() };
    cluster.wait_runs("held", "'held' running again", |r| {
        r.iter()
            .any(|x| slot_of(x) > after && field(x, "state") == "succeeded")
    });
    let free = cluster.wait_runs("free", "'free' past the hold", |r| {
        r.iter().any(|x| slot_of(x) > after)
    });
    assert_eq!(serve.stop().0, Some(0));

    // 'free' ran every slot of the hold, on time.
    let during: Vec<&Value> = free
        .iter()
        .filter(|r| slot_of(r) > held_from && slot_of(r) < held_until)
        .collect();
    assert!(during.len() >= 2, "{:#?}", summary(&free));
    for r in &during {
        assert_eq!(field(r, "state"), "succeeded", "{:#?}", summary(&free));
        let started: chrono::DateTime<chrono::Utc> = field(r, "started_at").parse().unwrap();
        let late = started - slot_of(r);
        assert!(
            late < chrono::TimeDelta::milliseconds(500),
            "a slot of 'free' started {late} late while 'held' was held: {:#?}",
            summary(&free)
        );
    }
    // No slot of either ran twice.
    for name in ["held", "free"] {
        let runs = cluster.runs(name);
        let mut per_slot: BTreeMap<String, usize> = BTreeMap::new();
        for r in &runs {
            *per_slot
                .entry(field(r, "scheduled_for").to_owned())
                .or_default() += 1;
        }
        assert!(
            per_slot.values().all(|&n| n == 1),
            "{name}: {:#?}",
            summary(&runs)
        );
    }
}

/// A run is stopped from outside whichever instance runs it: the request
/// goes through the store, the instance running it stops it.
fn a_run_is_stopped_on_whichever_instance_runs_it(cluster: Cluster) {
    let a = cluster.serve("a");
    let b = cluster.serve("b");
    cluster.ok(&[
        "task",
        "add",
        "long",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1h",
        "-p",
        "action=sleep",
        "-p",
        "ms=600000",
    ]);
    cluster.ok(&["task", "run", "long", "--no-wait"]);
    let runs = cluster.wait_runs("long", "a running run", |r| count(r, "running") == 1);
    let running = runs
        .iter()
        .find(|r| field(r, "state") == "running")
        .unwrap();
    let (id, instance) = (field(running, "id"), field(running, "instance"));
    let asked = std::time::Instant::now();
    let out = cluster.ok(&["runs", "stop", id, "--json"]);
    let run: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(run["state"], "cancelled", "{out}");
    assert_eq!(run["instance"], instance, "{out}");
    assert!(field(&run, "message").starts_with("stopped by "), "{out}");
    // Within a pass (the poll interval, or the change notification on
    // PostgreSQL) and the harness's 2 s grace.
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(a.stop().0, Some(0));
    assert_eq!(b.stop().0, Some(0));
}

#[test]
fn on_postgres_a_run_is_stopped_on_whichever_instance_runs_it() {
    if let Some(cluster) = Cluster::new(Cluster::postgres(), &["misbehave.wasm"]) {
        a_run_is_stopped_on_whichever_instance_runs_it(cluster);
    }
}

#[test]
fn on_one_sqlite_file_a_run_is_stopped_on_whichever_instance_runs_it() {
    let cluster = Cluster::new(Some(Backend::Sqlite), &["misbehave.wasm"]).unwrap();
    a_run_is_stopped_on_whichever_instance_runs_it(cluster);
}

/// The most runs in `runs` going on at one instant (each from its start
/// to its end).
fn most_at_once(runs: &[Value]) -> usize {
    let time = |r: &Value, key: &str| -> Option<chrono::DateTime<chrono::Utc>> {
        r[key].as_str()?.parse().ok()
    };
    let spans: Vec<_> = runs
        .iter()
        .filter_map(|r| Some((time(r, "started_at")?, time(r, "finished_at")?)))
        .collect();
    spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// `queue` and `replace` with two instances: one record per slot, runs of
/// one configuration never side by side, a slot that waited runs, and a
/// run is replaced whichever instance runs it.
fn overlap_policies_hold_across_instances(cluster: Cluster) {
    let a = cluster.serve("a");
    let b = cluster.serve("b");
    for (name, ms, policy) in [
        ("queued", "2500", "queue"),
        ("replaced", "600000", "replace"),
    ] {
        let ms = format!("ms={ms}");
        cluster.ok(&[
            "task",
            "add",
            name,
            "--implementation",
            "Cronwerk.Test.Misbehave",
            "--every",
            "1s",
            "-p",
            "action=sleep",
            "-p",
            &ms,
            "--on-overlap",
            policy,
        ]);
    }
    let queued = cluster.wait_runs("queued", "two slots that waited, then ran", |r| {
        r.iter()
            .filter(|x| field(x, "state") == "succeeded")
            .filter(|x| {
                let started: chrono::DateTime<chrono::Utc> =
                    field(x, "started_at").parse().unwrap();
                let due: chrono::DateTime<chrono::Utc> = field(x, "scheduled_for").parse().unwrap();
                started - due > chrono::TimeDelta::milliseconds(1000)
            })
            .count()
            >= 2
    });
    let replaced = cluster.wait_runs("replaced", "two runs replaced", |r| {
        r.iter()
            .filter(|x| field(x, "message").starts_with("stopped by overlap policy replace"))
            .count()
            >= 2
    });
    cluster.ok(&["task", "disable", "queued"]);
    cluster.ok(&["task", "disable", "replaced"]);
    for runs in [&queued, &replaced] {
        assert_eq!(most_at_once(runs), 1, "{:#?}", summary(runs));
        let mut slots = std::collections::BTreeSet::new();
        for r in runs.iter() {
            assert!(
                slots.insert(field(r, "scheduled_for")),
                "{:#?}",
                summary(runs)
            );
        }
    }
    assert_eq!(a.stop().0, Some(0));
    assert_eq!(b.stop().0, Some(0));
}

#[test]
fn on_postgres_overlap_policies_hold_across_instances() {
    if let Some(cluster) = Cluster::new(Cluster::postgres(), &["misbehave.wasm"]) {
        overlap_policies_hold_across_instances(cluster);
    }
}

#[test]
fn on_one_sqlite_file_overlap_policies_hold_across_instances() {
    let cluster = Cluster::new(Some(Backend::Sqlite), &["misbehave.wasm"]).unwrap();
    overlap_policies_hold_across_instances(cluster);
}

/// A rolling deploy: only instance a's plugins folder has the component.
/// Every slot runs there and none fails on b; a manual run asked through
/// b goes to a; a component no live instance has fails once per slot,
/// naming the instances that lack it.
fn an_instance_without_a_component_leaves_its_runs_to_one_with_it(cluster: Cluster) {
    let a = cluster.serve_with_components("a", &["hello.wasm"]);
    let b = cluster.serve_with_components("b", &[]);
    // b learns what a serves from the plugin rows a reports once loaded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !cluster.ok(&["plugins"]).contains("Acme.HelloScheduledTask") {
        assert!(
            std::time::Instant::now() < deadline,
            "a never reported its plugins"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cluster.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    cluster.wait_runs("hello", "6 successful runs", |r| count(r, "succeeded") >= 6);
    cluster.ok(&["task", "disable", "hello"]);
    let out = cluster.ok(&["task", "run", "hello"]);
    assert!(out.contains("succeeded"), "{out}");
    // The fleet matrix shows the skew: a serves it, b does not.
    let matrix: Value =
        serde_json::from_str(&cluster.ok(&["plugins", "--instances", "--json"])).unwrap();
    assert_eq!(
        matrix["instances"],
        serde_json::json!(["a", "b"]),
        "{matrix}"
    );
    let hello = &matrix["identifiers"][0];
    assert_eq!(hello["identifier"], "Acme.HelloScheduledTask", "{matrix}");
    assert!(
        hello["served"][0]["version"].is_string() && hello["served"][1].is_null(),
        "{matrix}"
    );
    assert_eq!(hello["skew"], true, "{matrix}");
    let table = cluster.ok(&["plugins", "--instances"]);
    assert!(table.contains("skew"), "{table}");
    let runs = cluster.runs("hello");
    assert!(
        runs.iter()
            .all(|r| field(r, "state") == "succeeded" && field(r, "instance") == "a"),
        "{:#?}",
        summary(&runs)
    );

    // Nobody has it: one failure per slot, saying who lacks it.
    cluster.ok(&[
        "task",
        "add",
        "nowhere",
        "--implementation",
        "Acme.NotDeployed",
        "--every",
        "1s",
    ]);
    let failed = cluster.wait_runs("nowhere", "two failed runs", |r| count(r, "failed") >= 2);
    cluster.ok(&["task", "disable", "nowhere"]);
    let message = field(&failed[0], "message");
    assert!(
        message.contains("no live instance has a component implementing 'Acme.NotDeployed'")
            && message.contains("instances a, b lack it"),
        "{message}"
    );
    let mut slots: Vec<&str> = failed.iter().map(|r| field(r, "scheduled_for")).collect();
    let all = slots.len();
    slots.dedup();
    assert_eq!(
        slots.len(),
        all,
        "one record per slot: {:#?}",
        summary(&failed)
    );
    assert_eq!(a.stop().0, Some(0));
    assert_eq!(b.stop().0, Some(0));
}

#[test]
fn on_postgres_an_instance_without_a_component_leaves_its_runs_to_one_with_it() {
    if let Some(cluster) = Cluster::new(Cluster::postgres(), &[]) {
        an_instance_without_a_component_leaves_its_runs_to_one_with_it(cluster);
    }
}

#[test]
fn on_one_sqlite_file_an_instance_without_a_component_leaves_its_runs_to_one_with_it() {
    let cluster = Cluster::new(Some(Backend::Sqlite), &[]).unwrap();
    an_instance_without_a_component_leaves_its_runs_to_one_with_it(cluster);
}

/// `--on-start`: every instance runs the configuration once when it
/// starts (recorded with its name), also while it is disabled; a restart
/// runs it again, once.
fn each_instance_runs_an_on_start_configuration_once_when_it_starts(cluster: Cluster) {
    cluster.ok(&[
        "task",
        "add",
        "warm",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--at",
        "2099-01-01T00:00:00Z",
        "--disabled",
        "--on-start",
    ]);
    assert!(cluster.ok(&["task", "show", "warm"]).contains("on start"));
    let a = cluster.serve("a");
    let b = cluster.serve("b");
    let startup = |r: &Value| field(r, "trigger") == "startup" && field(r, "state") == "succeeded";
    let runs = cluster.wait_runs("warm", "one run on start per instance", |r| {
        r.iter().filter(|x| startup(x)).count() >= 2
    });
    let mut instances: Vec<&str> = runs
        .iter()
        .filter(|r| startup(r))
        .map(|r| field(r, "instance"))
        .collect();
    instances.sort();
    assert_eq!(instances, ["a", "b"], "{:#?}", summary(&runs));
    assert_eq!(a.stop().0, Some(0));
    let a = cluster.serve("a");
    let runs = cluster.wait_runs("warm", "a's second start", |r| {
        r.iter().filter(|x| startup(x)).count() >= 3
    });
    assert_eq!(
        runs.iter()
            .filter(|r| startup(r) && field(r, "instance") == "a")
            .count(),
        2,
        "{:#?}",
        summary(&runs)
    );
    assert_eq!(a.stop().0, Some(0));
    assert_eq!(b.stop().0, Some(0));
    assert_eq!(cluster.runs("warm").len(), 3, "nothing else ran");
}

#[test]
fn on_postgres_each_instance_runs_an_on_start_configuration_once_when_it_starts() {
    if let Some(cluster) = Cluster::new(Cluster::postgres(), &["hello.wasm"]) {
        each_instance_runs_an_on_start_configuration_once_when_it_starts(cluster);
    }
}

#[test]
fn on_one_sqlite_file_each_instance_runs_an_on_start_configuration_once_when_it_starts() {
    let cluster = Cluster::new(Some(Backend::Sqlite), &["hello.wasm"]).unwrap();
    each_instance_runs_an_on_start_configuration_once_when_it_starts(cluster);
}
