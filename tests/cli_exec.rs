//! `cronwerk exec` and `cronwerk inspect` as a user runs them: the real
//! binary, real components, exit codes, text and JSON output, Ctrl-C.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use common::component_path;

fn cronwerk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .args(args)
        .output()
        .expect("running cronwerk")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn exec(file: &str, extra: &[&str]) -> Output {
    let path = component_path(file);
    let mut args = vec!["exec", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    cronwerk(&args)
}

#[test]
fn hello_prints_its_event_and_succeeds() {
    let out = exec(
        "hello.wasm",
        &[
            "--property",
            "greeting=hi",
            "--timeout",
            "2s",
            "--fuel",
            "50000000",
            "--memory",
            "64MiB",
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Acme.HelloScheduledTask 1.0.0"), "{stdout}");
    assert!(
        stdout.contains("warning task   NOTIFICATION  Hello from my scheduled task!"),
        "{stdout}"
    );
    assert!(
        stdout.contains("info    task   GREETING  hi, hello!"),
        "{stdout}"
    );
    assert!(stdout.contains("\nsucceeded\n"), "{stdout}");
}

#[test]
fn json_output_is_one_object_with_costs_and_hash() {
    let out = exec("hello.wasm", &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let bytes = std::fs::read(component_path("hello.wasm")).unwrap();
    assert_eq!(v["outcome"], "succeeded");
    assert_eq!(v["identifier"], "Acme.HelloScheduledTask");
    assert_eq!(v["version"], "1.0.0");
    assert_eq!(v["component_sha256"], cronwerk::runtime::sha256_hex(&bytes));
    assert_eq!(v["events"][0]["code"], "NOTIFICATION");
    assert_eq!(v["events"][0]["level"], "warning");
    assert!(v["fuel_consumed"].as_u64().unwrap() > 0);
    assert!(v["peak_memory_bytes"].as_u64().unwrap() > 0);
    assert!(v["duration_us"].as_u64().is_some());
}

#[test]
fn exit_codes_tell_failure_from_limits() {
    let failed = exec("misbehave.wasm", &["-p", "action=fail", "-p", "text=nope"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(text(&failed.stdout).contains("failed: nope"));

    let cases = [
        (vec!["-p", "action=spin", "--fuel", "10_000_000"], "fuel"),
        (vec!["-p", "action=spin", "--timeout", "300ms"], "time"),
        (vec!["-p", "action=alloc", "--memory", "16MiB"], "memory"),
        (vec!["-p", "action=recurse"], "stack"),
        (vec!["-p", "action=panic"], "panic"),
    ];
    for (args, reason) in cases {
        let out = exec("misbehave.wasm", &[&args[..], &["--json"]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["outcome"], "stopped", "{args:?}");
        assert_eq!(v["reason"], reason, "{args:?}");
    }
}

#[test]
fn state_given_on_the_command_line_is_shown_after_the_run() {
    let out = exec(
        "misbehave.wasm",
        &["-p", "action=state", "--state", "count=9", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["message"], "count=10");
    assert_eq!(v["state"]["count"], "10");
}

#[test]
fn a_granted_directory_is_readable_through_exec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), "granted").unwrap();
    let grant = format!("{}:/data:ro", dir.path().display());
    let out = exec(
        "misbehave.wasm",
        &[
            "-p",
            "action=read-file",
            "-p",
            "path=/data/f.txt",
            "--grant-dir",
            &grant,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let denied = exec(
        "misbehave.wasm",
        &["-p", "action=read-file", "-p", "path=/data/f.txt"],
    );
    assert_eq!(denied.status.code(), Some(1));
}

#[test]
fn bad_usage_is_exit_64_and_names_the_value() {
    let out = exec("hello.wasm", &["--memory", "lots"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("'lots' is not a size"),
        "{}",
        text(&out.stderr)
    );
    let out = exec("hello.wasm", &["--grant-dir", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("/no/such/dir"));
}

#[test]
fn ctrl_c_cancels_the_run_and_the_task_sees_it() {
    let path = component_path("misbehave.wasm");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .args([
            "exec",
            path.to_str().unwrap(),
            "-p",
            "action=sleep",
            "-p",
            "ms=60000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the named event: exec says so once the run (and its Ctrl-C
    // handler) is in place.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("running Cronwerk.Test.Misbehave") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exec ended before running"
        );
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("cancelled: cancelled after"), "{stdout}");
    assert!(stdout.contains("CANCELLED  stopping early"), "{stdout}");
}

#[test]
fn inspect_shows_identity_and_imports() {
    let path = component_path("hello.wasm");
    let out = cronwerk(&["inspect", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("identifier   Acme.HelloScheduledTask"),
        "{stdout}"
    );
    assert!(
        stdout.contains("schedule     every 10s (suggested)"),
        "{stdout}"
    );
    assert!(stdout.contains("cronwerk:task/log@0.2.0"), "{stdout}");
    assert!(
        stdout.contains("contract     cronwerk:task@0.2.0"),
        "{stdout}"
    );

    let out = cronwerk(&["inspect", path.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["identifier"], "Acme.HelloScheduledTask");
    assert_eq!(v["exports"][0], "cronwerk:task/task@0.2.0");
    assert_eq!(v["contract"], "0.2.0");
    assert!(v["imports"].as_array().unwrap().len() >= 2);
}

#[test]
fn a_component_over_the_size_limit_is_refused_unread() {
    let size = std::fs::metadata(component_path("hello.wasm"))
        .unwrap()
        .len();
    let out = exec(
        "hello.wasm",
        &["--max-component-size", "64KiB", "--no-cache"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("hello.wasm is "), "{stderr}");
    assert!(stderr.contains("over the 64.0 KiB"), "{stderr}");
    assert!(stderr.contains("--max-component-size"), "{stderr}");
    // At exactly its size it loads and runs.
    let exact = format!("{size}B");
    let out = exec(
        "hello.wasm",
        &["--max-component-size", &exact, "--no-cache"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_compilation_over_the_time_limit_leaves_the_file_unloaded_at_once() {
    // The Python example takes seconds to compile: a millisecond is never
    // enough, and the command ends without waiting for the compiler.
    let started = std::time::Instant::now();
    let out = exec(
        "report-digest.wasm",
        &["--compile-timeout", "1ms", "--no-cache", "--json"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "load-error");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("report-digest.wasm took longer than 1ms to compile"),
        "{message}"
    );
    assert!(message.contains("--compile-timeout"), "{message}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "exec waited {:?} for the compiler it gave up on",
        started.elapsed()
    );
}

/// example-tasks/wat-hello with its event code, event message and result
/// replaced by text full of terminal controls (each the same length as the
/// text it replaces, so the offsets in the file stay right).
fn hostile_wat_hello() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../example-tasks/wat-hello/task.wat");
    let mut wat = std::fs::read_to_string(path).unwrap();
    for (was, now) in [
        (
            r#"(data (i32.const 1144) "WAT")"#,
            r#"(data (i32.const 1144) "\1b[K")"#,
        ),
        (
            r#"(data (i32.const 1152) "Hello from WebAssembly text!")"#,
            r#"(data (i32.const 1152) "\1b[31mred\1b[0m\07\0d\7f\c2\9babcdefghijk")"#,
        ),
        (
            r#"(data (i32.const 1184) "written by hand")"#,
            r#"(data (i32.const 1184) "\1b]0;pwned\07!!!!!")"#,
        ),
    ] {
        assert_eq!(wat.matches(was).count(), 1, "task.wat changed shape");
        wat = wat.replace(was, now);
    }
    wat::parse_str(wat).unwrap()
}

#[test]
fn a_tasks_terminal_controls_print_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.wasm");
    std::fs::write(&path, hostile_wat_hello()).unwrap();
    let out = cronwerk(&["exec", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let raw: Vec<char> = stdout
        .chars()
        .filter(|&c| c != '\n' && c.is_control())
        .collect();
    assert!(raw.is_empty(), "raw controls {raw:?} in: {stdout}");
    assert!(
        stdout.contains(
            r"info    task   \u{1b}[K  \u{1b}[31mred\u{1b}[0m\u{7}\r\u{7f}\u{9b}abcdefghijk"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(r"succeeded: \u{1b}]0;pwned\u{7}!!!!!"),
        "{stdout}"
    );
    // --json stays JSON, with the task's text as it was.
    let out = cronwerk(&["exec", path.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(v["events"][0]["code"], "\u{1b}[K");
    assert!(!text(&out.stdout).contains('\u{1b}'));
}

#[test]
fn a_cache_folder_others_can_write_is_refused_before_loading() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = exec("wat-hello.wasm", &["--cache-dir", dir.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod go-w {}", dir.display())),
        "{stderr}"
    );
    assert!(stderr.contains("--no-cache"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the folder was used"
    );

    // Private again, it is used; a missing folder is made private.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = exec("wat-hello.wasm", &["--cache-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let fresh = tmp.path().join("fresh").join("cache");
    let out = exec("wat-hello.wasm", &["--cache-dir", fresh.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn compiling_a_big_component_shows_a_spinner_on_a_terminal_and_nothing_when_piped() {
    // 18 MB of Python: seconds of compiling, well past the spinner's delay.
    let file = component_path("report-digest.wasm");
    let file = file.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_cronwerk");

    let piped = cronwerk(&["inspect", file, "--no-cache"]);
    assert!(piped.status.success(), "{piped:?}");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("compiling,") && !stderr.contains('\u{1b}'),
        "{stderr:?}"
    );

    let has_script = Command::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: `script` (util-linux) is not installed, so no terminal to test on");
        return;
    }
    // `script` runs the command on a pseudo-terminal and copies what it
    // shows to its own stdout.
    let on_terminal = Command::new("script")
        .args([
            "-qefc",
            &format!("{bin} inspect {file} --no-cache"),
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(on_terminal.status.success(), "{on_terminal:?}");
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(
        shown.contains("loading ") && shown.contains("(compiling, "),
        "{shown:?}"
    );
    assert!(
        shown.contains("identifier   Acme.ReportDigest"),
        "{shown:?}"
    );
}

/// `cronwerk test`: the component run in the sandbox once per case.
#[test]
fn test_runs_each_declared_case_and_reports_what_fell_short() {
    let dir = tempfile::tempdir().unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        r#"
[[case]]
name = "good: counts on from the state it is given"
properties = { action = "state" }
state = { count = "41" }
[case.expect]
outcome = "succeeded"
message = "count=42"
state = { count = "42" }

[[case]]
name = "good: fails with the message it is told"
properties = { action = "fail", text = "disk full on /data" }
[case.expect]
outcome = "failed"
message_matches = "^disk full on /\\w+$"
events = [{ level = "error", code = "RUN_FAILED", message_matches = "disk full" }]

[[case]]
name = "good: a spin is stopped by its fuel"
properties = { action = "spin" }
fuel = 5000000
[case.expect]
outcome = "stopped"
reason = "fuel"

[[case]]
name = "a wrong expectation"
properties = { action = "state" }
[case.expect]
outcome = "failed"
message = "count=7"
state_includes = { count = "7" }
events = [{ code = "NEVER_LOGGED" }]
"#,
    )
    .unwrap();
    let file = component_path("misbehave.wasm");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "test",
            file.to_str().unwrap(),
            "--cases",
            cases.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cronwerk(&args)
    };
    let out = run(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("Cronwerk.Test.Misbehave"), "{stdout}");
    for passed in [
        "ok      good: counts on from the state it is given  (succeeded",
        "ok      good: fails with the message it is told  (failed",
        "ok      good: a spin is stopped by its fuel  (stopped",
    ] {
        assert!(stdout.contains(passed), "{passed}: {stdout}");
    }
    assert!(stdout.contains("FAILED  a wrong expectation"), "{stdout}");
    for problem in [
        "outcome: expected failed, got succeeded (\"count=1\")",
        "message: expected \"count=7\", got \"count=1\"",
        "state_includes.count: expected \"7\", got Some(\"1\")",
        "events[0]: no event with code NEVER_LOGGED",
    ] {
        assert!(stdout.contains(problem), "{problem}: {stdout}");
    }
    assert!(stdout.contains("3 passed, 1 failed"), "{stdout}");

    // The three that pass, alone: exit 0, and JSON is a line per case.
    let out = run(&["--only", "good:", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["passed"] == true), "{lines:?}");
    let out = run(&["--only", "fuel", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let line: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(line["case"], "good: a spin is stopped by its fuel");
    assert_eq!(line["passed"], true);
    assert_eq!(line["outcome"], "stopped");

    // A wrong case file changes nothing and names the case and field.
    std::fs::write(&cases, "[[case]]\nname = \"x\"\nmemory = \"lots\"\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("case 'x': memory:"),
        "{}",
        text(&out.stderr)
    );
}
