//! A real `cronwerk serve` with its HTTP API on a free loopback port, for
//! the API and browser tests: a temporary data directory and plugins
//! folder, the address read from what serve prints (never guessed), and the
//! token read from the data directory. Waits poll the API for a named
//! condition; nothing sleeps a fixed time.
#![allow(dead_code)]

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    dir: Option<tempfile::TempDir>,
    pub data: PathBuf,
    pub plugins: PathBuf,
    pub base: String,
    child: Child,
    pub lines: Receiver<String>,
    /// Every line serve printed to stderr until the API was up.
    pub startup: Vec<String>,
    agent: ureq::Agent,
}

/// A status and a JSON body (Null when there is none).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

pub fn cronwerk() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cronwerk"))
}

impl Server {
    /// Starts serve with `components` (file names from the built examples)
    /// in its plugins folder.
    pub fn start(components: &[&str]) -> Server {
        Self::start_with(components, &[])
    }

    pub fn start_with(components: &[&str], extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        for c in components {
            std::fs::copy(super::common::component_path(c), plugins.join(c)).unwrap();
        }
        Self::start_in(dir, data, plugins, extra)
    }

    fn start_in(dir: tempfile::TempDir, data: PathBuf, plugins: PathBuf, extra: &[&str]) -> Server {
        let (child, lines, startup, base) = spawn(&data, &plugins, extra);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            // serve closes a keep-alive connection idle for 10 s; a client
            // that keeps one longer (ureq's default is 15 s) can send on a
            // connection the server is closing.
            .max_idle_age(Duration::from_secs(5))
            .build()
            .into();
        Server {
            dir: Some(dir),
            data,
            plugins,
            base: base.expect("serve printed no API address"),
            child,
            lines,
            startup,
            agent,
        }
    }

    /// Stops this serve and starts another on the same directories.
    pub fn restart(mut self) -> Server {
        stop(&mut self.child);
        let dir = self.dir.take().expect("a server owns its directory");
        Self::start_in(dir, self.data.clone(), self.plugins.clone(), &[])
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("api-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs the CLI on this server's data directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        cronwerk()
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()
            .unwrap()
    }

    /// A request; `token` is sent as a bearer token when given.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let url = self.url(path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(a) = &auth {
            builder = builder.header("Authorization", a);
        }
        let send = |builder: ureq::http::request::Builder| match body {
            Some(b) => {
                let request = builder
                    .header("Content-Type", "application/json")
                    .body(serde_json::to_vec(b).unwrap())
                    .unwrap();
                self.agent.run(request)
            }
            None => self.agent.run(builder.body(()).unwrap()),
        };
        let mut response = match send(builder) {
            // HTTP/1.1 lets a server close a kept-alive connection just as a
            // request goes out on it; a GET changes nothing, so it is sent
            // again once, on a new connection (as browsers do).
            Err(ureq::Error::Io(e)) if method == "GET" => {
                eprintln!("{method} {path}: {e}; sending it again");
                let mut again = ureq::http::Request::builder().method(method).uri(&url);
                if let Some(a) = &auth {
                    again = again.header("Authorization", a);
                }
                send(again)
            }
            other => other,
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply { status, body }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None, None)
    }

    /// A GET that must succeed; its body.
    pub fn get_ok(&self, path: &str) -> Value {
        let r = self.get(path);
        assert_eq!(r.status, 200, "GET {path}: {:?}", r.body);
        r.body
    }

    /// A change with the right token that must succeed with `status`.
    pub fn send_ok(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let r = self.call(method, path, Some(&self.token()), body);
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
        r.body
    }

    /// Waits until every component in the plugins folder serves: a serving
    /// instance compiles what its cache lacks in the background, and a run
    /// started before that fails with "no component implements".
    pub fn wait_loaded(&self) {
        self.wait_for("every component loaded", "/api/plugins", |p| {
            p.as_array()
                .is_some_and(|all| !all.is_empty() && all.iter().all(|x| x["status"] == "ok"))
        });
    }

    /// Polls `GET path` until `done` holds for its body.
    pub fn wait_for(&self, what: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body = self.get_ok(path);
            if done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last GET {path}: {body:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens a Server-Sent Events stream; its `data:` lines arrive on the
    /// receiver (with the `id:`/`event:` lines before them).
    pub fn stream(&self, path: &str) -> Receiver<String> {
        let url = self.url(path);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = agent.get(&url).call().unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let reader = std::io::BufReader::new(response.into_body().into_reader());
            for line in reader.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// The serve process's id (for its memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, and waits for the exit.
    pub fn stop(mut self) -> Option<i32> {
        stop(&mut self.child)
    }
}

/// Reads SSE lines until a `data:` line whose JSON satisfies `done`.
pub fn next_data(lines: &Receiver<String>, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out waiting for {what} on the stream"));
        if let Some(data) = line.strip_prefix("data:") {
            let value: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
            if done(&value) {
                return value;
            }
        }
    }
}

fn stop(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().ok().and_then(|s| s.code())
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test shows what serve said, and whether it was still
        // running, to tell a server that died from a client that failed.
        if std::thread::panicking() {
            let running = matches!(self.child.try_wait(), Ok(None));
            eprintln!(
                "serve was {}running; it said:",
                if running { "" } else { "no longer " }
            );
            for line in self.lines.try_iter() {
                eprintln!("  {line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts serve and reads its stderr until it printed its API address (or
/// said it is serving without one).
pub fn spawn(
    data: &Path,
    plugins: &Path,
    extra: &[&str],
) -> (Child, Receiver<String>, Vec<String>, Option<String>) {
    let listen: &[&str] = if extra.iter().any(|a| a.starts_with("--listen")) {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut child = cronwerk()
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--name", "api-test", "--grace", "2s"])
        .arg("--plugins")
        .arg(plugins)
        .args(listen)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut startup = Vec::new();
    loop {
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            // Exited (or hung) before saying where it listens.
            Err(_) => return (child, rx, startup, None),
        };
        startup.push(line.clone());
        if let Some(rest) = line.split("API and dashboard on ").nth(1) {
            let base = rest.trim().trim_end_matches('/').to_owned();
            return (child, rx, startup, Some(base));
        }
        if line.contains("API and dashboard are off") {
            return (child, rx, startup, None);
        }
    }
}
