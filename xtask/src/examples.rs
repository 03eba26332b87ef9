//! Building every example and test component from source.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::lang_guests::{self, Builder, Guest};
use crate::{cargo, run, target_dir, toolchain};

const TARGET: &str = "wasm32-wasip2";

/// Rust guests: (cargo package, file name in the output folder).
const RUST_GUESTS: &[(&str, &str)] = &[
    ("hello", "hello.wasm"),
    ("misbehave", "misbehave.wasm"),
    ("file-cleanup", "file-cleanup.wasm"),
];

/// Tasks written in WebAssembly text: (source, file name in the output folder).
const WAT_GUESTS: &[(&str, &str)] = &[("example-tasks/wat-hello/task.wat", "wat-hello.wasm")];

/// Tasks written in Python, JavaScript and C, built by their language's
/// component builder (kept in the target directory between builds).
const SOURCE_GUESTS: &[Guest] = &[
    Guest {
        dir: "example-tasks/report-digest",
        builder: Builder::Python { module: "app" },
        file: "report-digest.wasm",
    },
    Guest {
        dir: "example-tasks/cache-warmup",
        builder: Builder::JavaScript { entry: "task.js" },
        file: "cache-warmup.wasm",
    },
    // Shares cache-warmup's builder: the one componentize-js that
    // lang_tools installs from cache-warmup's package.json builds both.
    Guest {
        dir: "example-tasks/webhook-notify",
        builder: Builder::JavaScript { entry: "task.js" },
        file: "webhook-notify.wasm",
    },
    Guest {
        dir: "example-tasks/disk-report",
        builder: Builder::C,
        file: "disk-report.wasm",
    },
];

/// Builds all examples into `out`.
pub fn build(out: &Path) -> Result<()> {
    toolchain::ensure_target(TARGET)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--release", "--quiet", "--target", TARGET]);
    for (package, _) in RUST_GUESTS {
        cmd.args(["-p", package]);
    }
    run(&mut cmd)?;
    let built = target_dir()?.join(TARGET).join("release");
    for (package, file) in RUST_GUESTS {
        let from = built.join(artifact(package));
        copy_if_changed(&from, &out.join(file))?;
    }
    for (source, file) in WAT_GUESTS {
        let bytes = wat::parse_file(source).with_context(|| format!("assembling {source}"))?;
        write_if_changed(&out.join(file), &bytes)?;
    }
    let kept = target_dir()?.join("cronwerk-lang-builds");
    for guest in SOURCE_GUESTS {
        let bytes = lang_guests::build(guest, &kept)?;
        write_if_changed(&out.join(guest.file), &bytes)?;
    }
    eprintln!("xtask: examples built into {}", out.display());
    Ok(())
}

/// The file cargo writes for a cdylib package: its crate name, in which
/// `-` becomes `_`.
fn artifact(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_if_changed(to, &bytes)
}

/// Leaves an identical file untouched, so a watching host sees no change.
fn write_if_changed(to: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(to).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    // Write-then-rename: a host watching the folder never sees half a file.
    let tmp = to.with_extension("wasm.partial");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("moving into {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uses_the_crate_name() {
        assert_eq!(artifact("hello"), "hello.wasm");
        assert_eq!(artifact("file-cleanup"), "file_cleanup.wasm");
    }
}
