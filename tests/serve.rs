//! `cronwerk serve` as an operator runs it: the real binary on a real data
//! directory and plugins folder, driven by the real CLI. Waits are for
//! named records in the store (a run in a given state), never fixed sleeps.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::serve_env::Env;
use cronwerk::model::{RunRecord, RunState};
use cronwerk::store::{EventFilter, EventJournal, StateAndSettings};

fn count(runs: &[RunRecord], state: RunState) -> usize {
    runs.iter().filter(|r| r.state == state).count()
}

/// A run that is running and has started: a slot claimed ahead is
/// `running` from its claim, with its start still to come.
fn started(run: &RunRecord) -> bool {
    let past = chrono::Utc::now() - chrono::TimeDelta::milliseconds(100);
    run.state == RunState::Running && run.started_at.is_some_and(|s| s < past)
}

fn sha256_of(path: &Path) -> String {
    cronwerk::runtime::sha256_hex(&std::fs::read(path).unwrap())
}

#[test]
fn hello_runs_on_schedule_and_the_history_shows_it() {
    let env = Env::new(&["hello.wasm"]);
    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    let serve = env.serve();
    let runs = env.wait_runs("hello", "3 successful runs", |r| {
        count(r, RunState::Succeeded) >= 3
    });
    let ok: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.state == RunState::Succeeded)
        .collect();
    for pair in ok.windows(2) {
        let gap = pair[1].scheduled_for.unwrap() - pair[0].scheduled_for.unwrap();
        assert_eq!(
            gap,
            chrono::TimeDelta::seconds(1),
            "slots are one interval apart"
        );
    }
    let hello_sha = sha256_of(&env.plugins.join("hello.wasm"));
    for r in &ok {
        assert_eq!(r.component_sha256.as_deref(), Some(hello_sha.as_str()));
        assert_eq!(r.component_version.as_deref(), Some("1.0.0"));
        assert_eq!(r.instance.as_deref(), Some("test-instance"));
        assert!(r.fuel.unwrap() > 0 && r.peak_memory_bytes.unwrap() > 0);
    }

    let list = env.ok(&["task", "list"]);
    assert!(
        list.contains("hello  Acme.HelloScheduledTask  yes      every 1s"),
        "{list}"
    );
    let events = env.ok(&[
        "events", "--task", "hello", "--level", "warning", "--limit", "1",
    ]);
    assert!(
        events.contains("NOTIFICATION  Hello from my scheduled task!"),
        "{events}"
    );
    let show = env.ok(&["task", "show", "hello"]);
    assert!(show.contains("next fire times:"), "{show}");
    let plugins = env.ok(&["plugins"]);
    assert!(
        plugins.contains("Acme.HelloScheduledTask  1.0.0"),
        "{plugins}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["runs", "--task", "hello", "--json"])).unwrap();
    assert!(json.as_array().unwrap().len() >= 3);
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn cli_changes_reach_a_running_serve() {
    let env = Env::new(&["hello.wasm", "misbehave.wasm"]);
    env.ok(&[
        "task",
        "add",
        "later",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1h",
    ]);
    let _serve = env.serve();
    // Edited to every second while serve runs: it starts running.
    env.ok(&["task", "edit", "later", "--every", "1s"]);
    env.wait_runs("later", "a run after the edit", |r| {
        count(r, RunState::Succeeded) >= 1
    });

    // A configuration added while serve runs, with state carried between runs.
    env.ok(&[
        "task",
        "add",
        "counter",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1s",
        "-p",
        "action=state",
    ]);
    let runs = env.wait_runs("counter", "3 runs", |r| count(r, RunState::Succeeded) >= 3);
    let messages: Vec<&str> = runs
        .iter()
        .filter(|r| r.state == RunState::Succeeded)
        .map(|r| r.message.as_str())
        .collect();
    assert_eq!(&messages[..3], &["count=1", "count=2", "count=3"]);

    // A manual run of a disabled configuration, through the CLI, waits for
    // and prints the outcome.
    env.ok(&["task", "disable", "counter"]);
    let out = env.ok(&["task", "run", "counter"]);
    assert!(out.contains("manual") && out.contains("succeeded"), "{out}");
}

#[test]
fn a_run_that_is_still_going_makes_the_next_slot_skip() {
    let env = Env::new(&["misbehave.wasm"]);
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
        "ms=2500",
    ]);
    let _serve = env.serve();
    let runs = env.wait_runs("slow", "a skipped slot and a finished run", |r| {
        count(r, RunState::Skipped) >= 1 && count(r, RunState::Succeeded) >= 1
    });
    let skipped = runs.iter().find(|r| r.state == RunState::Skipped).unwrap();
    assert!(
        skipped.message.contains("was still running"),
        "{}",
        skipped.message
    );
    let task = env.ok(&["task", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&task).unwrap();
    assert!(v[0]["skipped_count"].as_u64().unwrap() >= 1);
}

#[test]
fn a_configuration_without_a_component_fails_clearly_and_the_host_goes_on() {
    let env = Env::new(&["hello.wasm"]);
    env.ok(&[
        "task",
        "add",
        "ghost",
        "--implementation",
        "Acme.Nope",
        "--every",
        "1s",
    ]);
    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    let _serve = env.serve();
    let runs = env.wait_runs("ghost", "a failed run", |r| count(r, RunState::Failed) >= 1);
    assert!(
        runs[0]
            .message
            .starts_with("no component implements 'Acme.Nope'"),
        "{}",
        runs[0].message
    );
    env.wait_runs("hello", "hello still running", |r| {
        count(r, RunState::Succeeded) >= 1
    });
}

#[test]
fn kill_9_mid_run_leaves_an_abandoned_run_and_the_schedule_goes_on() {
    let env = Env::new(&["misbehave.wasm"]);
    env.ok(&[
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
    let serve = env.serve();
    let runs = env.wait_runs("long", "a running run", |r| r.iter().any(started));
    let victim = runs.iter().find(|r| started(r)).unwrap().id.clone();
    serve.kill_9();

    let serve = env.serve();
    let runs = env.wait_runs(
        "long",
        "the killed run abandoned and a new one running",
        |r| {
            r.iter()
                .any(|x| x.id == victim && x.state == RunState::Abandoned)
                && r.iter().any(|x| x.id != victim && started(x))
        },
    );
    let abandoned = runs.iter().find(|r| r.id == victim).unwrap();
    assert!(
        abandoned.message.contains("stopped renewing"),
        "{}",
        abandoned.message
    );

    // Graceful shutdown: the running task is cancelled, sees the flag, and
    // its run is recorded cancelled; nothing stays running.
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
    let runs = env.runs("long");
    assert_eq!(count(&runs, RunState::Running), 0, "{runs:#?}");
    let cancelled = runs
        .iter()
        .find(|r| r.state == RunState::Cancelled)
        .expect("a cancelled run");
    assert!(
        cancelled.message.starts_with("cancelled after"),
        "{}",
        cancelled.message
    );
}

#[test]
fn a_slot_claimed_ahead_by_an_instance_killed_before_its_instant_is_abandoned_never_run() {
    let env = Env::new(&["hello.wasm"]);
    env.ok(&[
        "task",
        "add",
        "tick",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "3s",
    ]);
    let serve = env.serve_as("test-instance", &["--look-ahead", "2s"]);
    // Slots are claimed 2 s ahead here; until the instant the run's record
    // says running, with its planned start still to come.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let victim = loop {
        let ahead = chrono::Utc::now() + chrono::TimeDelta::milliseconds(500);
        if let Some(run) = env
            .runs("tick")
            .into_iter()
            .find(|r| r.state == RunState::Running && r.started_at.is_some_and(|s| s > ahead))
        {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no slot was claimed ahead"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    serve.kill_9();

    // The next instance rescues it once its lease (1 s) lapses, and never
    // runs it: its slot has this one record, and the task logged nothing.
    let serve = env.serve();
    let runs = env.wait_runs(
        "tick",
        "the claimed run abandoned and a later slot run",
        |r| {
            r.iter()
                .any(|x| x.id == victim.id && x.state == RunState::Abandoned)
                && r.iter().any(|x| {
                    x.state == RunState::Succeeded && x.scheduled_for > victim.scheduled_for
                })
        },
    );
    let same_slot: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.scheduled_for == victim.scheduled_for)
        .collect();
    assert_eq!(same_slot.len(), 1, "{same_slot:#?}");
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
    let events = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(env.store().list_events(&EventFilter {
            run_id: Some(victim.id.clone()),
            ..Default::default()
        }))
        .unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.source != cronwerk::model::EventSource::Task),
        "the claimed run ran: {events:#?}"
    );
}

#[test]
fn serve_starts_with_what_is_compiled_and_a_big_guest_joins_when_compiled() {
    // A compile cache that holds hello but not the Python guest: hello is
    // ready at once, the Python guest compiles for seconds.
    let env = Env::new(&["hello.wasm", "report-digest.wasm"]);
    let cache = env.data.parent().unwrap().join("fresh-cache");
    let warmed = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("inspect")
        .arg(env.plugins.join("hello.wasm"))
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    assert!(warmed.status.success(), "{warmed:?}");
    let reports = env.data.parent().unwrap().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::write(reports.join("api.log"), "ERROR db down\n").unwrap();
    env.ok(&[
        "task",
        "add",
        "tick",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    env.ok(&[
        "task",
        "add",
        "digest",
        "--implementation",
        "Acme.ReportDigest",
        "--every",
        "1h",
        // Its wait for the compiler counts against this.
        "--timeout",
        "5m",
        &format!("--grant-dir={}:/reports:ro", reports.display()),
    ]);
    let serve = env.serve_as("test-instance", &["--cache-dir", cache.to_str().unwrap()]);
    // A run of the Python task, asked for while it compiles, waits for it
    // instead of failing for want of a component.
    env.ok(&["task", "run", "digest", "--no-wait"]);
    let ticks = env.wait_runs("tick", "a tick", |r| count(r, RunState::Succeeded) >= 1);
    // Compiling the Python guest takes seconds (minutes in a debug build):
    // longer than `wait_runs` waits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let digest = loop {
        let runs = env.runs("digest");
        if runs.iter().any(|x| x.finished_at.is_some()) {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the digest run did not end: {runs:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let ended = digest.iter().find(|x| x.finished_at.is_some()).unwrap();
    assert_eq!(ended.state, RunState::Succeeded, "{}", ended.message);
    // Hello ran before the Python guest had been compiled.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let events = rt
        .block_on(env.store().list_events(&EventFilter::default()))
        .unwrap();
    let python_loaded = events
        .iter()
        .find(|e| e.code == "PLUGIN_LOADED" && e.message.contains("report-digest"))
        .map(|e| e.at)
        .expect("the Python guest was loaded");
    let first_tick = ticks.iter().filter_map(|r| r.finished_at).min().unwrap();
    assert!(
        first_tick < python_loaded,
        "the first tick ended at {first_tick}, after the Python guest loaded at {python_loaded}"
    );
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_new_version_serves_the_next_run_while_a_running_one_finishes_on_the_old() {
    let env = Env::new(&["misbehave.wasm"]);
    let file = env.plugins.join("misbehave.wasm");
    let v1 = sha256_of(&file);
    env.ok(&[
        "task",
        "add",
        "tick",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1s",
        "-p",
        "action=ok",
    ]);
    env.ok(&[
        "task",
        "add",
        "long",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "24h",
        "-p",
        "action=sleep",
        "-p",
        "ms=3000",
    ]);
    let _serve = env.serve();
    env.wait_runs("tick", "a run on v1", |r| {
        r.iter()
            .any(|x| x.component_sha256.as_deref() == Some(v1.as_str()))
    });
    let long_id = env
        .ok(&["task", "run", "long", "--no-wait"])
        .trim()
        .to_owned();
    env.wait_runs("long", "the long run running", |r| {
        r.iter()
            .any(|x| x.id == long_id && x.state == RunState::Running)
    });

    // Write-then-rename, as a deployment would. A version no earlier run
    // of this test left in the shared compile cache: it compiles.
    let release = format!("v2 {:?}", std::time::SystemTime::now());
    let v2_bytes = common::with_custom_section(
        &std::fs::read(&file).unwrap(),
        "release",
        release.as_bytes(),
    );
    let v2 = cronwerk::runtime::sha256_hex(&v2_bytes);
    let tmp = env.plugins.join("misbehave.wasm.partial");
    std::fs::write(&tmp, &v2_bytes).unwrap();
    std::fs::rename(&tmp, &file).unwrap();

    env.wait_runs("tick", "a run on v2", |r| {
        r.iter()
            .any(|x| x.component_sha256.as_deref() == Some(v2.as_str()))
    });
    let runs = env.wait_runs("long", "the long run finished", |r| {
        r.iter()
            .any(|x| x.id == long_id && x.state == RunState::Succeeded)
    });
    let long = runs.iter().find(|r| r.id == long_id).unwrap();
    assert_eq!(
        long.component_sha256.as_deref(),
        Some(v1.as_str()),
        "finished on the old version"
    );

    // Removing the file: the next runs fail, saying so.
    std::fs::remove_file(&file).unwrap();
    // The newest run that ended (the next slot may be claimed already).
    let last_ended = |r: &[RunRecord]| -> Option<RunRecord> {
        r.iter()
            .rev()
            .find(|x| x.state != RunState::Running)
            .cloned()
    };
    let runs = env.wait_runs("tick", "a run failing for want of a component", |r| {
        last_ended(r).is_some_and(|x| x.state == RunState::Failed)
    });
    let failed = last_ended(&runs).unwrap();
    assert!(
        failed
            .message
            .starts_with("no component implements 'Cronwerk.Test.Misbehave'"),
        "{}",
        failed.message
    );
    let events = env.ok(&["events", "--level", "info", "--limit", "200"]);
    assert!(events.contains("PLUGIN_UPDATED"), "{events}");
    assert!(events.contains("PLUGIN_REMOVED"), "{events}");
    // The new version was said to compile, and how long it took, before
    // it served.
    let at = |code: &str| {
        events
            .find(code)
            .unwrap_or_else(|| panic!("no {code} in {events}"))
    };
    assert!(
        at("PLUGIN_COMPILING") < at("PLUGIN_COMPILED")
            && at("PLUGIN_COMPILED") < at("PLUGIN_UPDATED"),
        "{events}"
    );
    assert!(events.contains("misbehave.wasm: compiled in "), "{events}");
}

#[test]
fn a_cache_folder_owned_by_another_user_stops_serve_before_it_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    // 65534 is `nobody`: the folder is private, but not this user's.
    std::os::unix::fs::chown(&cache, Some(65534), None).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .arg("serve")
        .arg("--plugins")
        .arg(tmp.path().join("plugins"))
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--listen")
        .arg("none")
        .env_remove("CRONWERK_CACHE_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = output_within(child, std::time::Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains(&cache.display().to_string()), "{stderr}");
    assert!(stderr.contains("belongs to user 65534"), "{stderr}");
    assert!(stderr.contains("--cache-dir"), "{stderr}");
    assert!(
        !tmp.path().join("data").exists(),
        "serve went on to open the store"
    );
}

/// What `child` printed, once it ends or `limit` passes (then it is killed:
/// a serve that starts where it should refuse would run forever).
fn output_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> std::process::Output {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `cronwerk ARGS` on `env`'s data directory with `input` on standard input.
fn cli_with_stdin(env: &Env, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(&env.data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Secrets set from standard input and from a file: `config list` never
/// shows them, the command line cannot carry one nor replace one, and a
/// run that logs and returns its secret is stored with `***` instead.
#[test]
fn a_secret_setting_is_never_shown_and_is_redacted_from_its_runs() {
    const ID: &str = "Cronwerk.Test.ConfigEcho";
    const FROM_STDIN: &str = "stdin-s3cret-0042";
    const FROM_FILE: &str = "file-s3cret-0043";
    let env = Env::new(&[]);
    let wat = include_str!("wat/config_echo.wat");
    std::fs::write(
        env.plugins.join("config-echo.wasm"),
        wat::parse_str(wat).unwrap(),
    )
    .unwrap();

    let set = cli_with_stdin(
        &env,
        &["config", "set", "--secret", ID, "token"],
        &format!("{FROM_STDIN}\n"),
    );
    assert_eq!(set.status.code(), Some(0), "{}", text(&set.stderr));
    assert_eq!(
        text(&set.stdout).trim(),
        format!("{ID}: token set (secret)")
    );
    let file = env.data.parent().unwrap().join("password.txt");
    std::fs::write(&file, format!("{FROM_FILE}\n")).unwrap();
    let path = file.to_str().unwrap();
    env.ok(&[
        "config",
        "set",
        "--secret",
        ID,
        "password",
        "--value-file",
        path,
    ]);
    env.ok(&["config", "set", ID, "team", "Platform"]);

    // The store has the values (one trailing newline dropped); no listing
    // shows them.
    let stored = common::cluster::block_on(env.store().list_settings()).unwrap();
    assert_eq!(stored[ID]["token"].value, FROM_STDIN);
    assert_eq!(stored[ID]["password"].value, FROM_FILE);
    assert!(stored[ID]["token"].secret && !stored[ID]["team"].secret);
    let table = env.ok(&["config", "list"]);
    assert_eq!(table.matches("(secret)").count(), 2, "{table}");
    assert!(table.contains("Platform"), "{table}");
    let json = env.ok(&["config", "list", ID, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        listed,
        serde_json::json!({ ID: {
            "password": { "secret": true },
            "team": "Platform",
            "token": { "secret": true },
        }})
    );
    for shown in [&table, &json] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    // Never on the command line, and a plain value does not replace a
    // secret; neither changes what is stored.
    let on_the_line = env.cli(&["config", "set", "--secret", ID, "token", "typed-s3cret"]);
    assert_eq!(on_the_line.status.code(), Some(64));
    let why = text(&on_the_line.stderr);
    assert!(
        why.contains("`ps`") && why.contains("shell history"),
        "{why}"
    );
    let plain = env.cli(&["config", "set", ID, "token", "plain-value"]);
    assert_eq!(plain.status.code(), Some(64));
    let why = text(&plain.stderr);
    assert!(
        why.contains("--secret") && why.contains("config unset"),
        "{why}"
    );
    let empty = cli_with_stdin(&env, &["config", "set", "--secret", ID, "token"], "\n");
    assert_eq!(empty.status.code(), Some(64), "{}", text(&empty.stderr));
    let stored = common::cluster::block_on(env.store().list_settings()).unwrap();
    assert_eq!(stored[ID]["token"].value, FROM_STDIN);

    // The task reads the real value; what it logs and returns is stored
    // with the value masked.
    let _serve = env.serve();
    env.ok(&[
        "task",
        "add",
        "echo",
        "--implementation",
        ID,
        "--every",
        "1h",
    ]);
    let out = env.ok(&["task", "run", "echo"]);
    assert!(!out.contains(FROM_STDIN), "{out}");
    let runs = env.wait_runs("echo", "the manual run", |r| {
        r.iter().any(|r| r.finished_at.is_some())
    });
    assert_eq!(runs[0].state, RunState::Succeeded, "{runs:#?}");
    assert_eq!(runs[0].message, "token is ***");
    let events = common::cluster::block_on(env.store().list_events(&EventFilter {
        run_id: Some(runs[0].id.clone()),
        ..Default::default()
    }))
    .unwrap();
    let logged: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.code.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(logged, [("CONFIG", "token is ***")]);
    let shown = env.ok(&["events", "--task", "echo"]);
    assert!(
        shown.contains("token is ***") && !shown.contains(FROM_STDIN),
        "{shown}"
    );
}

/// The `compile-worker` processes whose parent is `pid` and that are still
/// alive (a reaped or dying one has no command line any more).
fn compile_workers_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if ppid == Some(pid) && String::from_utf8_lossy(&cmdline).contains("compile-worker") {
            found.push(child);
        }
    }
    found
}

#[test]
fn serve_compiles_in_a_child_that_reports_bad_code_and_is_killed_past_the_time_limit() {
    // hello.wasm cut short: its header is a component's, its body does not
    // compile. The Python guest takes 10 s or more to compile: more than
    // the 3 s allowed here, which hello needs a tenth of.
    let env = Env::new(&["hello.wasm", "report-digest.wasm"]);
    let hello = std::fs::read(env.plugins.join("hello.wasm")).unwrap();
    std::fs::write(env.plugins.join("cut.wasm"), &hello[..hello.len() / 2]).unwrap();
    let cache = env.data.parent().unwrap().join("fresh-cache");
    env.ok(&[
        "task",
        "add",
        "tick",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    let serve = env.serve_as(
        "test-instance",
        &[
            "--cache-dir",
            cache.to_str().unwrap(),
            "--compile-timeout",
            "3s",
        ],
    );
    let pid = serve.child.id();
    let mut said = Vec::new();
    let mut saw_worker = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !(said.iter().any(|l: &String| l.contains("cut.wasm"))
        && said.iter().any(|l| l.contains("report-digest.wasm")))
    {
        saw_worker |= !compile_workers_of(pid).is_empty();
        match serve
            .lines
            .recv_timeout(std::time::Duration::from_millis(50))
        {
            Ok(line) => said.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => assert!(
                std::time::Instant::now() < deadline,
                "no load error for both files: {said:#?}"
            ),
            Err(e) => panic!("serve ended ({e}): {said:#?}"),
        }
    }
    assert!(saw_worker, "no compilation happened in a child process");
    let cut = said.iter().find(|l| l.contains("cut.wasm")).unwrap();
    assert!(
        !cut.contains("child") && !cut.contains("compile-worker"),
        "the compiler's own error, not the worker's: {cut}"
    );
    let digest = said
        .iter()
        .find(|l| l.contains("report-digest.wasm"))
        .unwrap();
    assert!(
        digest.contains("took longer than 3s to compile"),
        "{digest}"
    );
    // The compilation given up on does not go on burning a core.
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !compile_workers_of(pid).is_empty() {
        assert!(
            std::time::Instant::now() < gone_by,
            "a compile worker outlived its time limit: {:?}",
            compile_workers_of(pid)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // hello, compiled in a child too, serves.
    env.wait_runs("tick", "a tick", |r| count(r, RunState::Succeeded) >= 1);
    let cached = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
        .count();
    assert_eq!(cached, 1, "hello's code, and only hello's, is in the cache");
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn an_operator_stops_a_run_with_the_cli_and_it_is_recorded_cancelled_with_who_asked() {
    let env = Env::new(&["misbehave.wasm"]);
    env.ok(&[
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
    // Its grace period is 2 s (the test harness's `--grace`).
    let serve = env.serve();
    env.ok(&["task", "run", "long", "--no-wait"]);
    let runs = env.wait_runs("long", "a running run", |r| r.iter().any(started));
    let victim = runs.iter().find(|r| started(r)).unwrap().id.clone();

    // By the start of its id, as `cronwerk runs` shows it.
    let asked = std::time::Instant::now();
    let out = env.cli(&["runs", "stop", &victim[..13]]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cancelled"), "{stdout}");
    // The instance's next pass (250 ms) and the grace period (2 s).
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        asked.elapsed()
    );
    let run = env
        .runs("long")
        .into_iter()
        .find(|r| r.id == victim)
        .unwrap();
    assert_eq!(run.state, RunState::Cancelled, "{}", run.message);
    assert!(
        run.message.starts_with("stopped by ") && run.message.contains("with the CLI"),
        "{}",
        run.message
    );
    let events = env.ok(&["events", "--task", "long", "--level", "warning"]);
    assert!(events.contains("RUN_STOPPED"), "{events}");

    // Nothing left to stop: said so, with a usage exit code.
    let again = env.cli(&["runs", "stop", &victim]);
    assert_eq!(again.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not running: it is cancelled"),
        "{again:?}"
    );
    let none = env.cli(&["task", "stop", "long"]);
    assert_eq!(none.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("has no run going on"),
        "{none:?}"
    );
    let unknown = env.cli(&["runs", "stop", "no-such-run"]);
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("'no-such-run' is not a run id"),
        "{unknown:?}"
    );
    let unknown = env.cli(&["runs", "stop", "0000abcd"]);
    assert_eq!(unknown.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("no run has an id starting with '0000abcd'"),
        "{unknown:?}"
    );

    // A task that ignores the flag is stopped hard after the grace period.
    env.ok(&[
        "task",
        "add",
        "stubborn",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1h",
        "-p",
        "action=sleep-ignoring-cancel",
        "-p",
        "ms=600000",
    ]);
    env.ok(&["task", "run", "stubborn", "--no-wait"]);
    env.wait_runs("stubborn", "a running run", |r| r.iter().any(started));
    let asked = std::time::Instant::now();
    let out = env.ok(&["task", "stop", "stubborn"]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(
        asked.elapsed() >= std::time::Duration::from_secs(2),
        "stopped before its grace period ended: {:?}",
        asked.elapsed()
    );
    let stubborn = env.runs("stubborn");
    assert!(
        stubborn[0]
            .message
            .contains("did not stop within the grace period"),
        "{}",
        stubborn[0].message
    );

    // `task stop` by name, without waiting; the schedule goes on.
    env.ok(&["task", "run", "long", "--no-wait"]);
    env.wait_runs("long", "another running run", |r| {
        r.iter().any(|x| x.id != victim && started(x))
    });
    let out = env.ok(&["task", "stop", "long", "--no-wait"]);
    assert!(out.contains("stop asked for"), "{out}");
    env.wait_runs("long", "both stopped", |r| {
        count(r, RunState::Cancelled) == 2 && count(r, RunState::Running) == 0
    });
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_configurations_own_history_limits_keep_its_newest_failure_apart_from_successes() {
    let env = Env::new(&["misbehave.wasm"]);
    env.ok(&[
        "task",
        "add",
        "flaky",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1s",
        "-p",
        "action=fail",
        "--keep-runs",
        "2",
        "--keep-failed",
        "1",
    ]);
    let show = env.ok(&["task", "show", "flaky"]);
    assert!(
        show.contains("history kept    2 finished runs, 1 failed (apart)"),
        "{show}"
    );
    let serve = env.serve();
    let failed_runs = |r: &[RunRecord]| count(r, RunState::Failed);
    // Failures run on; retention keeps the newest one.
    env.wait_runs("flaky", "four failed runs, then one kept", |_| {
        env.store_task("flaky").failed_count >= 4
    });
    env.wait_runs("flaky", "one failed run kept", |r| failed_runs(r) == 1);
    let last_failure = env.store_task("flaky").last_run_at;
    // Then it succeeds: two successes are kept, and the last failure stays.
    env.ok(&["task", "edit", "flaky", "-p", "action=ok"]);
    let runs = env.wait_runs("flaky", "two successes and one failure kept", |r| {
        env.store_task("flaky").run_count >= 8
            && count(r, RunState::Succeeded) == 2
            && failed_runs(r) == 1
    });
    let kept_failure = runs.iter().find(|r| r.state == RunState::Failed).unwrap();
    // The newest failure (the one seen last, or one after it): never an
    // older one kept in its place.
    assert!(
        kept_failure.started_at >= last_failure,
        "the kept failure is the newest one ({last_failure:?}): {kept_failure:#?}"
    );
    // Back to the instance's --keep-runs.
    env.ok(&["task", "edit", "flaky", "--default-history"]);
    let show = env.ok(&["task", "show", "flaky"]);
    assert!(!show.contains("history kept"), "{show}");
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

/// The most of `runs` that were going on at one instant (each from its
/// start to its end).
fn most_at_once(runs: &[RunRecord]) -> usize {
    let spans: Vec<_> = runs
        .iter()
        .filter_map(|r| Some((r.started_at?, r.finished_at?)))
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

#[test]
fn overlap_policies_queue_allow_and_replace_through_the_real_binary() {
    let env = Env::new(&["misbehave.wasm"]);
    let sleeper = |name: &str, ms: &str, policy: &[&str]| {
        let mut args = vec![
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
        ];
        let ms = format!("ms={ms}");
        args.push(&ms);
        args.extend_from_slice(policy);
        env.ok(&args);
    };
    sleeper("queued", "2500", &["--on-overlap", "queue"]);
    sleeper(
        "allowed",
        "2500",
        &["--on-overlap", "allow", "--max-concurrent", "2"],
    );
    sleeper("replaced", "600000", &["--on-overlap", "replace"]);
    // Wrong combinations are refused, naming the flag, and change nothing.
    let wrong = env.cli(&["task", "edit", "queued", "--max-concurrent", "3"]);
    assert_ne!(wrong.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("--max-concurrent") && stderr.contains("allow"),
        "{stderr}"
    );
    let unknown = env.cli(&["task", "edit", "queued", "--on-overlap", "buffer"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("skip, allow, replace or queue"), "{stderr}");
    let shown = env.ok(&["task", "show", "allowed"]);
    assert!(shown.contains("allow (up to 2 runs at once"), "{shown}");

    let serve = env.serve();
    // queue: a slot waits for the run going on, later ones are skipped,
    // and runs never overlap.
    let queued = env.wait_runs("queued", "a slot that waited, then ran", |r| {
        r.iter().any(|x| {
            x.state == RunState::Succeeded
                && x.started_at
                    .zip(x.scheduled_for)
                    .is_some_and(|(s, due)| s - due > chrono::TimeDelta::milliseconds(1000))
        }) && r.iter().any(|x| x.message.contains("already waits"))
    });
    assert_eq!(most_at_once(&queued), 1, "{queued:#?}");

    // allow 2: two at once, never three; a slot beyond the limit is skipped.
    let allowed = env.wait_runs("allowed", "runs side by side and a skip", |r| {
        most_at_once(r) == 2
            && r.iter()
                .any(|x| x.message.contains("2 runs were still running"))
    });
    assert!(most_at_once(&allowed) <= 2, "{allowed:#?}");
    // `task stop` stops every run of it going on.
    env.wait_runs("allowed", "two running", |r| {
        r.iter().filter(|x| started(x)).count() == 2
    });
    env.ok(&["task", "disable", "allowed"]);
    let out = env.ok(&["task", "stop", "allowed"]);
    assert_eq!(out.matches(": cancelled (").count(), 2, "{out}");

    // replace: the run going on is stopped, and the slot runs after it.
    let replaced = env.wait_runs("replaced", "a run replaced by the next slot's", |r| {
        r.iter().any(|x| {
            x.state == RunState::Cancelled
                && x.message.starts_with("stopped by overlap policy replace")
        }) && r.iter().filter(|x| x.started_at.is_some()).count() >= 2
    });
    assert_eq!(most_at_once(&replaced), 1, "{replaced:#?}");
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_jittered_configuration_runs_on_its_shifted_slots_and_a_window_ends_its_schedule() {
    let env = Env::new(&["hello.wasm"]);
    let add = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "task",
            "add",
            name,
            "--implementation",
            "Acme.HelloScheduledTask",
        ];
        args.extend_from_slice(extra);
        env.cli(&args)
    };
    assert!(
        add("spread", &["--every", "2s", "--jitter", "1500ms"])
            .status
            .success()
    );
    let until = (chrono::Utc::now() + chrono::TimeDelta::seconds(4))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert!(
        add("window", &["--every", "1s", "--until", &until])
            .status
            .success()
    );
    // A jitter that does not fit between two runs is refused, naming the flag.
    let wrong = add("wrong", &["--every", "2s", "--jitter", "5s"]);
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        !wrong.status.success() && stderr.contains("--jitter") && stderr.contains("shortest gap"),
        "{stderr}"
    );
    let task = env.store_task("spread");
    let offset = task.config.fire_times().offset();
    let shown = env.ok(&["task", "show", "spread"]);
    assert!(shown.contains("jitter          1s 500ms"), "{shown}");

    let serve = env.serve();
    let runs = env.wait_runs("spread", "three runs", |r| {
        r.iter().filter(|x| x.state == RunState::Succeeded).count() >= 3
    });
    let slots: Vec<_> = runs.iter().filter_map(|r| r.scheduled_for).collect();
    for slot in &slots {
        // Every slot is a whole second of the schedule, shifted by the offset.
        assert_eq!(
            (*slot - offset).timestamp_subsec_millis(),
            0,
            "{slot} {offset}"
        );
    }
    for pair in slots.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::TimeDelta::seconds(2));
    }

    // The window's end ends the schedule: no slot at or after it.
    let until: chrono::DateTime<chrono::Utc> = until.parse().unwrap();
    let window = env.wait_runs("window", "the schedule to end with its window", |r| {
        !r.is_empty() && env.store_task("window").next_run_at.is_none()
    });
    assert!(
        window
            .iter()
            .all(|r| r.scheduled_for.is_some_and(|s| s < until)),
        "{window:#?}"
    );
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_failed_run_runs_its_follow_up_told_about_it_and_cycles_are_refused() {
    let env = Env::new(&["misbehave.wasm"]);
    let misbehave = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "task",
            "add",
            name,
            "--implementation",
            "Cronwerk.Test.Misbehave",
        ];
        args.extend_from_slice(extra);
        env.cli(&args)
    };
    assert!(
        misbehave(
            "tell",
            &["--every", "1h", "-p", "action=context", "--disabled"]
        )
        .status
        .success()
    );
    // An unknown follow-up is refused, naming the flag and the name.
    let unknown = misbehave("nightly", &["--every", "1h", "--on-failure", "tel"]);
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        !unknown.status.success() && stderr.contains("--on-failure") && stderr.contains("'tel'"),
        "{stderr}"
    );
    let added = misbehave(
        "nightly",
        &[
            "--every",
            "1s",
            "-p",
            "action=fail",
            "-p",
            "text=disk full",
            "--on-failure",
            "tell",
        ],
    );
    assert!(added.status.success(), "{added:?}");
    // A cycle is refused, and so is deleting a configuration that is named.
    let cycle = env.cli(&["task", "edit", "tell", "--on-success", "nightly"]);
    let stderr = String::from_utf8_lossy(&cycle.stderr);
    assert!(stderr.contains("tell → nightly → tell"), "{stderr}");
    let rm = env.cli(&["task", "rm", "tell"]);
    assert_eq!(rm.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("'nightly'"),
        "{rm:?}"
    );
    let shown = env.ok(&["task", "show", "nightly"]);
    assert!(shown.contains("on failure      runs 'tell'"), "{shown}");

    let serve = env.serve();
    let told = env.wait_runs("tell", "a follow-up that ran", |r| {
        r.iter().any(|x| x.state == RunState::Succeeded)
    });
    env.ok(&["task", "disable", "nightly"]);
    let run = told
        .iter()
        .find(|x| x.state == RunState::Succeeded)
        .unwrap();
    assert_eq!(run.trigger.as_str(), "follow-up");
    // Contract 0.2.0: the task is told `follow-up`, with the ended run in
    // its payload (tests/contract_versions.rs: a 0.1.0 task is told `manual`).
    assert!(run.message.contains("trigger=follow-up"), "{}", run.message);
    assert!(
        run.message.contains("payload=follow-up|{"),
        "{}",
        run.message
    );
    // Told which run failed: one of nightly's failed runs.
    let failed = env.runs("nightly");
    assert!(
        failed.iter().any(|r| r.state == RunState::Failed
            && run.message.contains(&format!("\"run_id\":\"{}\"", r.id))),
        "{}",
        run.message
    );
    assert!(
        run.message.contains("\"message\":\"disk full\""),
        "{}",
        run.message
    );
    let listed = env.ok(&["runs", "--task", "tell"]);
    assert!(listed.contains("follow-up"), "{listed}");
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_backfill_runs_past_slots_once_follows_its_progress_and_ctrl_c_cancels_it() {
    let env = Env::new(&["hello.wasm", "misbehave.wasm"]);
    // Every second, disabled: only the backfill runs it.
    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--cron",
        "* * * * * *",
        "--disabled",
    ]);
    let now = chrono::Utc::now();
    let at = |s: i64| {
        let t = chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::seconds(1)).unwrap()
            - chrono::TimeDelta::seconds(s);
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    // Bad windows are refused, naming the flag, and nothing is recorded.
    let future = env.cli(&[
        "task",
        "backfill",
        "hello",
        "--from",
        &at(10),
        "--to",
        &at(-60),
    ]);
    let stderr = String::from_utf8_lossy(&future.stderr);
    assert!(
        stderr.contains("--to") && stderr.contains("in the future"),
        "{stderr}"
    );
    assert_eq!(future.status.code(), Some(64));

    let serve = env.serve();
    let (from, to) = (at(10), at(5));
    let out = env.cli(&[
        "task",
        "backfill",
        "hello",
        "--from",
        &from,
        "--to",
        &to,
        "--concurrency",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("5 slot(s)") && stdout.contains("done; 5 succeeded"),
        "{stdout}"
    );
    // Piped, no progress bar is drawn.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let runs = env.runs("hello");
    let mut slots: Vec<_> = runs
        .iter()
        .map(|r| {
            assert_eq!(
                (r.trigger.as_str(), r.state),
                ("backfill", RunState::Succeeded)
            );
            r.scheduled_for.unwrap()
        })
        .collect();
    slots.sort();
    let first: chrono::DateTime<chrono::Utc> = from.parse().unwrap();
    let expected: Vec<_> = (0..5)
        .map(|i| first + chrono::TimeDelta::seconds(i))
        .collect();
    assert_eq!(slots, expected);
    // Asked again: every slot had run, none runs twice.
    let again = env.ok(&["task", "backfill", "hello", "--from", &from, "--to", &to]);
    assert!(again.contains("5 had run already"), "{again}");
    assert_eq!(env.runs("hello").len(), 5);
    let listed = env.ok(&["task", "backfill", "hello", "--list"]);
    assert_eq!(listed.matches("done").count(), 2, "{listed}");

    // A long one, followed from a terminal-less process: Ctrl-C cancels it.
    env.ok(&[
        "task",
        "add",
        "slow",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--cron",
        "* * * * * *",
        "--disabled",
        "-p",
        "action=sleep",
        "-p",
        "ms=600000",
    ]);
    let follow = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(&env.data)
        .args(["task", "backfill", "slow", "--from", &from, "--to", &to])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_runs("slow", "the first slot running", |r| r.iter().any(started));
    let signalled = Command::new("kill")
        .args(["-INT", &follow.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let out = follow.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cancelled") && stdout.contains("1 running"),
        "{stdout}"
    );
    let slow = env.runs("slow");
    assert_eq!(count(&slow, RunState::Running), 1, "{slow:#?}");
    assert_eq!(
        slow.len(),
        1,
        "slots after the cancel were not queued: {slow:#?}"
    );
    env.ok(&["task", "stop", "slow"]);
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn the_cli_audits_configurations_settings_and_plugin_swaps_and_keeps_a_pause_note() {
    let env = Env::new(&["hello.wasm"]);
    env.ok(&[
        "task",
        "add",
        "nightly",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1h",
    ]);
    env.ok(&["task", "edit", "nightly", "--retries", "2"]);
    env.ok(&[
        "task",
        "disable",
        "nightly",
        "--note",
        "waiting for the vendor's fix",
    ]);
    let listed = env.ok(&["task", "list"]);
    assert!(
        listed.contains("no: waiting for the vendor's fix"),
        "{listed}"
    );
    let shown = env.ok(&["task", "show", "nightly"]);
    assert!(
        shown.contains("paused          by ") && shown.contains(": waiting for the vendor's fix"),
        "{shown}"
    );
    env.ok(&["task", "enable", "nightly"]);
    assert!(!env.ok(&["task", "show", "nightly"]).contains("paused"));
    // A secret's value never reaches the trail.
    let mut set = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("--data-dir")
        .arg(&env.data)
        .args([
            "config",
            "set",
            "--secret",
            "Acme.HelloScheduledTask",
            "api-key",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(b"hunter2-secret\n")
        .unwrap();
    assert!(set.wait().unwrap().success());

    let trail = env.ok(&["audit", "--json"]);
    assert!(!trail.contains("hunter2"), "{trail}");
    let entries: serde_json::Value = serde_json::from_str(&trail).unwrap();
    let actions: Vec<String> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e["kind"], e["subject"], e["action"]).replace('"', ""))
        .collect();
    assert_eq!(
        actions,
        [
            "setting Acme.HelloScheduledTask api-key set",
            "configuration nightly enabled",
            "configuration nightly disabled",
            "configuration nightly changed",
            "configuration nightly created",
        ]
    );
    let me = entries[0]["actor"].as_str().unwrap();
    assert!(me.ends_with(" with the CLI"), "{me}");
    assert_eq!(entries[0]["changes"][0]["after"], "***");

    // A component swapped into the plugins folder of a running instance.
    let serve = env.serve();
    std::fs::copy(
        common::component_path("misbehave.wasm"),
        env.plugins.join("misbehave.wasm"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let plugins = env.ok(&["audit", "--kind", "plugins"]);
        if plugins.contains("Cronwerk.Test.Misbehave") {
            assert!(plugins.contains("instance test-instance"), "{plugins}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{plugins}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_changed_symlink_target_is_picked_up_on_sighup_and_on_plugins_reload() {
    let env = Env::new(&[]);
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("current.wasm");
    std::fs::copy(common::component_path("hello.wasm"), &target).unwrap();
    std::os::unix::fs::symlink(&target, env.plugins.join("task.wasm")).unwrap();
    let serve = env.serve();
    let serving = |identifier: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let plugins = env.ok(&["plugins"]);
            if plugins.contains(identifier) {
                return plugins;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{identifier}: {plugins}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    serving("Acme.HelloScheduledTask");
    // A deploy that swaps the link's target: nothing in the watched folder
    // changes, so no notification comes.
    let next = elsewhere.path().join("next.wasm");
    std::fs::copy(common::component_path("misbehave.wasm"), &next).unwrap();
    std::fs::rename(&next, &target).unwrap();
    serve.signal("-HUP");
    let plugins = serving("Cronwerk.Test.Misbehave");
    assert!(!plugins.contains("Acme.HelloScheduledTask"), "{plugins}");
    // Swapped back, and `cronwerk plugins reload` asks for the rescan.
    std::fs::copy(common::component_path("hello.wasm"), &next).unwrap();
    std::fs::rename(&next, &target).unwrap();
    let asked = env.ok(&["plugins", "reload"]);
    assert!(asked.contains("test-instance: asked to rescan"), "{asked}");
    let plugins = serving("Acme.HelloScheduledTask");
    assert!(!plugins.contains("Cronwerk.Test.Misbehave"), "{plugins}");
    let unknown = env.cli(&["plugins", "reload", "--instance", "nobody"]);
    assert_eq!(unknown.status.code(), Some(64));
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

/// The instances listed under `name`: (pid, host) of each.
fn holders(env: &Env, name: &str) -> Vec<u64> {
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["instances", "--json"])).unwrap();
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == name)
        .map(|i| i["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_second_serve_under_a_live_name_refuses_replace_takes_over_and_a_crash_restarts_at_once() {
    let env = Env::new(&["hello.wasm"]);
    let first = env.serve_as("web", &["--listen", "none"]);
    let first_pid = u64::from(first.child.id());
    assert_eq!(holders(&env, "web"), [first_pid]);

    // A second process under the live name: it waits for one heartbeat of
    // the first, sees it alive, and refuses, before loading anything.
    let mut second = env
        .serve_command("web", &["--listen", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second serve did not give up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("waiting up to 15 s"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: an instance named web is running (pid {first_pid} on "
        )) && stderr.contains("--replace"),
        "{stderr}"
    );
    assert_eq!(
        holders(&env, "web"),
        [first_pid],
        "the first keeps its name"
    );

    // --replace: the new process takes the name; the first stops by itself
    // at its next heartbeat, exits 0 and leaves the name to the new one.
    let third = env.serve_as("web", &["--listen", "none", "--replace"]);
    let third_pid = u64::from(third.child.id());
    let (code, lines) = first.wait();
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("instance web was taken over by pid")
                && l.contains("this process stops")),
        "{lines:#?}"
    );
    assert_eq!(holders(&env, "web"), [third_pid]);
    // ... and it goes on running the configurations.
    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    env.wait_runs("hello", "a run by the new process", |r| {
        r.iter().any(|r| r.state == RunState::Succeeded)
    });

    // A crash and a quick restart under the same name: the dead process's
    // row is still fresh, but its pid is gone on this machine, so the new
    // one serves at once.
    third.kill_9();
    let restarted = std::time::Instant::now();
    let fourth = env.serve_as("web", &["--listen", "none"]);
    assert!(
        restarted.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        restarted.elapsed()
    );
    assert_eq!(holders(&env, "web"), [u64::from(fourth.child.id())]);
    let (code, lines) = fourth.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(holders(&env, "web").is_empty(), "a clean stop leaves");
}

/// Waits (up to `within`) until `cronwerk plugins --json` satisfies `done`.
fn wait_plugins(
    env: &Env,
    within: std::time::Duration,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let listed: Vec<serde_json::Value> =
            serde_json::from_str(&env.ok(&["plugins", "--json"])).unwrap();
        if done(&listed) {
            return listed;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {listed:#?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn status_of(listed: &[serde_json::Value], file: &str) -> String {
    listed
        .iter()
        .find(|p| p["file"].as_str().is_some_and(|f| f.ends_with(file)))
        .map(|p| p["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[test]
fn after_a_restart_the_version_that_served_keeps_serving_when_a_stray_copy_claims_it() {
    let env = Env::new(&[]);
    std::fs::copy(
        common::component_path("hello.wasm"),
        env.plugins.join("z-real.wasm"),
    )
    .unwrap();
    common::warm_compile_cache("hello.wasm");
    let serve = env.serve();
    wait_plugins(
        &env,
        std::time::Duration::from_secs(20),
        "z-real serving",
        |l| status_of(l, "z-real.wasm") == "ok",
    );
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));

    // A stray copy (other bytes, the same identifier) whose name sorts
    // first, compiled already, so both load in the first scan.
    let stray = common::with_custom_section(
        &std::fs::read(common::component_path("hello.wasm")).unwrap(),
        "stray",
        b"copy",
    );
    let stray_path = env.plugins.join("a-stray.wasm");
    std::fs::write(&stray_path, stray).unwrap();
    let inspected = env.cli(&[
        "inspect",
        stray_path.to_str().unwrap(),
        "--cache-dir",
        common::compile_cache_dir().to_str().unwrap(),
    ]);
    assert!(inspected.status.success(), "{inspected:?}");

    let serve = env.serve();
    let listed = wait_plugins(&env, std::time::Duration::from_secs(20), "both seen", |l| {
        !status_of(l, "z-real.wasm").is_empty() && !status_of(l, "a-stray.wasm").is_empty()
    });
    assert_eq!(status_of(&listed, "z-real.wasm"), "ok", "{listed:#?}");
    assert_eq!(
        status_of(&listed, "a-stray.wasm"),
        "conflict",
        "{listed:#?}"
    );
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_deleted_and_recreated_plugins_folder_is_watched_again() {
    let env = Env::new(&["hello.wasm"]);
    common::warm_compile_cache("misbehave.wasm");
    let serve = env.serve();
    let quick = std::time::Duration::from_secs(10);
    wait_plugins(&env, quick, "hello serving", |l| {
        status_of(l, "hello.wasm") == "ok"
    });
    // A deploy that replaces the whole folder.
    std::fs::remove_dir_all(&env.plugins).unwrap();
    std::fs::create_dir(&env.plugins).unwrap();
    std::fs::copy(
        common::component_path("misbehave.wasm"),
        env.plugins.join("misbehave.wasm"),
    )
    .unwrap();
    // Well within the 30 s periodic rescan: the new folder is found and
    // watched, and a later copy into it is noticed as it happens.
    wait_plugins(&env, quick, "the new folder's file", |l| {
        status_of(l, "misbehave.wasm") == "ok"
    });
    std::fs::copy(
        common::component_path("hello.wasm"),
        env.plugins.join("hello-again.wasm"),
    )
    .unwrap();
    wait_plugins(&env, quick, "a copy into the new folder", |l| {
        status_of(l, "hello-again.wasm") == "ok"
    });
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn serve_deletes_compile_cache_entries_unused_for_longer_than_its_limit() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new(&["hello.wasm"]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let entry = |name: &str, days: u64| {
        let path = cache.join(name);
        std::fs::write(&path, b"not code").unwrap();
        let at = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(at)
            .unwrap();
        path
    };
    let stale = entry("stale-e.cwasm", 40);
    let recent = entry("recent-e.cwasm", 2);
    let cache_arg = cache.to_str().unwrap();
    let serve = env.serve_as(
        "gc",
        &[
            "--listen",
            "none",
            "--cache-dir",
            cache_arg,
            "--cache-max-age",
            "30d",
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stale.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale entry stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(recent.exists(), "an entry used 2 days ago stays");
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn serve_writes_json_log_lines_and_nothing_else_under_log_format_json() {
    let env = Env::new(&["hello.wasm"]);
    let serve = env.serve_as(
        "json-logs",
        &["--listen", "127.0.0.1:0", "--log-format", "json"],
    );
    // A broken file dropped in: its PLUGIN_FAILED line carries the event
    // code as a field of its own. Every line on the way is kept: the API's
    // (where it listens, its token) are JSON too.
    std::fs::write(env.plugins.join("broken.wasm"), b"not wasm").unwrap();
    let mut seen: Vec<String> = Vec::new();
    let listening = |seen: &[String]| {
        seen.iter()
            .any(|l| l.contains("API and dashboard on http://127.0.0.1:"))
    };
    let failed = |seen: &[String]| seen.iter().find(|l| l.contains("PLUGIN_FAILED")).cloned();
    while !listening(&seen) || failed(&seen).is_none() {
        let line = serve
            .lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no PLUGIN_FAILED or API line in {seen:#?}"));
        seen.push(line);
    }
    let failed = failed(&seen).unwrap();
    let failed: serde_json::Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed["code"], "PLUGIN_FAILED", "{failed}");
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert!(
        failed["message"].as_str().unwrap().contains("broken.wasm"),
        "{failed}"
    );
    let (code, lines) = serve.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    // What came on the way and after: the stop's lines, and whatever else
    // was said.
    let mut lines: Vec<String> = seen.into_iter().chain(lines).collect();
    lines.retain(|l| !l.trim().is_empty());
    assert!(!lines.is_empty());
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &parsed {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
        assert!(line["message"].is_string(), "{line}");
    }
    assert!(
        parsed
            .iter()
            .any(|l| l["message"].as_str().unwrap().starts_with("stopped at")),
        "{parsed:#?}"
    );
}

#[test]
fn serve_takes_its_flags_from_a_config_file_and_the_command_line_and_environment_win() {
    let env = Env::new(&["hello.wasm"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cronwerk.toml");
    std::fs::write(
        &file,
        "name = \"from-file\"\nlisten = \"none\"\nrole = [\"edit\"]\nlease = \"1s\"\ngrace = \"2s\"\n",
    )
    .unwrap();
    let command = |extra: &[&str], environment: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronwerk"));
        cmd.arg("--data-dir")
            .arg(&env.data)
            .env("CRONWERK_CACHE_DIR", common::compile_cache_dir())
            .env_remove("CRONWERK_INSTANCE")
            .envs(environment.iter().copied())
            .args(["serve", "--plugins"])
            .arg(&env.plugins)
            .arg("--config")
            .arg(&file)
            .args(extra);
        cmd
    };
    let instances = || -> Vec<(String, serde_json::Value)> {
        let listed: serde_json::Value =
            serde_json::from_str(&env.ok(&["instances", "--json"])).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["live"] == true)
            .map(|i| (i["name"].as_str().unwrap().to_owned(), i["roles"].clone()))
            .collect()
    };
    for (extra, environment, expected) in [
        (&[][..], &[][..], "from-file"),
        (&["--name", "from-flag"][..], &[][..], "from-flag"),
        (
            &[][..],
            &[("CRONWERK_INSTANCE", "from-env")][..],
            "from-env",
        ),
    ] {
        let serve = common::serve_env::start_serving(command(extra, environment), expected);
        assert_eq!(
            instances(),
            [(expected.to_owned(), serde_json::json!(["edit"]))],
            "{extra:?} {environment:?}"
        );
        let (code, _) = serve.stop();
        assert_eq!(code, Some(0));
    }
    std::fs::write(&file, "nmae = \"typo\"\n").unwrap();
    let out = command(&[], &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: unknown key 'nmae'", file.display())),
        "{stderr}"
    );
}

#[test]
fn a_failed_run_leaves_one_run_failed_event_that_events_level_warning_shows() {
    let env = Env::new(&["misbehave.wasm"]);
    env.ok(&[
        "task",
        "add",
        "fails",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1h",
        "--disabled",
        "-p",
        "action=fail",
        "-p",
        "text=the disk is full",
    ]);
    let serve = env.serve();
    let ran = env.cli(&["task", "run", "fails"]);
    assert_eq!(ran.status.code(), Some(1), "{ran:?}");
    // One JSON object per line.
    let listed: Vec<serde_json::Value> = env
        .ok(&["events", "--task", "fails", "--level", "warning", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let failed: Vec<&serde_json::Value> = listed
        .iter()
        .filter(|e| e["code"] == "RUN_FAILED")
        .collect();
    assert_eq!(failed.len(), 1, "{listed:#?}");
    assert_eq!(failed[0]["message"], "the disk is full");
    assert_eq!(failed[0]["level"], "error");
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn after_a_failed_update_plugins_shows_what_serves_and_what_failed_apart() {
    let env = Env::new(&["hello.wasm"]);
    let file = env.plugins.join("hello.wasm");
    let serving = cronwerk::runtime::sha256_hex(&std::fs::read(&file).unwrap());
    let broken = b"this is not a component".to_vec();
    let failed = cronwerk::runtime::sha256_hex(&broken);
    let serve = env.serve();
    let tmp = env.plugins.join("hello.wasm.partial");
    std::fs::write(&tmp, &broken).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let row = loop {
        let rows: serde_json::Value =
            serde_json::from_str(&env.ok(&["plugins", "--json"])).unwrap();
        let row = rows.as_array().unwrap()[0].clone();
        if row["status"] == "failed" {
            break row;
        }
        assert!(std::time::Instant::now() < deadline, "{row}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(row["sha256"], failed.as_str(), "{row}");
    assert_eq!(row["serving_sha256"], serving.as_str(), "{row}");
    assert_eq!(row["version"], "1.0.0", "{row}");
    // Two lines: what serves (its version and sha256), what failed (its
    // sha256 and why).
    let text = env.ok(&["plugins"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("hello.wasm")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains(&serving[..12])
            && lines[0].contains("1.0.0")
            && lines[0].contains("serving (the version before the failed update)")
            && !lines[0].contains(&failed[..12]),
        "{text}"
    );
    assert!(
        lines[1].contains(&failed[..12])
            && lines[1].contains("failed:")
            && !lines[1].contains("1.0.0")
            && !lines[1].contains(&serving[..12]),
        "{text}"
    );
    // The fleet's view names the version that serves.
    let fleet = env.ok(&["plugins", "--instances"]);
    assert!(
        fleet.contains(&format!("1.0.0 ({})", &serving[..8])),
        "{fleet}"
    );
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}
