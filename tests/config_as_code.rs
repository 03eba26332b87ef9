//! Configuration as code through the real binary, on SQLite and on
//! PostgreSQL: `cronwerk export` writes the configurations and settings,
//! `cronwerk apply -f` makes another store match them exactly, applying
//! again changes nothing, a changed file shows its diff first, `--prune`
//! removes what the file leaves out, a wrong file changes nothing, and an
//! implementation no instance has loaded is named with its nearest
//! loaded identifiers (refused under `--strict`).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Output;

use common::cluster::{Backend, Cluster};
use cronwerk::model::{PluginRow, PluginState, TaskRecord};

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The configurations as the store has them, without what a store gives
/// each (ids, times, counters) and without who paused one (not in a file).
fn configs(c: &Cluster) -> Vec<serde_json::Value> {
    let store = c.store();
    let tasks: Vec<TaskRecord> = store.block_on(store.store.list_tasks()).unwrap();
    tasks
        .into_iter()
        .map(|t| {
            let mut config = t.config;
            config.paused = None;
            serde_json::to_value(config).unwrap()
        })
        .collect()
}

/// A store with a configuration of every kind of field, and settings.
fn populate(c: &Cluster) {
    let add = |args: &[&str]| {
        let mut all = vec!["task", "add"];
        all.extend_from_slice(args);
        c.ok(&all);
    };
    add(&[
        "Page me",
        "--implementation",
        "Acme.WebhookNotify",
        "--every",
        "1h",
        "--disabled",
    ]);
    add(&[
        "Nightly",
        "--implementation",
        "Acme.FileCleanup",
        "--cron",
        "0 30 2 * * *",
        "--tz",
        "Europe/Prague",
        "--retries",
        "2",
        "--retry-backoff",
        "30s",
        "-p",
        "path=/data",
        "-p",
        "note=a \"quoted\" value",
        "--grant-dir",
        "/tmp:/data",
        "--on-failure",
        "Page me",
        "--jitter",
        "5m",
        "--memory",
        "64MiB",
        "--timeout",
        "90s",
        "--fuel",
        "5000000",
    ]);
    add(&[
        "Hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "10s",
        "--on-overlap",
        "allow",
        "--max-concurrent",
        "3",
        "--require-role",
        "edit",
        "--allow-http",
        "api.example.com",
        "--until",
        "2030-01-01T00:00:00Z",
        "--keep-failed",
        "7",
    ]);
    add(&[
        "Warm",
        "--implementation",
        "Acme.CacheWarmup",
        "--at",
        "2030-01-01T00:00:00Z",
        "--grant-dir",
        "/var:/v:ro",
        "--misfire",
        "all",
        "--catch-up",
        "2h",
        "--keep-runs",
        "5",
        "--on-start",
        "--start",
        "2029-12-24T00:00:00Z",
        "--on-success",
        "Page me",
    ]);
    c.ok(&["task", "disable", "Hello", "--note", "upstream is down"]);
    c.ok(&[
        "config",
        "set",
        "Acme.WebhookNotify",
        "url",
        "https://hooks.example.com/x",
    ]);
    let secret = std::process::Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .args(c.cli_args())
        .args(["config", "set", "Acme.WebhookNotify", "token", "--secret"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(b"s3cret")?;
            child.wait()
        })
        .unwrap();
    assert!(secret.success());
}

fn round_trip(backend: fn() -> Option<Backend>) {
    let Some(from) = Cluster::new(backend(), &[]) else {
        return;
    };
    let Some(to) = Cluster::new(backend(), &[]) else {
        return;
    };
    populate(&from);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.toml");
    let file_arg = file.to_str().unwrap();

    // Without secrets: a secret is listed, its value is not, and apply
    // says the new store lacks it.
    let exported = from.ok(&["export"]);
    assert!(exported.contains("[[task]]"), "{exported}");
    assert!(!exported.contains("s3cret"), "{exported}");
    std::fs::write(&file, &exported).unwrap();
    let applied = to.ok(&["apply", "-f", file_arg]);
    assert!(applied.contains("4 to create, 0 to change"), "{applied}");
    assert!(
        applied.contains("token: a secret the file lists without its value"),
        "{applied}"
    );
    assert_eq!(configs(&to), configs(&from));

    // With secrets (a private file), the settings come across too, and the
    // two stores export the same text.
    from.ok(&["export", "--with-secrets", "-o", file_arg]);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let applied = to.ok(&["apply", "-f", file_arg]);
    assert!(
        applied.contains("~ setting Acme.WebhookNotify token = (secret)")
            || applied.contains("+ setting Acme.WebhookNotify token = (secret)"),
        "{applied}"
    );
    assert_eq!(
        to.ok(&["export", "--with-secrets"]),
        from.ok(&["export", "--with-secrets"])
    );
    assert_eq!(configs(&to), configs(&from));

    // The same file again changes nothing, and adds nothing to the audit trail.
    let audit_before = to.ok(&["audit", "--json"]);
    let again = to.ok(&["apply", "-f", file_arg]);
    assert!(again.contains("nothing to change"), "{again}");
    assert_eq!(to.ok(&["audit", "--json"]), audit_before);
}

#[test]
fn export_then_apply_reproduces_a_store_exactly_on_sqlite() {
    round_trip(|| Some(Backend::Sqlite));
}

#[test]
fn export_then_apply_reproduces_a_store_exactly_on_postgres() {
    round_trip(Cluster::postgres);
}

#[test]
fn a_changed_file_shows_its_diff_prunes_only_when_asked_and_a_wrong_one_changes_nothing() {
    let c = Cluster::new(Some(Backend::Sqlite), &[]).unwrap();
    populate(&c);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.toml");
    let file_arg = file.to_str().unwrap();
    let exported = c.ok(&["export"]);

    // Nightly retries 3 times, Hello is gone from the file.
    let changed = exported.replace("retries = 2", "retries = 3");
    let start = changed.find("name = \"Hello\"").unwrap();
    let block_start = changed[..start].rfind("[[task]]").unwrap();
    let block_end = start + changed[start..].find("[[task]]").unwrap();
    let changed = format!("{}{}", &changed[..block_start], &changed[block_end..]);
    std::fs::write(&file, &changed).unwrap();
    let before = configs(&c);
    let dry = c.ok(&["apply", "-f", file_arg, "--dry-run"]);
    assert!(dry.contains("~ Nightly\n    retries: 2 → 3"), "{dry}");
    assert!(
        dry.contains("not in the file, kept (--prune removes them): Hello"),
        "{dry}"
    );
    assert!(dry.contains("dry run: nothing changed"), "{dry}");
    assert_eq!(configs(&c), before);

    let pruned = c.ok(&["apply", "-f", file_arg, "--prune"]);
    assert!(
        pruned.contains("- Hello (not in the file; --prune)"),
        "{pruned}"
    );
    assert!(pruned.contains("applied"), "{pruned}");
    let shown = c.ok(&["task", "show", "Nightly"]);
    assert!(shown.contains("retries         3"), "{shown}");
    assert!(!c.cli(&["task", "show", "Hello"]).status.success());
    let audit = c.ok(&["audit", "--task", "Nightly"]);
    assert!(audit.contains("changed"), "{audit}");

    // Wrong files: each refused with the file, the task and the field
    // named, and nothing changed.
    let before = configs(&c);
    let cases = [
        (
            "[[task]]\nname = \"X\"\nimplementation = \"Acme.X\"\nschedul = { every = \"1m\" }\n",
            "schedul",
        ),
        (
            "[[task]]\nname = \"X\"\nimplementation = \"Acme.X\"\nschedule = { every = \"soon\" }\n",
            "task 'X': schedule.every: interval 'soon'",
        ),
        (
            "[[task]]\nname = \"X\"\nimplementation = \"Acme.X\"\nschedule = { every = \"1m\" }\non_failure = [\"Nobody\"]\n",
            "task 'X': on_failure:",
        ),
        (
            "[[task]]\nname = \"X\"\nimplementation = \"Acme.X\"\nschedule = { every = \"1m\" }\n\
             [[task]]\nname = \"X\"\nimplementation = \"Acme.X\"\nschedule = { every = \"2m\" }\n",
            "task 'X' is named twice",
        ),
    ];
    for (bad, needle) in cases {
        std::fs::write(&file, format!("{changed}\n{bad}")).unwrap();
        let out = c.cli(&["apply", "-f", file_arg]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(64), "{stdout}{stderr}");
        assert!(
            stderr.contains(file_arg) && stderr.contains(needle),
            "{needle}: {stderr}"
        );
        assert_eq!(configs(&c), before, "{needle}");
    }
}

#[test]
fn an_implementation_no_instance_has_loaded_is_named_with_the_nearest_loaded_ones() {
    let c = Cluster::new(Some(Backend::Sqlite), &[]).unwrap();
    // Until an instance reports its plugins there is nothing to compare with.
    let quiet = c.cli(&[
        "task",
        "add",
        "A",
        "--implementation",
        "Acme.Anything",
        "--every",
        "1m",
    ]);
    assert!(quiet.status.success());
    assert!(!text(&quiet).1.contains("warning"), "{}", text(&quiet).1);

    let store = c.store();
    let row = |file: &str, identifier: &str| PluginRow {
        instance: "web-1".into(),
        file: file.into(),
        sha256: "0".repeat(64),
        identifier: Some(identifier.into()),
        version: Some("1.0.0".into()),
        serving_sha256: None,
        loaded_at: chrono::Utc::now(),
        status: PluginState::Ok,
        error: None,
    };
    store
        .block_on(store.store.set_plugins(
            "web-1",
            &[
                row("hello.wasm", "Acme.HelloScheduledTask"),
                row("cleanup.wasm", "Acme.FileCleanup"),
            ],
        ))
        .unwrap();

    let typo = [
        "--implementation",
        "Acme.HelloSchedueldTask",
        "--every",
        "1m",
    ];
    let out = c.cli(&[&["task", "add", "B"][..], &typo].concat());
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: --implementation: no running instance has loaded a component implementing \
             'Acme.HelloSchedueldTask'; did you mean 'Acme.HelloScheduledTask'?"
        ),
        "{stderr}"
    );
    let out = c.cli(&[&["task", "add", "C"][..], &typo, &["--strict"]].concat());
    assert_eq!(out.status.code(), Some(64), "{:?}", text(&out));
    assert!(!c.cli(&["task", "show", "C"]).status.success());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.toml");
    std::fs::write(
        &file,
        "[[task]]\nname = \"D\"\nimplementation = \"Acme.FileClenaup\"\nschedule = { every = \"1m\" }\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let out = c.cli(&["apply", "-f", file_arg, "--strict"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("error: task 'D': no running instance has loaded a component implementing 'Acme.FileClenaup'; did you mean 'Acme.FileCleanup'?"),
        "{stderr}"
    );
    assert!(!c.cli(&["task", "show", "D"]).status.success());
    let out = c.cli(&["apply", "-f", file_arg]);
    let (_, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning: task 'D'"), "{stderr}");
    assert!(c.cli(&["task", "show", "D"]).status.success());
}

#[test]
fn applying_many_configurations_shows_progress_on_a_terminal_and_nothing_when_piped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.toml");
    let many: String = (0..400)
        .map(|i| {
            format!(
                "[[task]]\nname = \"t{i}\"\nimplementation = \"Acme.X\"\nschedule = {{ every = \"1h\" }}\n"
            )
        })
        .collect();
    std::fs::write(&file, many).unwrap();
    let bin = env!("CARGO_BIN_EXE_cronwerk");
    let piped = std::process::Command::new(bin)
        .arg("--data-dir")
        .arg(dir.path().join("piped"))
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&piped);
    assert!(piped.status.success(), "{stderr}");
    assert!(stdout.contains("applied"), "{stdout}");
    assert!(
        !stderr.contains("changes") && !stderr.contains('\u{1b}') && !stdout.contains('\u{1b}'),
        "{stderr:?}"
    );
    let has_script = std::process::Command::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: `script` (util-linux) is not installed, so no terminal to test on");
        return;
    }
    // `script` runs the command on a pseudo-terminal and copies what it
    // shows to its own stdout.
    let command = format!(
        "{bin} --data-dir {} apply -f {}",
        dir.path().join("terminal").display(),
        file.display()
    );
    let on_terminal = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .output()
        .unwrap();
    assert!(on_terminal.status.success(), "{on_terminal:?}");
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(shown.contains("/400 changes"), "{shown:?}");
    assert!(shown.contains("applied"), "{shown:?}");
}
