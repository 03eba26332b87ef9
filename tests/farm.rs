//! The web farm as operators run it: several real `cronwerk serve`
//! processes on one store. A broadcast — from the CLI or from a task's
//! `farm.broadcast` — runs once on every live instance and each records its
//! own run; a later instance does not replay old broadcasts unless it asks
//! to catch up; a dead instance's delivery is recorded abandoned; a
//! configuration that requires a role runs only on instances that have it.
//! Waits are for records in the store, read through the CLI.

mod common;

use std::time::{Duration, Instant};

use common::serve_env::{Env, Serve};
use cronwerk::model::{RunState, Trigger};
use serde_json::Value;

fn json(env: &Env, args: &[&str]) -> Value {
    serde_json::from_str(&env.ok(args)).unwrap()
}

/// Polls `cronwerk farm show ID` until `done` holds.
fn wait_broadcast(env: &Env, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let b = json(env, &["farm", "show", id, "--json"]);
        if done(&b) {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {b:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// instance → (state, message) of each delivery.
fn deliveries(b: &Value) -> Vec<(String, String, String)> {
    b["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["instance"].as_str().unwrap().to_owned(),
                d["state"].as_str().unwrap().to_owned(),
                d["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `cronwerk instances`: each name, and whether it is live.
fn instances(env: &Env) -> Vec<(String, bool)> {
    json(env, &["instances", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["live"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn serve(env: &Env, name: &str, flags: &[&str]) -> Serve {
    let mut all = vec!["--listen", "none"];
    all.extend_from_slice(flags);
    env.serve_as(name, &all)
}

#[test]
fn a_broadcast_runs_once_on_every_live_instance_and_only_on_those() {
    let env = Env::new(&["hello.wasm", "misbehave.wasm"]);
    let a = serve(&env, "a", &["--role", "edit"]);
    let b = serve(&env, "b", &[]);
    assert_eq!(
        instances(&env),
        [("a".to_owned(), true), ("b".to_owned(), true)]
    );

    // From the CLI, with binary data; misbehave's `context` action (the
    // broadcast's target) describes what it got.
    let data = env.data.parent().unwrap().join("payload.bin");
    std::fs::write(&data, [7u8; 5]).unwrap();
    let made = json(
        &env,
        &[
            "farm",
            "broadcast",
            "Cronwerk.Test.Misbehave",
            "--target",
            "context",
            "--text",
            "flush /news",
            "--data-file",
            data.to_str().unwrap(),
            "--json",
        ],
    );
    let id = made["id"].as_str().unwrap();
    let got = deliveries(&made);
    assert_eq!(got.len(), 2, "{made:#}");
    for (instance, state, message) in &got {
        assert_eq!(state, "succeeded");
        assert_eq!(
            message,
            &format!(
                "name=broadcast {id} id=Cronwerk.Test.Misbehave trigger=broadcast attempt=1 runs=0 \
                 instance={instance} scheduled=false payload=context|flush /news|5"
            )
        );
    }
    // Each instance's run has its own id, which tags its events.
    let run_ids: Vec<&str> = made["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["run_id"].as_str().unwrap())
        .collect();
    assert_ne!(run_ids[0], run_ids[1]);

    // From a task: a scheduled run of misbehave broadcasts hello to all.
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(1)).to_rfc3339();
    env.ok(&[
        "task",
        "add",
        "announce",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--at",
        &at,
        "-p",
        "action=broadcast",
    ]);
    let runs = env.wait_runs("announce", "the announcing run", |r| {
        r.iter().any(|r| r.state == RunState::Succeeded)
    });
    let from_task = runs[0]
        .message
        .strip_prefix("broadcast ")
        .unwrap()
        .to_owned();
    let done = wait_broadcast(&env, &from_task, "hello on both", |b| {
        deliveries(b).iter().all(|d| d.1 == "succeeded")
    });
    assert_eq!(
        deliveries(&done)
            .iter()
            .map(|d| d.0.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(done["identifier"], "Acme.HelloScheduledTask");
    assert!(
        done["created_by"]
            .as_str()
            .unwrap()
            .starts_with(&format!("run {} of 'announce' on ", runs[0].id)),
        "{done:#}"
    );

    // A later instance does not replay them...
    let c = serve(&env, "c", &[]);
    let shown = json(&env, &["farm", "show", id, "--json"]);
    assert_eq!(deliveries(&shown).len(), 2);
    c.stop();
    // ... unless it asks to catch up, and then it runs each once.
    let c = serve(&env, "c", &["--catch-up-broadcasts", "10m"]);
    for broadcast in [id, from_task.as_str()] {
        let b = wait_broadcast(&env, broadcast, "c catching up", |b| {
            deliveries(b)
                .iter()
                .any(|d| d.0 == "c" && d.1 == "succeeded")
        });
        assert_eq!(deliveries(&b).len(), 3);
    }

    // A stopped instance leaves the list; one killed stays, gone, and its
    // delivery is recorded abandoned once its heartbeat is old.
    let (code, _) = c.stop();
    assert_eq!(code, Some(0));
    b.kill_9();
    let last_id = env
        .ok(&["farm", "broadcast", "Acme.HelloScheduledTask", "--no-wait"])
        .trim()
        .to_owned();
    let settled = wait_broadcast(&env, &last_id, "b's delivery abandoned", |b| {
        deliveries(b)
            .iter()
            .all(|d| d.1 != "queued" && d.1 != "running")
    });
    let got = deliveries(&settled);
    assert_eq!(got[0].0, "a");
    assert_eq!(got[0].1, "succeeded");
    assert_eq!(got[1].0, "b");
    assert_eq!(got[1].1, "abandoned");
    assert!(got[1].2.contains("stopped heartbeating"), "{}", got[1].2);
    assert_eq!(
        instances(&env),
        [("a".to_owned(), true), ("b".to_owned(), false)]
    );
    a.stop();
}

#[test]
fn a_configuration_that_requires_a_role_runs_only_where_it_is() {
    let env = Env::new(&["hello.wasm"]);
    let plain = serve(&env, "plain", &[]);
    // No live instance has the role yet: the operator is told.
    let added = env.cli(&[
        "task",
        "add",
        "edit only",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
        "--require-role",
        "edit",
    ]);
    assert_eq!(added.status.code(), Some(0));
    let note = String::from_utf8_lossy(&added.stderr);
    assert!(
        note.contains("no live instance has the role(s) edit"),
        "{note}"
    );
    let bad = env.cli(&["task", "edit", "edit only", "--require-role", "edit server"]);
    assert_eq!(bad.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--require-role"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let edit = serve(&env, "edit-1", &["--role", "edit"]);
    env.ok(&["task", "run", "edit only", "--no-wait"]);
    let runs = env.wait_runs("edit only", "three runs", |r| {
        r.iter().filter(|r| r.state == RunState::Succeeded).count() >= 3
            && r.iter()
                .any(|r| r.trigger == Trigger::Manual && r.state == RunState::Succeeded)
    });
    for r in &runs {
        assert_eq!(r.instance.as_deref(), Some("edit-1"), "{r:?}");
    }
    let shown = env.ok(&["task", "show", "edit only"]);
    assert!(
        shown.contains("runs on         instances with role edit"),
        "{shown}"
    );
    edit.stop();
    plain.stop();
}

#[test]
fn on_postgres_a_broadcast_reaches_every_instance_through_the_shared_database() {
    use common::cluster::Cluster;
    let Some(cluster) = Cluster::new(Cluster::postgres(), &["misbehave.wasm"]) else {
        return;
    };
    let a = cluster.serve("pg-a");
    let b = cluster.serve("pg-b");
    // Made by neither instance: each learns of its delivery from the
    // database's notification, not from its own process.
    let made: Value = serde_json::from_str(&cluster.ok(&[
        "farm",
        "broadcast",
        "Cronwerk.Test.Misbehave",
        "--target",
        "context",
        "--text",
        "pg",
        "--json",
    ]))
    .unwrap();
    let id = made["id"].as_str().unwrap();
    let got = deliveries(&made);
    assert_eq!(
        got.iter()
            .map(|d| (d.0.as_str(), d.1.as_str()))
            .collect::<Vec<_>>(),
        [("pg-a", "succeeded"), ("pg-b", "succeeded")],
        "{made:#}"
    );
    for (instance, _, message) in &got {
        assert!(
            message.ends_with(&format!(
                "instance={instance} scheduled=false payload=context|pg|0"
            )),
            "{message}"
        );
    }
    let listed: Value = serde_json::from_str(&cluster.ok(&["farm", "list", "--json"])).unwrap();
    assert_eq!(listed[0]["id"], id);
    a.stop();
    b.stop();
}

/// Every broadcast in the store, newest first.
fn stored_broadcasts(env: &Env) -> Vec<cronwerk::model::BroadcastRecord> {
    use cronwerk::store::Fleet;
    let store = env.store();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async { store.list_broadcasts(1000).await.unwrap() })
}

#[test]
fn a_run_broadcasts_within_its_allowance_and_its_broadcasts_run_with_its_limits_and_roles() {
    let env = Env::new(&["misbehave.wasm"]);
    let edit = serve(&env, "edit-1", &["--role", "edit"]);
    let plain = serve(&env, "plain", &[]);

    // A hostile run tries 50 broadcasts: the store holds the first 10, and
    // the run is told why the rest were refused.
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(1)).to_rfc3339();
    env.ok(&[
        "task",
        "add",
        "flood",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--at",
        &at,
        "--require-role",
        "edit",
        "-p",
        "action=broadcast-flood",
        "-p",
        "n=50",
        "-p",
        "bytes=10",
    ]);
    let runs = env.wait_runs("flood", "the flooding run", |r| {
        r.iter().any(|r| r.state == RunState::Succeeded)
    });
    assert!(
        runs[0]
            .message
            .starts_with("made 10 of 50 broadcasts; last refusal: ")
            && runs[0].message.contains("at most 10 broadcasts"),
        "{}",
        runs[0].message
    );
    let events = env.ok(&["events", "--run", &runs[0].id]);
    assert_eq!(events.matches("BROADCAST_REFUSED").count(), 40, "{events}");
    let stored = stored_broadcasts(&env);
    assert_eq!(stored.len(), 10);
    // Only the instance with the run's role was given them.
    for b in &stored {
        let to: Vec<&str> = b.deliveries.iter().map(|d| d.instance.as_str()).collect();
        assert_eq!(to, ["edit-1"], "{b:?}");
    }

    // Payload bytes count too: four of 1 MB fit in 4 MiB, a fifth does not.
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(1)).to_rfc3339();
    env.ok(&[
        "task",
        "add",
        "heavy",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--at",
        &at,
        "-p",
        "action=broadcast-flood",
        "-p",
        "n=50",
        "-p",
        "bytes=1000000",
    ]);
    let runs = env.wait_runs("heavy", "the heavy run", |r| {
        r.iter().any(|r| r.state == RunState::Succeeded)
    });
    assert!(
        runs[0]
            .message
            .starts_with("made 4 of 50 broadcasts; last refusal: "),
        "{}",
        runs[0].message
    );
    assert_eq!(stored_broadcasts(&env).len(), 14);

    // A configuration limited to 16 MiB broadcasts itself to allocate
    // without end: everywhere it runs it is stopped at the sender's limit,
    // not at the default 128 MiB.
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(1)).to_rfc3339();
    env.ok(&[
        "task",
        "add",
        "selfish",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--at",
        &at,
        "--memory",
        "16MiB",
        "-p",
        "action=broadcast-self",
    ]);
    let runs = env.wait_runs("selfish", "the selfish run", |r| {
        r.iter().any(|r| r.state == RunState::Succeeded)
    });
    let id = runs[0]
        .message
        .strip_prefix("broadcast ")
        .unwrap()
        .to_owned();
    let done = wait_broadcast(&env, &id, "both stopped", |b| {
        deliveries(b).iter().all(|d| d.1 == "stopped")
    });
    let got = done["deliveries"].as_array().unwrap();
    assert_eq!(got.len(), 2, "{done:#}");
    for d in got {
        assert_eq!(d["reason"], "memory", "{d:#}");
        let peak = d["peak_memory_bytes"].as_u64().unwrap();
        assert!(peak <= 16 * 1024 * 1024, "{d:#}");
    }
    edit.stop();
    plain.stop();
}
