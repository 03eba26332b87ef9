//! Installing the toolchain pieces the build needs (targets, components).

use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

fn installed(kind: &str) -> Result<String> {
    let out = Command::new("rustup")
        .args([kind, "list", "--installed"])
        .output()
        .with_context(|| format!("running `rustup {kind} list` (is rustup installed?)"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Adds a rustup target unless it is already installed.
pub fn ensure_target(target: &str) -> Result<()> {
    if !installed("target")?.lines().any(|l| l.trim() == target) {
        run(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}

/// Adds rustup components (rustfmt, clippy) unless already installed.
pub fn ensure_components(names: &[&str]) -> Result<()> {
    let have = installed("component")?;
    for name in names {
        if !have.lines().any(|l| l.starts_with(&format!("{name}-"))) {
            run(Command::new("rustup").args(["component", "add", name]))?;
        }
    }
    Ok(())
}
