//! What a task wrote, as the CLI prints it from the store: `cronwerk runs`
//! and `cronwerk events` show terminal controls escaped, and `--json`
//! keeps the text as stored.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use cronwerk::model::{
    EventSource, Level, NewEvent, RunOutcome, RunState, Schedule, TaskConfig, Trigger,
};
use cronwerk::store::{Claim, Configurations, NewRun, RunFinish, RunLedger, SqliteStore};

const HOSTILE: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\rfake line\n\u{9b}31m";
const ESCAPED: &str = r"\u{1b}[2J\u{1b}]0;pwned\u{7}\rfake line\n\u{9b}31m";

/// A manual run `id` of configuration `task_id`, starting now.
fn manual_run(task_id: i64, task: &str, implementation: &str, id: &str) -> NewRun {
    let now = Utc::now();
    NewRun {
        id: id.into(),
        task_id,
        task_name: task.into(),
        implementation: implementation.into(),
        trigger: Trigger::Manual,
        attempt: 1,
        scheduled_for: None,
        started_at: now,
        lease_until: now + chrono::TimeDelta::seconds(30),
        instance: "i1".into(),
        message: String::new(),
        payload: None,
    }
}

/// A data directory whose store holds one finished run with hostile text
/// in its message and its event.
async fn store_with_hostile_run(dir: &std::path::Path) {
    let store = SqliteStore::open(dir).unwrap();
    let now = Utc::now();
    let config = TaskConfig::new(
        "t",
        "Acme.Hostile",
        Schedule::every(Duration::from_secs(3600), now).unwrap(),
    );
    let task = store.create_task(&config, None).await.unwrap();
    let run = manual_run(task.id, "t", "Acme.Hostile", "r1");
    assert_eq!(
        store.claim_manual(task.id, &run).await.unwrap(),
        Claim::Claimed
    );
    let outcome = RunOutcome {
        state: RunState::Failed,
        reason: None,
        message: HOSTILE.into(),
        duration_us: 1,
        fuel: 1,
        peak_memory_bytes: 1,
        component_sha256: None,
        component_version: None,
        events: vec![NewEvent {
            at: now,
            level: Level::Warning,
            source: EventSource::Task,
            code: "\u{1b}[K".into(),
            message: HOSTILE.into(),
            task_id: Some(task.id),
            run_id: Some("r1".into()),
        }],
    };
    let finish = RunFinish::of("r1", task.id, now, outcome, Some(BTreeMap::new()));
    assert!(store.finish_run(&finish).await.unwrap());
}

fn cronwerk(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CRONWERK_DATABASE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn assert_no_raw_controls(stdout: &str) {
    let raw: Vec<char> = stdout
        .chars()
        .filter(|&c| c != '\n' && c.is_control())
        .collect();
    assert!(raw.is_empty(), "raw controls {raw:?} in: {stdout}");
}

#[tokio::test]
async fn runs_and_events_print_a_tasks_terminal_controls_escaped() {
    let dir = tempfile::tempdir().unwrap();
    store_with_hostile_run(dir.path()).await;

    let runs = cronwerk(dir.path(), &["runs"]);
    assert_no_raw_controls(&runs);
    // The table cell is the message's first line, escaped.
    assert!(
        runs.contains(r"\u{1b}[2J\u{1b}]0;pwned\u{7}\rfake line…"),
        "{runs}"
    );

    let events = cronwerk(dir.path(), &["events"]);
    assert_no_raw_controls(&events);
    assert_eq!(events.lines().count(), 1, "{events}");
    assert!(
        events.contains(&format!(r"\u{{1b}}[K  {ESCAPED}")),
        "{events}"
    );

    let json = cronwerk(dir.path(), &["events", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["message"], HOSTILE);
}

#[test]
fn verbs_that_read_create_no_data_folder_and_say_where_they_looked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cronwerk-data");
    let verbs: [&[&str]; 11] = [
        &["runs"],
        &["events"],
        &["task", "list"],
        &["task", "show", "x"],
        &["plugins"],
        &["instances"],
        &["audit"],
        &["export"],
        &["config", "list"],
        &["farm", "list"],
        &["task", "run", "x"],
    ];
    for verb in verbs {
        let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
            .arg("--data-dir")
            .arg(&data)
            .args(verb)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{verb:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no cronwerk data in {}", data.display()))
                && stderr.contains("--data-dir"),
            "{verb:?}: {stderr}"
        );
        assert!(!data.exists(), "{verb:?} created {}", data.display());
    }
    // Adding a configuration is what makes a store.
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(&data)
        .args([
            "task",
            "add",
            "x",
            "--implementation",
            "Acme.X",
            "--every",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(data.join("cronwerk.db").is_file());
}

/// The CLI's exit code, stdout and stderr.
fn cronwerk_any(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("CRONWERK_DATABASE")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn runs_made_in_one_millisecond_are_shown_apart_and_any_start_of_an_id_names_one_run() {
    // Three runs; the first two were made in the same millisecond (their
    // ids share the 13 characters of its timestamp, and 5 more).
    let ids = [
        "019ae3c1-2f00-7a11-8b22-000000000001",
        "019ae3c1-2f00-7a11-9c33-000000000002",
        "019ae3c1-3000-7e66-8f77-000000000003",
    ];
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let config = TaskConfig::new(
            "t",
            "Acme.X",
            Schedule::every(Duration::from_secs(3600), now).unwrap(),
        );
        let task = store.create_task(&config, None).await.unwrap();
        for id in ids {
            let run = manual_run(task.id, "t", "Acme.X", id);
            assert_eq!(
                store.claim_manual(task.id, &run).await.unwrap(),
                Claim::Claimed
            );
            let mut outcome = RunOutcome::not_run(
                RunState::Failed,
                NewEvent::host(Level::Error, "RUN_FAILED", format!("event of {id}")),
            );
            outcome.events[0].task_id = Some(task.id);
            outcome.events[0].run_id = Some(id.into());
            let finish = RunFinish::of(id, task.id, now, outcome, None);
            assert!(store.finish_run(&finish).await.unwrap());
        }
    }
    let runs = cronwerk(dir.path(), &["runs"]);
    let shown: Vec<&str> = runs
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        shown,
        [
            "019ae3c1-3000",
            "019ae3c1-2f00-7a11-9c33",
            "019ae3c1-2f00-7a11-8b22"
        ],
        "{runs}"
    );
    // Each id as shown names its run alone.
    for (shown, id) in shown.iter().zip(ids.iter().rev()) {
        let events = cronwerk(dir.path(), &["events", "--run", shown]);
        assert_eq!(events.lines().count(), 1, "{shown}: {events}");
        assert!(events.contains(&format!("event of {id}")), "{events}");
    }
    // So does any start of an id only one run has, in either case.
    let events = cronwerk(dir.path(), &["events", "--run", "019AE3C1-30"]);
    assert!(events.contains("event of 019ae3c1-3000"), "{events}");
    // A start several runs share is refused, naming them; one no run has,
    // or something that is no id, says what was looked for.
    let (code, stdout, stderr) = cronwerk_any(dir.path(), &["events", "--run", "019ae3c1-2f00"]);
    assert_eq!(code, Some(64), "{stdout}{stderr}");
    assert!(
        stderr.contains("'019ae3c1-2f00' starts the ids of several runs")
            && stderr.contains(ids[0])
            && stderr.contains(ids[1]),
        "{stderr}"
    );
    let (code, _, stderr) = cronwerk_any(dir.path(), &["events", "--run", "0000"]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains("no run has an id starting with '0000'"),
        "{stderr}"
    );
    let (code, _, stderr) = cronwerk_any(dir.path(), &["runs", "stop", "nightly"]);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("'nightly' is not a run id"), "{stderr}");
    // `runs stop` takes a start of an id too: this run is over.
    let (code, _, stderr) = cronwerk_any(dir.path(), &["runs", "stop", "019ae3c1-2f00-7a11-9"]);
    assert_eq!(code, Some(64));
    assert!(
        stderr.contains(&format!("run {} is not running", ids[1])),
        "{stderr}"
    );
}
