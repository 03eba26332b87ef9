//! The shells the completion tests load cronwerk's scripts into: bash is
//! on every Debian machine; zsh and fish come from Debian's packages,
//! installed here when missing.

use std::process::Command;

use anyhow::{Context as _, Result};

const SHELLS: [&str; 2] = ["zsh", "fish"];

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Installs zsh and fish if either is missing.
pub fn prepare() -> Result<()> {
    if SHELLS.iter().all(|s| installed(s)) {
        return Ok(());
    }
    eprintln!("xtask: installing Debian's zsh and fish for the shell completion tests");
    crate::apt_install(&SHELLS)
        .context("installing zsh and fish with apt-get (as root); or install them yourself")
}
