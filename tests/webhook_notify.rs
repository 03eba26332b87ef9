//! The JavaScript example `Acme.WebhookNotify` (`webhook-notify.wasm`), the
//! alerting half of follow-up runs: the real component through the real
//! `cronwerk exec` (and once through `serve`, as a follow-up of a failing
//! configuration) against a webhook receiver started here on 127.0.0.1 with
//! a free port. The receiver records each request before it answers, so
//! once the run has ended, whatever was posted has been recorded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::serve_env::Env;
use cronwerk::model::RunState;
use serde_json::{Value, json};

const NOTIFY: &str = "webhook-notify.wasm";

/// A token in the webhook's path, as Slack's carry one: it must never show
/// in what the run prints, logs or returns.
const TOKEN: &str = "T0001-B0002-s3cr3tt0k3n";

/// One request the webhook received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A webhook receiver on 127.0.0.1 answering every request with `status`
/// and a short body.
struct Webhook {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Webhook {
    fn start(status: u16, answer: &'static str) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let log = log.clone();
                std::thread::spawn(move || serve_one(stream, status, answer, &log));
            }
        });
        Webhook { port, received }
    }

    /// The grant that lets a task reach it.
    fn grant(&self) -> String {
        format!("--allow-http=127.0.0.1:{}", self.port)
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its URL, with a secret token in the path.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/{TOKEN}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn serve_one(stream: TcpStream, status: u16, answer: &str, log: &Mutex<Vec<Received>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _): &&(String, String)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        read_chunked(&mut reader)
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        body
    };
    // Recorded before the answer: a run that saw the answer was recorded.
    log.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body,
    });
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{answer}",
        answer.len()
    );
    let mut stream = stream;
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

fn read_chunked(reader: &mut impl BufRead) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap_or(0) == 0 {
            return body;
        }
        let size =
            usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16).unwrap_or(0);
        if size == 0 {
            // Trailers (none expected), then the blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            return body;
        }
        let start = body.len();
        body.resize(start + size, 0);
        if reader.read_exact(&mut body[start..]).is_err() {
            return body;
        }
        let mut crlf = [0; 2];
        let _ = reader.read_exact(&mut crlf);
    }
}

/// What one `cronwerk exec` of the component showed.
struct Exec {
    code: Option<i32>,
    report: Value,
    /// Everything it printed, to look for the token in.
    printed: String,
}

impl Exec {
    fn message(&self) -> &str {
        self.report["message"].as_str().unwrap()
    }

    /// The events the task wrote, as (level, code, message).
    fn task_events(&self) -> Vec<(String, String, String)> {
        self.report["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == "task")
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap().to_owned();
                (s("level"), s("code"), s("message"))
            })
            .collect()
    }

    fn host_codes(&self) -> Vec<&str> {
        self.report["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == "host")
            .map(|e| e["code"].as_str().unwrap())
            .collect()
    }

    fn assert_outcome(&self, outcome: &str, code: i32) {
        assert_eq!(self.report["outcome"], outcome, "{}", self.report);
        assert_eq!(self.code, Some(code), "{}", self.report);
    }

    fn assert_token_hidden(&self) {
        assert!(
            !self.printed.contains(TOKEN) && !self.printed.contains("/hooks/"),
            "the webhook URL's path shows in exec's output: {}",
            self.printed
        );
    }
}

/// `cronwerk exec webhook-notify.wasm --json` with `flags`.
fn exec(flags: &[String]) -> Exec {
    common::warm_compile_cache(NOTIFY);
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("exec")
        .arg(common::component_path(NOTIFY))
        .args(["--json", "--timeout", "30s", "--cache-dir"])
        .arg(common::compile_cache_dir())
        .args(flags)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("exec printed no JSON ({e}): {stdout}{stderr}"));
    Exec {
        code: out.status.code(),
        report,
        printed: format!("{stdout}{stderr}"),
    }
}

/// The ended run a follow-up is told about, as the host describes it.
fn ended_run() -> Value {
    json!({
        "configuration": "Nightly",
        "identifier": "Acme.Cleanup",
        "run_id": "01938f2a-7c1e-7d55-9e4b-2f1a0c3b5d77",
        "outcome": "failed",
        "message": "disk full",
        "trigger": "schedule",
        "attempt": 1,
        "scheduled_for": "2026-12-03T02:30:00.000Z",
        "started_at": "2026-12-03T02:30:00.004Z",
        "finished_at": "2026-12-03T02:30:01.250Z",
        "instance": "web-1"
    })
}

fn follow_up(run: &Value) -> Vec<String> {
    vec![
        "--payload-target=follow-up".to_owned(),
        format!("--payload-text={run}"),
    ]
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_follow_up_posts_the_ended_run_to_the_webhook() {
    let hook = Webhook::start(200, "ok");
    let mut flags = follow_up(&ended_run());
    flags.extend([
        format!("--config=url={}", hook.url()),
        hook.grant(),
        "--property=prefix=[prod] ".to_owned(),
        "--name=Page me".to_owned(),
    ]);
    let run = exec(&flags);

    run.assert_outcome("succeeded", 0);
    assert_eq!(run.message(), format!("notified {} (200)", hook.host()));
    let received = hook.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let posted = &received[0];
    assert_eq!(posted.method, "POST");
    assert_eq!(posted.path, format!("/hooks/{TOKEN}"));
    assert_eq!(posted.header("content-type"), Some("application/json"));
    assert_eq!(
        posted.json(),
        json!({
            "text": "[prod] Nightly failed: disk full \
                     (run 01938f2a-7c1e-7d55-9e4b-2f1a0c3b5d77, instance web-1)",
            "run": ended_run(),
        })
    );
    let events = run.task_events();
    assert_eq!(events.len(), 1, "one info line: {events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("info", "WEBHOOK_POSTED")
    );
    assert!(events[0].2.contains(&hook.host()), "{events:?}");
    run.assert_token_hidden();
}

/// The text stays one line whatever the ended run holds; fields the host
/// leaves null or empty are left out of it, and the run object is passed on
/// as it came.
#[test]
fn the_line_leaves_out_what_the_run_does_not_have() {
    let hook = Webhook::start(204, "");
    let mut ended = ended_run();
    ended["outcome"] = json!("abandoned");
    ended["message"] = json!("");
    ended["instance"] = Value::Null;
    ended["scheduled_for"] = Value::Null;
    ended["started_at"] = Value::Null;
    let mut flags = follow_up(&ended);
    flags.extend([format!("--config=url={}", hook.url()), hook.grant()]);
    let run = exec(&flags);
    run.assert_outcome("succeeded", 0);
    assert_eq!(run.message(), format!("notified {} (204)", hook.host()));
    let body = hook.received()[0].json();
    assert_eq!(
        body["text"],
        "Nightly abandoned (run 01938f2a-7c1e-7d55-9e4b-2f1a0c3b5d77)"
    );
    assert_eq!(body["run"], ended);

    let mut ended = ended_run();
    ended["message"] = json!("line one\n\tline two");
    let mut flags = follow_up(&ended);
    flags.extend([format!("--config=url={}", hook.url()), hook.grant()]);
    exec(&flags).assert_outcome("succeeded", 0);
    let body = hook.received()[1].json();
    assert_eq!(
        body["text"],
        "Nightly failed: line one line two (run 01938f2a-7c1e-7d55-9e4b-2f1a0c3b5d77, instance web-1)"
    );
    assert_eq!(body["run"]["message"], "line one\n\tline two");
}

/// An operator's manual run (no payload) posts a test message; the
/// configuration's `url` property wins over the identifier's setting.
#[test]
fn without_a_payload_it_posts_a_test_message_to_the_property_url() {
    let hook = Webhook::start(200, "ok");
    let setting = Webhook::start(200, "ok");
    let run = exec(&[
        format!("--config=url={}", setting.url()),
        setting.grant(),
        format!("--property=url={}", hook.url()),
        hook.grant(),
        "--name=Page me".to_owned(),
    ]);
    run.assert_outcome("succeeded", 0);
    assert_eq!(run.message(), format!("notified {} (200)", hook.host()));
    let received = hook.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(
        received[0].json(),
        json!({"text": "test notification from cronwerk configuration Page me", "run": null})
    );
    assert!(
        setting.received().is_empty(),
        "the setting's URL was used though the property overrides it"
    );
    run.assert_token_hidden();
}

#[test]
fn without_a_url_it_fails_saying_what_to_run_and_posts_nothing() {
    let hook = Webhook::start(200, "ok");
    let mut flags = follow_up(&ended_run());
    flags.push(hook.grant());
    let run = exec(&flags);
    run.assert_outcome("failed", 1);
    assert!(
        run.message()
            .contains("cronwerk config set --secret Acme.WebhookNotify url"),
        "{}",
        run.message()
    );
    assert!(run.message().contains("property url"), "{}", run.message());
    assert!(run.task_events().is_empty(), "{}", run.report);
    assert!(hook.received().is_empty(), "something was posted");

    // A URL that is not http(s) is refused without being echoed.
    let run = exec(&[
        format!("--config=url=ftp://127.0.0.1:{}/hooks/{TOKEN}", hook.port),
        hook.grant(),
    ]);
    run.assert_outcome("failed", 1);
    assert_eq!(
        run.message(),
        "the setting 'url' of Acme.WebhookNotify is not an http or https URL"
    );
    run.assert_token_hidden();
    assert!(hook.received().is_empty(), "something was posted");
}

#[test]
fn an_error_status_fails_the_run_naming_it() {
    let hook = Webhook::start(500, "internal error\n");
    let mut flags = follow_up(&ended_run());
    flags.extend([format!("--config=url={}", hook.url()), hook.grant()]);
    let run = exec(&flags);
    run.assert_outcome("failed", 1);
    assert_eq!(
        run.message(),
        format!(
            "the webhook at {} answered 500: internal error",
            hook.host()
        )
    );
    assert_eq!(hook.received().len(), 1, "posted once, not retried");
    run.assert_token_hidden();
}

#[test]
fn a_payload_that_is_not_a_follow_up_fails_and_posts_nothing() {
    let hook = Webhook::start(200, "ok");
    let base = [format!("--config=url={}", hook.url()), hook.grant()];
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec![
                "--payload-target=pages".to_owned(),
                format!("--payload-text={}", ended_run()),
            ],
            "payload target is 'pages', not 'follow-up': this task posts follow-up runs only",
        ),
        (
            args(&["--payload-target=follow-up", "--payload-text=[1, 2]"]),
            "the follow-up payload text is not a JSON object",
        ),
        (
            args(&["--payload-target=follow-up", "--payload-text=\"failed\""]),
            "the follow-up payload text is not a JSON object",
        ),
        (
            args(&["--payload-target=follow-up", "--payload-text=disk full"]),
            "the follow-up payload text is not a JSON object (it is not JSON)",
        ),
    ];
    for (payload, expected) in cases {
        let mut flags = base.to_vec();
        flags.extend(payload);
        let run = exec(&flags);
        run.assert_outcome("failed", 1);
        assert_eq!(run.message(), expected, "{flags:?}");
    }
    assert!(hook.received().is_empty(), "something was posted");
}

/// A request the host refuses: the run does not succeed, nothing arrives,
/// the host records why, and no output shows the URL.
///
/// The run should fail with "cannot post to the webhook at HOST: …", and
/// mostly does; but when the host refuses the request before the guest has
/// written its body (at once for an ungranted host, after a quick lookup
/// for a name resolving to loopback), the host drops the body and
/// componentize-js's StarlingMonkey (0.23.0, and its main branch) treats
/// the failed body write as fatal: "event loop error, but no exception is
/// pending", and the run is stopped (panic). Both outcomes are accepted
/// here until the host keeps a refused request's body writable.
/// A refused request is an error the task sees (the host drains the body
/// it was writing), so the run fails with the task's message, not a crash.
fn assert_refused(run: &Exec, hook: &Webhook, host: &str) {
    run.assert_outcome("failed", 1);
    assert!(
        run.message()
            .starts_with(&format!("cannot post to the webhook at {host}: ")),
        "{}",
        run.message()
    );
    assert_eq!(
        run.host_codes().first(),
        Some(&"HTTP_DENIED"),
        "{}",
        run.report
    );
    assert!(hook.received().is_empty(), "a refused request arrived");
    run.assert_token_hidden();
}

#[test]
fn a_webhook_the_host_refuses_is_never_reached() {
    let hook = Webhook::start(200, "ok");
    // No grant at all.
    let mut flags = follow_up(&ended_run());
    flags.push(format!("--config=url={}", hook.url()));
    assert_refused(&exec(&flags), &hook, &hook.host());

    // A granted name that resolves to loopback, without --allow-private-http.
    let host = format!("localhost:{}", hook.port);
    let mut flags = follow_up(&ended_run());
    flags.extend([
        format!("--config=url=http://{host}/hooks/{TOKEN}"),
        format!("--allow-http={host}"),
    ]);
    assert_refused(&exec(&flags), &hook, &host);
}

/// The whole feature under `serve`: a configuration that fails has
/// `--on-failure` name a disabled `Acme.WebhookNotify` configuration, which
/// posts what the host tells it about the failed run.
#[test]
fn serve_posts_a_failed_run_as_its_follow_up() {
    let hook = Webhook::start(200, "ok");
    common::warm_compile_cache(NOTIFY);
    common::warm_compile_cache("misbehave.wasm");
    let env = Env::new(&[NOTIFY, "misbehave.wasm"]);
    env.ok(&["config", "set", "Acme.WebhookNotify", "url", &hook.url()]);
    let serve = env.serve();
    let never = "2099-01-01T00:00:00Z";
    env.ok(&[
        "task",
        "add",
        "Page me",
        "--implementation",
        "Acme.WebhookNotify",
        "--at",
        never,
        "--disabled",
        "--timeout",
        "30s",
        &hook.grant(),
        "--property=prefix=[test] ",
    ]);
    env.ok(&[
        "task",
        "add",
        "Nightly",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--at",
        never,
        "--property=action=fail",
        "--property=text=disk full",
        "--on-failure",
        "Page me",
    ]);
    env.cli(&["task", "run", "Nightly"]);
    let failed = env.wait_runs("Nightly", "the failing run", |runs| {
        runs.iter().any(|r| r.finished_at.is_some())
    });
    assert_eq!(failed[0].state, RunState::Failed, "{failed:#?}");
    let notified = env.wait_runs("Page me", "the follow-up run", |runs| {
        runs.iter().any(|r| r.finished_at.is_some())
    });
    assert_eq!(notified.len(), 1, "{notified:#?}");
    assert_eq!(notified[0].state, RunState::Succeeded, "{notified:#?}");
    assert_eq!(
        notified[0].message,
        format!("notified {} (200)", hook.host())
    );

    let received = hook.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let body = received[0].json();
    let run_id = &failed[0].id;
    assert_eq!(
        body["text"],
        format!("[test] Nightly failed: disk full (run {run_id}, instance test-instance)")
    );
    assert_eq!(body["run"]["configuration"], "Nightly");
    assert_eq!(body["run"]["identifier"], "Cronwerk.Test.Misbehave");
    assert_eq!(body["run"]["run_id"], run_id.to_string());
    assert_eq!(body["run"]["outcome"], "failed");
    assert_eq!(body["run"]["message"], "disk full");
    assert_eq!(serve.stop().0, Some(0));
}
