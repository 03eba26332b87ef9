//! One behavioural test per task language — Rust (`Acme.FileCleanup`),
//! Python (`Acme.ReportDigest`), JavaScript (`Acme.CacheWarmup`) and C
//! (`Acme.DiskReport`) — each run twice through `cronwerk exec` and twice through `cronwerk serve` (a
//! scheduled run, then a manual one), with the world changing in between.
//! Both paths must show the same observable results: the result message,
//! the event codes, and the state the first run leaves for the second.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::serve_env::Env;
use cronwerk::model::{RunRecord, RunState};
use cronwerk::store::{EventFilter, EventJournal, StateAndSettings};

/// What one run must show, on either path.
#[derive(Debug, Clone)]
struct Expect {
    succeeded: bool,
    message: String,
    /// Event codes of the task's and host's events, sorted (stdout/stderr excluded).
    codes: Vec<&'static str>,
    /// Entries the state must hold after the run.
    state: Vec<(String, String)>,
}

/// One language's task, its world and the two runs expected of it.
struct Scenario {
    file: &'static str,
    identifier: &'static str,
    /// Configuration flags shared by `exec` and `task add`.
    flags: Vec<String>,
    /// Identifier settings: `--config` for exec, `cronwerk config set` for serve.
    settings: Vec<(&'static str, &'static str)>,
    first: Expect,
    /// Changes the world between the runs.
    between: Box<dyn Fn()>,
    second: Expect,
    /// Checks on the world after both runs.
    after: Box<dyn Fn()>,
    _world: Box<dyn std::any::Any>,
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn sorted(mut codes: Vec<&'static str>) -> Vec<&'static str> {
    codes.sort_unstable();
    codes
}

// --- Rust: Acme.FileCleanup --------------------------------------------------

/// A 100-byte file last modified `days` ago.
fn aged_file(path: &Path, days: u64) {
    std::fs::write(path, [b'x'; 100]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .unwrap();
}

fn file_cleanup() -> Scenario {
    let world = tempfile::tempdir().unwrap();
    let data = world.path().join("data");
    let outside = world.path().join("outside");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    aged_file(&data.join("a.tmp"), 30);
    aged_file(&data.join("b.tmp"), 30);
    aged_file(&data.join("fresh.tmp"), 1);
    aged_file(&data.join("keep.log"), 30);
    // An old file outside the grant, reachable only through a symbolic link.
    aged_file(&outside.join("secret.tmp"), 30);
    std::os::unix::fs::symlink(outside.join("secret.tmp"), data.join("link.tmp")).unwrap();
    let between_data = data.clone();
    let after_data = data.clone();
    Scenario {
        file: "file-cleanup.wasm",
        identifier: "Acme.FileCleanup",
        flags: vec![
            format!("--grant-dir={}:/data", data.display()),
            s("--property=pattern=*.tmp"),
            s("--property=older-than-days=7"),
        ],
        settings: vec![("max-deletions", "2")],
        first: Expect {
            succeeded: true,
            message: s("removed 2 files (200 bytes) older than 7 days from /data; kept 3"),
            codes: sorted(vec!["REMOVED", "REMOVED"]),
            state: vec![(s("removed-total"), s("2")), (s("bytes-total"), s("200"))],
        },
        between: Box::new(move || {
            for name in ["c.tmp", "d.tmp", "e.tmp"] {
                aged_file(&between_data.join(name), 10);
            }
        }),
        // The cap (config max-deletions = 2) stops the sweep at e.tmp.
        second: Expect {
            succeeded: true,
            message: s("removed 2 files (200 bytes) older than 7 days from /data; kept 0"),
            codes: sorted(vec!["REMOVED", "REMOVED", "CLEANUP_LIMIT"]),
            state: vec![(s("removed-total"), s("4")), (s("bytes-total"), s("400"))],
        },
        after: Box::new(move || {
            let mut left: Vec<String> = std::fs::read_dir(&after_data)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, ["e.tmp", "fresh.tmp", "keep.log", "link.tmp"]);
            assert!(
                outside.join("secret.tmp").exists(),
                "a file outside the grant was touched"
            );
        }),
        _world: Box::new(world),
    }
}

// --- Python: Acme.ReportDigest -----------------------------------------------

fn report_digest() -> Scenario {
    let world = tempfile::tempdir().unwrap();
    let reports = world.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    std::fs::write(
        reports.join("api.log"),
        "INFO started\nERROR db down\nWARN slow\nINFO ok\n",
    )
    .unwrap();
    std::fs::write(reports.join("jobs.log"), "INFO nightly done\n").unwrap();
    std::fs::write(reports.join("notes.txt"), "ERROR not a log\n").unwrap();
    let api_log = reports.join("api.log");
    Scenario {
        file: "report-digest.wasm",
        identifier: "Acme.ReportDigest",
        flags: vec![
            format!("--grant-dir={}:/reports:ro", reports.display()),
            s("--property=title=Nightly"),
        ],
        settings: vec![("team", "ops")],
        first: Expect {
            succeeded: true,
            message: s("Nightly: 2 files, 5 new lines, 1 errors, 1 warnings (team ops)"),
            codes: sorted(vec!["DIGEST_FILE", "DIGEST_FILE", "DIGEST_ERRORS"]),
            state: vec![
                (s("runs"), s("1")),
                (s("offset:api.log"), s("45")),
                (s("offset:jobs.log"), s("18")),
            ],
        },
        between: Box::new(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&api_log)
                .unwrap();
            f.write_all(b"ERROR db down again\nINFO recovered\n")
                .unwrap();
        }),
        second: Expect {
            succeeded: true,
            message: s("Nightly: 1 files, 2 new lines, 1 errors, 0 warnings (team ops)"),
            codes: sorted(vec!["DIGEST_FILE", "DIGEST_ERRORS"]),
            state: vec![
                (s("runs"), s("2")),
                (s("offset:api.log"), s("80")),
                (s("offset:jobs.log"), s("18")),
            ],
        },
        after: Box::new(|| {}),
        _world: Box::new(world),
    }
}

// --- JavaScript: Acme.CacheWarmup --------------------------------------------

/// A loopback HTTP server answering every path with the status set for it
/// (200 by default), recording the user agents it saw.
struct Origin {
    port: u16,
    statuses: Arc<Mutex<BTreeMap<String, u16>>>,
    user_agents: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let statuses = Arc::new(Mutex::new(BTreeMap::new()));
        let user_agents = Arc::new(Mutex::new(Vec::new()));
        let (st, ua) = (statuses.clone(), user_agents.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (st, ua) = (st.clone(), ua.clone());
                std::thread::spawn(move || serve_one(stream, &st, &ua));
            }
        });
        Origin {
            port,
            statuses,
            user_agents,
        }
    }
}

fn serve_one(
    stream: TcpStream,
    statuses: &Mutex<BTreeMap<String, u16>>,
    user_agents: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("user-agent")
        {
            user_agents.lock().unwrap().push(value.trim().to_owned());
        }
    }
    let status = statuses.lock().unwrap().get(&path).copied().unwrap_or(200);
    let body = format!("warm {path}\n");
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    // Drain what the client still sends so it sees a clean close.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = reader.read(&mut [0; 64]);
}

/// A listener that must never see a connection: the task is not granted it.
struct Forbidden {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Forbidden {
    fn start() -> Forbidden {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for _ in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        Forbidden { port, accepted }
    }
}

fn cache_warmup() -> Scenario {
    let origin = Origin::start();
    let forbidden = Forbidden::start();
    let (o, f) = (origin.port, forbidden.port);
    let home = format!("http://127.0.0.1:{o}/");
    let feed = format!("http://127.0.0.1:{o}/feed");
    let denied = format!("http://127.0.0.1:{f}/admin");
    let statuses = origin.statuses.clone();
    let user_agents = origin.user_agents.clone();
    let accepted = forbidden.accepted.clone();
    let state_after = |runs: &str, feed_status: &str| {
        vec![
            (s("runs"), s(runs)),
            (format!("status:{home}"), s("200")),
            (format!("status:{feed}"), s(feed_status)),
            (format!("status:{denied}"), s("error")),
        ]
    };
    Scenario {
        file: "cache-warmup.wasm",
        identifier: "Acme.CacheWarmup",
        flags: vec![
            format!("--property=urls={home}, {feed}\n{denied}"),
            format!("--allow-http=127.0.0.1:{o}"),
        ],
        settings: vec![("user-agent", "cronwerk-test/1")],
        first: Expect {
            succeeded: true,
            message: s("warmed 2 of 3 URLs, 1 failed"),
            codes: sorted(vec!["WARMED", "WARMED", "WARM_FAILED", "HTTP_DENIED"]),
            state: state_after("1", "200"),
        },
        between: Box::new(move || {
            statuses.lock().unwrap().insert(s("/feed"), 503);
        }),
        second: Expect {
            succeeded: true,
            message: s("warmed 1 of 3 URLs, 2 failed"),
            codes: sorted(vec![
                "WARMED",
                "WARM_FAILED",
                "WARM_FAILED",
                "HTTP_DENIED",
                "STATUS_CHANGED",
            ]),
            state: state_after("2", "503"),
        },
        after: Box::new(move || {
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                0,
                "a host the configuration does not grant was contacted"
            );
            let agents = user_agents.lock().unwrap();
            assert_eq!(agents.len(), 4, "two runs, two granted URLs each");
            assert!(agents.iter().all(|a| a == "cronwerk-test/1"), "{agents:?}");
        }),
        _world: Box::new((origin, forbidden)),
    }
}

// --- C: Acme.DiskReport -----------------------------------------------------

fn sized_file(path: &Path, bytes: usize) {
    std::fs::write(path, vec![b'x'; bytes]).unwrap();
}

fn disk_report() -> Scenario {
    let world = tempfile::tempdir().unwrap();
    let data = world.path().join("data");
    let outside = world.path().join("outside");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    sized_file(&data.join("a.log"), 1000);
    sized_file(&data.join("b.txt"), 300);
    sized_file(&data.join("c.dat"), 50);
    sized_file(&data.join("sub/inner.log"), 9000);
    // A link is an entry of its own, never followed: the big file it
    // points to outside the grant counts for nothing.
    sized_file(&outside.join("huge.bin"), 70_000);
    std::os::unix::fs::symlink(outside.join("huge.bin"), data.join("link.bin")).unwrap();
    let between_data = data.clone();
    Scenario {
        file: "disk-report.wasm",
        identifier: "Acme.DiskReport",
        flags: vec![
            format!("--grant-dir={}:/data:ro", data.display()),
            s("--property=folder=/data"),
        ],
        settings: vec![("top", "2")],
        first: Expect {
            succeeded: true,
            message: s("3 files, 1350 bytes in /data, first run; skipped 2 other entries"),
            codes: sorted(vec!["DISK_REPORT", "DISK_REPORT", "DISK_SUMMARY"]),
            state: vec![(s("total-bytes"), s("1350"))],
        },
        between: Box::new(move || {
            sized_file(&between_data.join("d.bin"), 5000);
            std::fs::remove_file(between_data.join("c.dat")).unwrap();
        }),
        second: Expect {
            succeeded: true,
            message: s(
                "3 files, 6300 bytes in /data, +4950 bytes since the previous run; \
                 skipped 2 other entries",
            ),
            codes: sorted(vec!["DISK_REPORT", "DISK_REPORT", "DISK_SUMMARY"]),
            state: vec![(s("total-bytes"), s("6300"))],
        },
        after: Box::new(|| {}),
        _world: Box::new(world),
    }
}

// --- the two paths -----------------------------------------------------------

/// What a run showed, reduced to what [`Expect`] compares.
#[derive(Debug)]
struct Seen {
    succeeded: bool,
    message: String,
    codes: Vec<String>,
    state: BTreeMap<String, String>,
}

fn check(path: &str, run: usize, seen: &Seen, expect: &Expect) {
    let what = format!("{path}, run {run}: {seen:#?}");
    assert_eq!(seen.succeeded, expect.succeeded, "{what}");
    assert_eq!(seen.message, expect.message, "{what}");
    assert_eq!(seen.codes, expect.codes, "{what}");
    for (k, v) in &expect.state {
        assert_eq!(seen.state.get(k), Some(v), "state '{k}' in {what}");
    }
}

fn exec_once(scenario: &Scenario, state: &BTreeMap<String, String>) -> Seen {
    common::warm_compile_cache(scenario.file);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronwerk"));
    cmd.arg("exec")
        .arg(common::component_path(scenario.file))
        .args(["--json", "--trigger", "schedule", "--timeout", "30s"])
        .arg("--cache-dir")
        .arg(common::compile_cache_dir())
        .args(&scenario.flags);
    for (k, v) in &scenario.settings {
        cmd.arg(format!("--config={k}={v}"));
    }
    for (k, v) in state {
        cmd.arg(format!("--state={k}={v}"));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "exec printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let succeeded = report["outcome"] == "succeeded";
    assert_eq!(
        out.status.code(),
        Some(if succeeded { 0 } else { 1 }),
        "{report}"
    );
    let mut codes: Vec<String> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "task" || e["source"] == "host")
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect();
    codes.sort_unstable();
    Seen {
        succeeded,
        message: report["message"].as_str().unwrap().to_owned(),
        codes,
        state: serde_json::from_value(report["state"].clone()).unwrap(),
    }
}

fn through_exec(scenario: Scenario) {
    let first = exec_once(&scenario, &BTreeMap::new());
    check("exec", 1, &first, &scenario.first);
    (scenario.between)();
    let second = exec_once(&scenario, &first.state);
    check("exec", 2, &second, &scenario.second);
    (scenario.after)();
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn seen_in_store(env: &Env, run: &RunRecord) -> Seen {
    let store = env.store();
    block_on(async {
        let mut codes: Vec<String> = store
            .list_events(&EventFilter {
                run_id: Some(run.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|e| {
                matches!(
                    e.source,
                    cronwerk::model::EventSource::Task | cronwerk::model::EventSource::Host
                )
            })
            .map(|e| e.code)
            .collect();
        codes.sort_unstable();
        Seen {
            succeeded: run.state == RunState::Succeeded,
            message: run.message.clone(),
            codes,
            state: store.load_state(run.task_id).await.unwrap(),
        }
    })
}

fn through_serve(scenario: Scenario) {
    common::warm_compile_cache(scenario.file);
    let env = Env::new(&[scenario.file]);
    for (k, v) in &scenario.settings {
        env.ok(&["config", "set", scenario.identifier, k, v]);
    }
    let serve = env.serve();
    let task = "Language check";
    // The first run is a scheduled one, a moment from now.
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(1)).to_rfc3339();
    let mut add = vec![
        s("task"),
        s("add"),
        s(task),
        s("--implementation"),
        s(scenario.identifier),
        s("--at"),
        at,
        s("--timeout"),
        s("30s"),
    ];
    add.extend(scenario.flags.iter().cloned());
    env.ok(&add.iter().map(String::as_str).collect::<Vec<_>>());
    let runs = env.wait_runs(task, "the scheduled run", |runs| {
        runs.iter().any(|r| r.finished_at.is_some())
    });
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].trigger, cronwerk::model::Trigger::Schedule);
    check("serve", 1, &seen_in_store(&env, &runs[0]), &scenario.first);

    (scenario.between)();
    // The second through the queue the serving instance picks up.
    let out = env.cli(&["task", "run", task]);
    let runs = env.wait_runs(task, "the manual run", |runs| {
        runs.len() == 2 && runs.iter().all(|r| r.finished_at.is_some())
    });
    assert_eq!(runs[1].trigger, cronwerk::model::Trigger::Manual);
    let seen = seen_in_store(&env, &runs[1]);
    assert_eq!(
        out.status.code(),
        Some(if seen.succeeded { 0 } else { 1 }),
        "{out:?}"
    );
    check("serve", 2, &seen, &scenario.second);
    (scenario.after)();
    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn rust_file_cleanup_through_exec() {
    through_exec(file_cleanup());
}

#[test]
fn rust_file_cleanup_through_serve() {
    through_serve(file_cleanup());
}

#[test]
fn python_report_digest_through_exec() {
    through_exec(report_digest());
}

#[test]
fn python_report_digest_through_serve() {
    through_serve(report_digest());
}

#[test]
fn javascript_cache_warmup_through_exec() {
    through_exec(cache_warmup());
}

#[test]
fn javascript_cache_warmup_through_serve() {
    through_serve(cache_warmup());
}

#[test]
fn c_disk_report_through_exec() {
    through_exec(disk_report());
}

#[test]
fn c_disk_report_through_serve() {
    through_serve(disk_report());
}

/// Without a grant the C task fails, saying how to grant the folder, and
/// keeps no state; with one, a path out of it (`..`, a link) is refused.
#[test]
fn c_disk_report_needs_its_grant() {
    let run = |args: &[String]| {
        common::warm_compile_cache("disk-report.wasm");
        let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
            .arg("exec")
            .arg(common::component_path("disk-report.wasm"))
            .arg("--cache-dir")
            .arg(common::compile_cache_dir())
            .arg("--json")
            .args(args)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("exec printed no JSON ({e}): {out:?}"));
        assert_eq!(out.status.code(), Some(1), "{report:#}");
        assert_eq!(report["outcome"], "failed", "{report:#}");
        assert_eq!(report["state"], serde_json::json!({}), "{report:#}");
        report["message"].as_str().unwrap().to_owned()
    };
    let message = run(&[]);
    assert!(
        message.starts_with("cannot read folder '/data' (")
            && message.contains("grant it to the task, e.g. --grant-dir /srv/files:/data"),
        "{message}"
    );

    let world = tempfile::tempdir().unwrap();
    let data = world.path().join("data");
    let outside = world.path().join("outside");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    sized_file(&outside.join("secret.log"), 10);
    std::os::unix::fs::symlink(&outside, data.join("escape")).unwrap();
    let grant = format!("--grant-dir={}:/data", data.display());
    for folder in ["/data/..", "/data/escape", "/"] {
        let message = run(&[grant.clone(), format!("--property=folder={folder}")]);
        assert!(
            message.starts_with(&format!("cannot read folder '{folder}' (")),
            "{folder}: {message}"
        );
    }
}

/// The grant is all the task sees: whatever path it is told, it cannot
/// reach a file outside it.
#[test]
fn file_cleanup_cannot_leave_its_grant() {
    let world = tempfile::tempdir().unwrap();
    let data = world.path().join("data");
    let outside = world.path().join("outside");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    aged_file(&outside.join("old.tmp"), 30);
    std::os::unix::fs::symlink(&outside, data.join("escape")).unwrap();
    let outside_abs = outside.display().to_string();
    for path in ["/data/..", "/data/escape", "/", outside_abs.as_str()] {
        let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
            .arg("exec")
            .arg(common::component_path("file-cleanup.wasm"))
            .arg("--cache-dir")
            .arg(common::compile_cache_dir())
            .arg(format!("--grant-dir={}:/data", data.display()))
            .args(["--property", &format!("path={path}")])
            .args(["--property", "recursive=true", "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_ne!(report["outcome"], "succeeded", "path {path}: {report}");
        assert!(outside.join("old.tmp").exists(), "path {path} escaped");
    }
    // Told to sweep its grant recursively, it does not follow the link out.
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("exec")
        .arg(common::component_path("file-cleanup.wasm"))
        .arg("--cache-dir")
        .arg(common::compile_cache_dir())
        .arg(format!("--grant-dir={}:/data", data.display()))
        .args(["--property", "recursive=true", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(outside.join("old.tmp").exists());
}
