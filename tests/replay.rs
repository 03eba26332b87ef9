//! `cronwerk runs replay`: a run served by `cronwerk serve` is replayed
//! from what its record kept, against the component that ran it (from the
//! compile cache, or the plugins folder) and against another one, with the
//! old and the new outcome, message, events and state side by side.

mod common;

use common::serve_env::Env;
use cronwerk::model::RunState;
use cronwerk::store::RunLedger as _;
use serde_json::Value;

const MISBEHAVE: &str = "Cronwerk.Test.Misbehave";

fn add(env: &Env, name: &str, properties: &[&str]) {
    let mut args = vec![
        "task",
        "add",
        name,
        "--implementation",
        MISBEHAVE,
        "--every",
        "1h",
    ];
    for p in properties {
        args.extend(["-p", p]);
    }
    env.ok(&args);
}

/// `runs replay ARGS --json`: its exit code and report.
fn replay(env: &Env, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["runs", "replay"];
    all.extend(args);
    all.push("--json");
    let out = env.cli(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{all:?}: {e}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), report)
}

#[test]
fn runs_replay_with_what_they_were_given_against_the_same_or_another_component() {
    let env = Env::new(&["misbehave.wasm"]);
    let plugins = env.plugins.to_str().unwrap().to_owned();
    add(&env, "ctx", &["action=context"]);
    add(&env, "counter", &["action=state"]);
    add(&env, "broken", &["action=fail", "text=cannot parse 'x'"]);
    add(&env, "secret", &["action=config", "key=token"]);
    let mut set = std::process::Command::new(env!("CARGO_BIN_EXE_cronwerk"));
    set.arg("--data-dir")
        .arg(&env.data)
        .args(["config", "set", "--secret", MISBEHAVE, "token"])
        .stdin(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cr3t-value\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

    let serve = env.serve();
    env.ok(&["task", "run", "ctx"]);
    env.ok(&["task", "run", "counter"]);
    env.ok(&["task", "run", "counter"]);
    assert_eq!(env.cli(&["task", "run", "broken"]).status.code(), Some(1));
    env.ok(&["task", "run", "secret"]);
    serve.stop();

    // The context the task was told comes back as it was (its message
    // prints it), from the component in the compile cache.
    let ctx = &env.runs("ctx")[0];
    let (code, r) = replay(&env, &[&ctx.id[..13]]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["run_id"], ctx.id.as_str());
    assert!(
        r["component"].as_str().unwrap().contains("compile cache"),
        "{r:#}"
    );
    assert_eq!(r["was"]["outcome"], "succeeded");
    assert_eq!(r["now"]["outcome"], "succeeded");
    assert!(
        r["was"]["message"]
            .as_str()
            .unwrap()
            .contains("trigger=manual"),
        "{r:#}"
    );
    assert_eq!(r["now"]["message"], r["was"]["message"]);

    // The state before, and after then and now: the second run counted
    // from 1 to 2, and so does its replay.
    let second = &env.runs("counter")[1];
    let (code, r) = replay(&env, &[&second.id]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["state_before"]["count"], "1", "{r:#}");
    assert_eq!(r["was"]["state"]["count"], "2");
    assert_eq!(r["now"]["state"]["count"], "2");
    assert_eq!(r["now"]["message"], "count=2");

    // A failed run fails the same way against the component that ran it,
    // found by its sha256 in the plugins folder when the cache is not used.
    let broken = &env.runs("broken")[0];
    assert_eq!(broken.state, RunState::Failed);
    let (code, r) = replay(&env, &[&broken.id, "--no-cache", "--plugins", &plugins]);
    assert_eq!(code, 1, "a replay that fails exits 1: {r:#}");
    assert_eq!(r["now"]["outcome"], "failed");
    assert_eq!(r["now"]["message"], "cannot parse 'x'");
    assert_eq!(r["was"]["message"], "cannot parse 'x'");
    let codes = |side: &Value| -> Vec<String> {
        side["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(codes(&r["was"]).contains(&"RUN_FAILED".to_owned()), "{r:#}");

    // ... and against another component (a fix), which succeeds.
    let fix = common::component_path("hello.wasm");
    let (code, r) = replay(&env, &[&broken.id, "--component", fix.to_str().unwrap()]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["was"]["outcome"], "failed");
    assert_eq!(r["now"]["outcome"], "succeeded");
    assert_ne!(r["now"]["component_sha256"], r["was"]["component_sha256"]);

    // Secret settings are kept by name only, and replayed with the store's
    // value (which the report masks as the run's did).
    let secret = &env.runs("secret")[0];
    let stored = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(env.store().run_inputs(&secret.id))
        .unwrap()
        .expect("inputs recorded");
    assert!(!stored.contains("s3cr3t"), "{stored}");
    assert!(stored.contains("\"token\""), "{stored}");
    let (code, r) = replay(&env, &[&secret.id]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["now"]["message"], r["was"]["message"]);
    assert!(!r.to_string().contains("s3cr3t"), "{r:#}");

    // The text report puts them side by side and says what is not
    // reproduced.
    let out = env.cli(&[
        "runs",
        "replay",
        &broken.id,
        "--component",
        fix.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("outcome  was: failed"), "{text}");
    assert!(text.contains("         now: succeeded"), "{text}");
    assert!(text.contains("not reproduced:"), "{text}");
    // A component of another identifier is run all the same, with a note.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the run was of Cronwerk.Test.Misbehave"),
        "{err}"
    );

    // Without the component anywhere, and for an id nobody has, it says so.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = env.cli(&[
        "runs",
        "replay",
        &broken.id,
        "--no-cache",
        "--plugins",
        elsewhere.path().to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("--component FILE"), "{err}");
    let out = env.cli(&["runs", "replay", "ffffffff"]);
    assert_eq!(out.status.code(), Some(64));
}
