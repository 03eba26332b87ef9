//! Every version of the task contract the host links, through real
//! components side by side: the committed, prebuilt 0.1.0 task
//! (`tests/fixtures/contract-0.1.0/echo.wasm`, built before 0.2.0 existed)
//! and the 0.2.0 examples. Each is told what its version can say: the
//! triggers 0.1.0 lacks arrive as the nearest one it has, and 0.2.0 gets
//! them as they are, with `attempt` and `deadline`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::serve_env::Env;
use common::{load, request, runtime};
use cronwerk::model::{BroadcastPayload, RunState, Trigger};
use cronwerk::runtime::{Contract, Outcome, RunReport};

fn echo_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/contract-0.1.0/echo.wasm")
}

fn succeeded(report: &RunReport) -> &str {
    match &report.outcome {
        Outcome::Succeeded { message } => message,
        other => panic!("expected success, got {other:?} ({:?})", report.events),
    }
}

fn event<'a>(report: &'a RunReport, code: &str) -> Option<&'a str> {
    report
        .events
        .iter()
        .find(|e| e.code == code)
        .map(|e| e.message.as_str())
}

fn follow_up_payload() -> BroadcastPayload {
    BroadcastPayload {
        target: "follow-up".into(),
        text: r#"{"configuration":"nightly","outcome":"failed"}"#.into(),
        data: Vec::new(),
    }
}

#[tokio::test]
async fn a_0_1_0_task_is_told_the_nearest_trigger_it_knows_and_a_0_2_0_task_the_real_one() {
    let old = runtime().load_file(&echo_path()).await.unwrap();
    let new = load("misbehave.wasm").await;
    assert_eq!(old.contract(), Contract::V0_1);
    assert_eq!(old.info().identifier, "Fixture.Contract010Echo");
    assert_eq!(new.contract(), Contract::V0_2);

    let cases = [
        (Trigger::Schedule, "schedule"),
        (Trigger::Manual, "manual"),
        (Trigger::Broadcast, "broadcast"),
        (Trigger::Retry, "retry"),
        (Trigger::FollowUp, "manual"),
        (Trigger::Backfill, "schedule"),
        (Trigger::Startup, "manual"),
    ];
    for (trigger, told_0_1) in cases {
        let mut req = request(&[]);
        req.context.trigger = trigger;
        req.context.attempt = 3;
        req.config = [("greeting".to_owned(), "hej".to_owned())].into();
        req.instance.name = "node-a".into();
        req.instance.roles = vec!["edit".into()];
        if trigger == Trigger::FollowUp {
            req.payload = Some(follow_up_payload());
        }
        let report = runtime().run(&old, req.clone()).await;
        assert_eq!(
            succeeded(&report),
            format!("run 1 as {told_0_1}"),
            "{trigger}"
        );
        // Every 0.1.0 import answers as before.
        assert_eq!(event(&report, "SETTING"), Some("hej"));
        assert_eq!(event(&report, "INSTANCE"), Some("node-a edit"));
        assert_eq!(event(&report, "CANCELLED"), Some("false"));
        assert_eq!(report.state.get("runs").map(String::as_str), Some("1"));
        if trigger == Trigger::FollowUp {
            assert_eq!(
                event(&report, "PAYLOAD"),
                Some(r#"follow-up: {"configuration":"nightly","outcome":"failed"}"#)
            );
        }

        req.context.properties = [("action".to_owned(), "context".to_owned())].into();
        let report = runtime().run(&new, req).await;
        let told = succeeded(&report);
        assert!(
            told.contains(&format!("trigger={trigger} attempt=3 ")),
            "{trigger}: {told}"
        );
    }
}

#[tokio::test]
async fn a_0_2_0_task_sees_its_deadline_and_a_0_1_0_task_fails_and_broadcasts_as_before() {
    let new = load("misbehave.wasm").await;
    let mut req = request(&[("action", "deadline")]);
    req.limits.timeout = Duration::from_secs(7);
    let report = runtime().run(&new, req).await;
    let told = succeeded(&report);
    let ms: u64 = told
        .strip_prefix("deadline in ")
        .and_then(|s| s.strip_suffix(" ms"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{told}"));
    assert!((6_000..=7_000).contains(&ms), "{told}");

    let old = runtime().load_file(&echo_path()).await.unwrap();
    let report = runtime().run(&old, request(&[("fail", "yes")])).await;
    assert!(
        matches!(&report.outcome, Outcome::Failed { message } if message == "asked to fail"),
        "{:?}",
        report.outcome
    );
    // No farm under the library: the import answers with its reason.
    let report = runtime()
        .run(&old, request(&[("broadcast", "everyone")]))
        .await;
    match &report.outcome {
        Outcome::Failed { message } => {
            assert!(message.contains("no farm is configured"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn inspect_and_exec_name_the_contract_of_each_component() {
    let cronwerk = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cronwerk"))
            .env("CRONWERK_CACHE_DIR", common::compile_cache_dir())
            .args(args)
            .output()
            .unwrap()
    };
    let echo = echo_path();
    let out = cronwerk(&["inspect", echo.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("contract     cronwerk:task@0.1.0"),
        "{stdout}"
    );
    assert!(stdout.contains("cronwerk:task/farm@0.1.0"), "{stdout}");

    let out = cronwerk(&[
        "exec",
        echo.to_str().unwrap(),
        "--trigger",
        "backfill",
        "--config",
        "greeting=hi",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["message"], "run 1 as schedule", "{v}");

    let misbehave = common::component_path("misbehave.wasm");
    let out = cronwerk(&[
        "exec",
        misbehave.to_str().unwrap(),
        "-p",
        "action=context",
        "--trigger",
        "retry",
        "--attempt",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("trigger=retry attempt=2 "), "{v}");
}

/// One `serve` with both versions in its plugins folder: runs on start,
/// follow-ups and backfills reach each task as its version says.
#[test]
fn one_serve_runs_0_1_0_and_0_2_0_tasks_side_by_side() {
    let env = Env::new(&["misbehave.wasm"]);
    std::fs::copy(echo_path(), env.plugins.join("echo.wasm")).unwrap();
    let add = |name: &str, implementation: &str, extra: &[&str]| {
        let mut args = vec!["task", "add", name, "--implementation", implementation];
        args.extend_from_slice(extra);
        env.ok(&args);
    };
    let old = "Fixture.Contract010Echo";
    let new = "Cronwerk.Test.Misbehave";
    let context = ["-p", "action=context"];
    let disabled_hourly = ["--every", "1h", "--disabled"];
    add(
        "old-start",
        old,
        &[&disabled_hourly[..], &["--on-start"]].concat(),
    );
    add(
        "new-start",
        new,
        &[&disabled_hourly[..], &context, &["--on-start"]].concat(),
    );
    add("old-tell", old, &disabled_hourly);
    add("new-tell", new, &[&disabled_hourly[..], &context].concat());
    add(
        "nightly",
        new,
        &[
            &disabled_hourly[..],
            &[
                "-p",
                "action=fail",
                "--on-failure",
                "old-tell",
                "--on-failure",
                "new-tell",
            ],
        ]
        .concat(),
    );
    let every_second = ["--cron", "* * * * * *", "--disabled"];
    add("old-fill", old, &every_second);
    add("new-fill", new, &[&every_second[..], &context].concat());

    let serve = env.serve();
    let done = |name: &str, n: usize| {
        env.wait_runs(name, name, |r| {
            r.iter().filter(|x| x.state == RunState::Succeeded).count() >= n
        })
    };
    let only = |name: &str| {
        let runs = done(name, 1);
        assert_eq!(runs.len(), 1, "{runs:#?}");
        runs.into_iter().next().unwrap()
    };

    // Run on start: recorded as `startup`, told `manual` under 0.1.0.
    let run = only("old-start");
    assert_eq!(run.trigger, Trigger::Startup);
    assert_eq!(run.message, "run 1 as manual");
    let run = only("new-start");
    assert!(
        run.message.contains("trigger=startup attempt=1 "),
        "{}",
        run.message
    );

    // A follow-up: the ended run is in both versions' payload.
    // `task run` waits for the run and says it failed (exit 1).
    let ran = env.cli(&["task", "run", "nightly"]);
    assert_eq!(ran.status.code(), Some(1), "{ran:?}");
    let run = only("old-tell");
    assert_eq!(run.trigger, Trigger::FollowUp);
    assert_eq!(run.message, "run 1 as manual");
    let events = env.ok(&["events", "--run", &run.id, "--json"]);
    assert!(
        events.contains(r#"follow-up: {\"configuration\":\"nightly\""#),
        "{events}"
    );
    let run = only("new-tell");
    assert!(
        run.message.contains("trigger=follow-up attempt=1 ")
            && run.message.contains("payload=follow-up|{"),
        "{}",
        run.message
    );

    // A backfill of two past slots: `schedule` under 0.1.0, `backfill` under 0.2.0.
    let now = chrono::Utc::now();
    let at = |s: i64| {
        let t = chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::seconds(1)).unwrap()
            - chrono::TimeDelta::seconds(s);
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let (from, to) = (at(7), at(5));
    for name in ["old-fill", "new-fill"] {
        let out = env.ok(&["task", "backfill", name, "--from", &from, "--to", &to]);
        assert!(out.contains("done; 2 succeeded"), "{out}");
    }
    for run in done("old-fill", 2) {
        assert_eq!(run.trigger, Trigger::Backfill);
        assert!(run.message.ends_with(" as schedule"), "{}", run.message);
    }
    for run in done("new-fill", 2) {
        assert!(run.message.contains("trigger=backfill "), "{}", run.message);
        assert!(run.message.contains("scheduled=true"), "{}", run.message);
    }
    serve.stop();
}
