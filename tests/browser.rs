//! The dashboard in a real browser: `cronwerk serve` with the example
//! components (and one broken file), driven by tests/browser/dashboard.mjs
//! in headless Chromium. The script creates a task through the form, sees
//! it run, presses Run now, follows the event log live and fails on any
//! console error; its screenshots of every page are kept in the target
//! directory (cronwerk-artifacts/screenshots). `cargo xtask test` installs
//! Chromium and the script's pinned playwright-core first.

mod common;
#[path = "support/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;

use server::Server;

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Where the screenshots go: $CRONWERK_ARTIFACTS, else the target directory
/// this test binary was built into.
fn screenshots() -> PathBuf {
    let base = match std::env::var_os("CRONWERK_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .unwrap()
            .ancestors()
            .nth(3)
            .expect("the test binary lives in TARGET/PROFILE/deps")
            .join("cronwerk-artifacts"),
    };
    base.join("screenshots")
}

fn chromium() -> PathBuf {
    std::env::var_os("CRONWERK_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

#[test]
fn an_operator_creates_runs_and_watches_a_task_in_the_dashboard() {
    let dir = script_dir();
    let browser = chromium();
    assert!(
        dir.join("node_modules/playwright-core").is_dir() && browser.is_file(),
        "the browser test needs Chromium at {} and `npm ci` in {}: run it with `cargo xtask test`, \
         which installs both",
        browser.display(),
        dir.display()
    );
    let s = Server::start(&["hello.wasm", "wat-hello.wasm", "misbehave.wasm"]);
    std::fs::write(s.plugins.join("broken.wasm"), b"not a component").unwrap();
    s.wait_for("the broken file to be reported", "/api/plugins", |p| {
        p.as_array()
            .unwrap()
            .iter()
            .any(|p| p["status"] == "failed")
    });
    let shots = screenshots();
    let out = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .current_dir(&dir)
        .env("CRONWERK_URL", &s.base)
        .env("CRONWERK_TOKEN", s.token())
        .env("CRONWERK_SCREENSHOTS", &shots)
        .env("CRONWERK_CHROMIUM", &browser)
        .output()
        .expect("running node (install Node.js 20 or newer)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the dashboard script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    for page in [
        "01-tasks-empty",
        "02-task-form-validation",
        "03-task-form",
        "04-tasks",
        "05-task-detail",
        "06-events",
        "07-plugins",
        "08-farm",
    ] {
        let file = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} is missing or empty", file.display());
    }
}
