//! What the dashboard's browser test needs besides Rust: Debian's Chromium
//! (Playwright's own browser download does not work here, and is not
//! wanted: the browser comes from the distribution) and the test script's
//! pinned playwright-core, installed from its lock file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::run;

/// The folder of the browser test script (tests/browser).
pub const SCRIPT_DIR: &str = "tests/browser";

const CHROMIUM: &str = "/usr/bin/chromium";

/// Makes sure Chromium and the script's packages are there; returns the
/// browser to use.
pub fn prepare() -> Result<PathBuf> {
    let chromium = match std::env::var_os("CRONWERK_CHROMIUM") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(CHROMIUM),
    };
    if !chromium.is_file() {
        install_chromium()?;
    }
    if !chromium.is_file() {
        bail!(
            "{} is still missing after installing Debian's chromium package",
            chromium.display()
        );
    }
    let node = Command::new("node")
        .arg("--version")
        .output()
        .context("running `node --version`: the browser test needs Node.js 20 or newer")?;
    let version = String::from_utf8_lossy(&node.stdout).trim().to_owned();
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 20 {
        bail!("the browser test needs Node.js 20 or newer; `node --version` says '{version}'");
    }
    // `npm ci` installs exactly what package-lock.json pins.
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(Path::new(SCRIPT_DIR)))?;
    Ok(chromium)
}

fn install_chromium() -> Result<()> {
    eprintln!("xtask: installing Debian's chromium for the dashboard's browser test");
    crate::apt_install(&["chromium"]).context(
        "installing chromium with apt-get (as root); or install it yourself and set \
             CRONWERK_CHROMIUM to the browser",
    )
}
