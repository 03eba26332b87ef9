//! Outbound HTTP from a task to internal addresses, and the per-run caps on
//! requests and response bytes, with the real `cache-warmup` component
//! against a local origin started here (loopback only, a free port). A
//! granted name that resolves to loopback is refused unless the operator
//! starts `exec` or `serve` with `--allow-private-http`; a grant naming the
//! address itself still reaches it. The caps are reached with small
//! settings of a runtime built here.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::serve_env::Env;
use cronwerk::model::RunState;
use cronwerk::runtime::{EngineSettings, HttpSettings, Runtime};
use serde_json::Value;

const WARMUP: &str = "cache-warmup.wasm";

/// An origin on 127.0.0.1 that counts the requests it answers. `/bytes/N`
/// answers N bytes, anything else a short line.
struct Origin {
    port: u16,
    requests: Arc<AtomicUsize>,
}

impl Origin {
    fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let count = count.clone();
                std::thread::spawn(move || serve_one(stream, &count));
            }
        });
        Origin { port, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve_one(stream: TcpStream, count: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    count.fetch_add(1, Ordering::SeqCst);
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let size: usize = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.split('?').next()?.parse().ok())
        .unwrap_or(3);
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\nconnection: close\r\n\r\n");
    let mut stream = stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&vec![b'x'; size]);
    let _ = stream.flush();
}

/// `cronwerk exec cache-warmup.wasm` warming `url` with `flags`; the JSON report.
fn exec_warmup(url: &str, flags: &[&str]) -> Value {
    common::warm_compile_cache(WARMUP);
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("exec")
        .arg(common::component_path(WARMUP))
        .args(["--json", "--timeout", "30s", "--cache-dir"])
        .arg(common::compile_cache_dir())
        .arg(format!("--property=urls={url}"))
        .args(flags)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "exec printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn events<'a>(report: &'a Value, code: &str) -> Vec<&'a str> {
    report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["code"] == code)
        .map(|e| e["message"].as_str().unwrap())
        .collect()
}

#[test]
fn a_granted_name_resolving_to_loopback_is_refused_unless_private_http_is_allowed() {
    let origin = Origin::start();
    let port = origin.port;
    let by_name = format!("http://localhost:{port}/");
    let grant = format!("--allow-http=localhost:{port}");

    let refused = exec_warmup(&by_name, &[&grant]);
    // Nothing warmed: the task fails its run.
    assert_eq!(refused["outcome"], "failed", "{refused}");
    assert_eq!(refused["message"], "warmed 0 of 1 URLs", "{refused}");
    let denied = events(&refused, "HTTP_DENIED");
    assert_eq!(denied.len(), 1, "{refused}");
    assert!(
        denied[0].contains("localhost resolves to")
            && denied[0].contains("a loopback address")
            && denied[0].contains("--allow-private-http"),
        "{}",
        denied[0]
    );
    assert_eq!(origin.requests(), 0, "a refused request reached the origin");

    let allowed = exec_warmup(&by_name, &[&grant, "--allow-private-http"]);
    assert_eq!(allowed["message"], "warmed 1 of 1 URLs", "{allowed}");
    assert!(events(&allowed, "HTTP_DENIED").is_empty(), "{allowed}");
    assert_eq!(origin.requests(), 1);
}

#[test]
fn a_grant_naming_the_loopback_address_still_reaches_it() {
    let origin = Origin::start();
    let port = origin.port;
    let report = exec_warmup(
        &format!("http://127.0.0.1:{port}/"),
        &[&format!("--allow-http=127.0.0.1:{port}")],
    );
    assert_eq!(report["message"], "warmed 1 of 1 URLs", "{report}");
    assert_eq!(origin.requests(), 1);
}

#[test]
fn serve_refuses_a_name_resolving_to_loopback_unless_started_with_allow_private_http() {
    let origin = Origin::start();
    let port = origin.port;
    common::warm_compile_cache(WARMUP);
    let env = Env::new(&[WARMUP]);
    let task = "Warm by name";

    let serve = env.serve();
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(2)).to_rfc3339();
    env.ok(&[
        "task",
        "add",
        task,
        "--implementation",
        "Acme.CacheWarmup",
        "--at",
        &at,
        "--timeout",
        "30s",
        &format!("--property=urls=http://localhost:{port}/"),
        &format!("--allow-http=localhost:{port}"),
    ]);
    let runs = env.wait_runs(task, "the scheduled run", |runs| {
        runs.iter().any(|r| r.finished_at.is_some())
    });
    assert_eq!(runs[0].state, RunState::Failed, "{runs:#?}");
    assert_eq!(runs[0].message, "warmed 0 of 1 URLs");
    assert_eq!(origin.requests(), 0, "a refused request reached the origin");
    assert_eq!(serve.stop().0, Some(0));

    let serve = env.serve_as("private-ok", &["--allow-private-http"]);
    env.ok(&["task", "run", task]);
    let runs = env.wait_runs(task, "the manual run", |runs| {
        runs.len() == 2 && runs.iter().all(|r| r.finished_at.is_some())
    });
    assert_eq!(runs[1].state, RunState::Succeeded, "{runs:#?}");
    assert_eq!(runs[1].message, "warmed 1 of 1 URLs");
    assert_eq!(origin.requests(), 1);
    assert_eq!(serve.stop().0, Some(0));
}

/// A run of cache-warmup warming `urls` from `origin` in a runtime with
/// `http` settings; the result message and the `HTTP_LIMIT` events.
async fn run_with(http: HttpSettings, origin: &Origin, urls: &[String]) -> (String, Vec<String>) {
    let runtime = Runtime::new(EngineSettings {
        max_concurrent_runs: 2,
        http,
        ..Default::default()
    })
    .unwrap();
    common::warm_compile_cache(WARMUP);
    let bytes = std::fs::read(common::component_path(WARMUP)).unwrap();
    let (component, _) = runtime
        .load_bytes_cached(
            bytes,
            WARMUP.into(),
            &cronwerk::runtime::CompileCache::open(&common::compile_cache_dir())
                .expect("the test compile cache is private"),
        )
        .await
        .expect("cache-warmup loads");
    let urls = urls.join(",");
    let mut request = common::request(&[("urls", &urls)]);
    request.limits.timeout = Duration::from_secs(30);
    request.grants.http_hosts = vec![format!("127.0.0.1:{}", origin.port).parse().unwrap()];
    let report = runtime.run(&component, request).await;
    let message = match &report.outcome {
        cronwerk::runtime::Outcome::Succeeded { message } => message.clone(),
        other => panic!("expected success, got {other:?}"),
    };
    let limits = report
        .events
        .iter()
        .filter(|e| e.code == "HTTP_LIMIT")
        .map(|e| e.message.clone())
        .collect();
    (message, limits)
}

#[tokio::test]
async fn requests_past_the_per_run_cap_are_refused_and_the_run_goes_on() {
    let origin = Origin::start();
    let urls: Vec<String> = (0..5)
        .map(|i| format!("http://127.0.0.1:{}/{i}", origin.port))
        .collect();
    let http = HttpSettings {
        max_requests_per_run: 3,
        ..Default::default()
    };
    let (message, limits) = run_with(http, &origin, &urls).await;
    assert_eq!(message, "warmed 3 of 5 URLs, 2 failed");
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert!(limits[0].contains("sent 3 HTTP requests"), "{}", limits[0]);
    assert_eq!(origin.requests(), 3);
}

#[tokio::test]
async fn response_bytes_past_the_per_run_cap_end_the_body_with_an_error() {
    let origin = Origin::start();
    let urls: Vec<String> = ["a", "b"]
        .iter()
        .map(|q| format!("http://127.0.0.1:{}/bytes/60000?{q}", origin.port))
        .collect();
    let http = HttpSettings {
        max_response_bytes_per_run: 100_000,
        ..Default::default()
    };
    let (message, limits) = run_with(http, &origin, &urls).await;
    assert_eq!(message, "warmed 1 of 2 URLs, 1 failed");
    assert_eq!(limits.len(), 1, "{limits:?}");
    assert!(limits[0].contains("HTTP response bodies"), "{}", limits[0]);

    // With the default cap both bodies arrive whole.
    let (message, limits) = run_with(HttpSettings::default(), &origin, &urls).await;
    assert_eq!(message, "warmed 2 of 2 URLs");
    assert!(limits.is_empty(), "{limits:?}");
}
