//! The C toolchain, and the check that keeps the C bindings current.
//!
//! Tasks in C (`example-tasks/disk-report`, `cronwerk new --lang c`) build
//! with Debian's clang, lld and WASI libc, and link into a component with
//! wasm-component-ld (rustup ships one inside every toolchain). They use the
//! C bindings kept in `guest-c/bindings`, so no C author needs wit-bindgen;
//! `cargo xtask test` regenerates those bindings with the wit-bindgen pinned
//! here (installed into the target directory, reinstalled only when the pin
//! changes) and fails when they differ from the kept ones, so a change to
//! `wit/task.wit` cannot leave them stale.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use crate::{apt_install, cargo, run_step};

/// The wit-bindgen-cli release the kept bindings are generated with.
pub const WIT_BINDGEN_VERSION: &str = "0.61.1";
/// The wasm-component-ld release installed when the Rust toolchain has
/// none; the one in Rust 1.95's toolchain.
pub const WASM_COMPONENT_LD_VERSION: &str = "0.5.21";
/// The kept bindings and the files wit-bindgen generates there.
pub const BINDINGS_DIR: &str = "guest-c/bindings";
pub const BINDINGS_FILES: [&str; 3] = [
    "scheduled_task.c",
    "scheduled_task.h",
    "scheduled_task_component_type.o",
];
const WIT_FILE: &str = "wit/task.wit";
const WORLD: &str = "scheduled-task";
/// What a C task's build needs from Debian 12.
const DEBIAN_PACKAGES: [&str; 5] = [
    "clang",
    "lld",
    "wasi-libc",
    "libclang-rt-dev-wasm32",
    "make",
];

/// The tools a C task builds with.
pub struct CTools {
    /// `<target>/cronwerk-tools/c/bin/wasm-component-ld`: a link to the
    /// Rust toolchain's copy, or one installed there.
    pub wasm_component_ld: PathBuf,
    /// The versions of clang, wasm-ld, wasm-component-ld and the Debian
    /// packages, one per line: a build's fingerprint includes them.
    pub versions: String,
}

/// The folder the C tools live in (`CRONWERK_TEST_TOOLS/c` for the tests).
fn tools_dir() -> Result<PathBuf> {
    Ok(crate::target_dir()?.join("cronwerk-tools/c"))
}

/// Installs whatever of the C toolchain is missing, once per process, and
/// says what is there.
pub fn ensure() -> Result<&'static CTools> {
    static TOOLS: OnceLock<CTools> = OnceLock::new();
    if let Some(tools) = TOOLS.get() {
        return Ok(tools);
    }
    let dir = tools_dir()?;
    std::fs::create_dir_all(dir.join("bin"))
        .with_context(|| format!("creating {}", dir.join("bin").display()))?;
    if let Err(why) = probe_clang(&dir) {
        eprintln!(
            "xtask: clang cannot build for wasm32-wasi yet ({why:#}); installing {}",
            DEBIAN_PACKAGES.join(" ")
        );
        apt_install(&DEBIAN_PACKAGES).context(
            "installing Debian's clang, lld and WASI libc for the C example (needs apt-get and root)",
        )?;
        probe_clang(&dir).context("clang still cannot build for wasm32-wasi after installing")?;
    }
    let wasm_component_ld = ensure_wasm_component_ld(&dir)?;
    let mut versions = vec![
        first_line(&output(Command::new("clang").arg("--version"))?),
        first_line(&output(Command::new("wasm-ld").arg("--version"))?),
        first_line(&output(Command::new(&wasm_component_ld).arg("--version"))?),
    ];
    for package in &DEBIAN_PACKAGES[2..4] {
        // Not Debian (no dpkg): the compiler's version has to do.
        if let Ok(v) = output(Command::new("dpkg-query").args(["-W", "-f", "${Version}", package]))
        {
            versions.push(format!("{package} {v}"));
        }
    }
    let tools = CTools {
        wasm_component_ld,
        versions: versions.join("\n"),
    };
    eprintln!(
        "xtask: building C with {}",
        tools.versions.replace('\n', ", ")
    );
    Ok(TOOLS.get_or_init(|| tools))
}

/// Compiles and links a small reactor with stdio: clang, wasm-ld, WASI libc
/// and the wasm32 builtins are all there.
fn probe_clang(dir: &Path) -> Result<()> {
    let source = dir.join("probe.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\nint probe(void) { return printf(\"%d\\n\", 1); }\n",
    )
    .with_context(|| format!("writing {}", source.display()))?;
    let out = Command::new("clang")
        .args([
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-Wl,--strip-debug",
        ])
        .arg(&source)
        .arg("-o")
        .arg(dir.join("probe.wasm"))
        .output()
        .context("running clang")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    if Command::new("make").arg("--version").output().is_err() {
        bail!("make is not installed");
    }
    Ok(())
}

/// `dir/bin/wasm-component-ld`, linked to the Rust toolchain's copy (found
/// anew each time, so a toolchain update is followed), else installed there
/// with cargo at [`WASM_COMPONENT_LD_VERSION`].
fn ensure_wasm_component_ld(dir: &Path) -> Result<PathBuf> {
    let exe = dir.join("bin/wasm-component-ld");
    if let Some(shipped) = rustup_wasm_component_ld()? {
        let _ = std::fs::remove_file(&exe);
        std::os::unix::fs::symlink(&shipped, &exe)
            .with_context(|| format!("linking {} to {}", exe.display(), shipped.display()))?;
        return Ok(exe);
    }
    // A file (not a link to a toolchain that went away) is one cargo installed.
    let installed = std::fs::symlink_metadata(&exe).is_ok_and(|m| m.file_type().is_file())
        && output(Command::new(&exe).arg("--version"))
            .is_ok_and(|v| v.trim() == format!("wasm-component-ld {WASM_COMPONENT_LD_VERSION}"));
    if !installed {
        let _ = std::fs::remove_file(&exe);
        run_step(
            &format!("installing wasm-component-ld {WASM_COMPONENT_LD_VERSION}"),
            Command::new(cargo())
                .args(["install", "--locked", "--quiet", "--root"])
                .arg(dir)
                .arg(format!("wasm-component-ld@{WASM_COMPONENT_LD_VERSION}")),
        )
        .context("installing wasm-component-ld from crates.io (the Rust toolchain has none)")?;
    }
    Ok(exe)
}

/// The wasm-component-ld inside the active Rust toolchain, if it has one.
fn rustup_wasm_component_ld() -> Result<Option<PathBuf>> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = output(Command::new(&rustc).args(["--print", "sysroot"]))?;
    let verbose = output(Command::new(&rustc).arg("-vV"))?;
    let host = verbose
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("`rustc -vV` names no host")?;
    let exe = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("bin/wasm-component-ld");
    Ok(exe.is_file().then_some(exe))
}

/// wit-bindgen at [`WIT_BINDGEN_VERSION`], in `dir/bin`.
fn ensure_wit_bindgen(dir: &Path) -> Result<PathBuf> {
    let exe = dir.join("bin/wit-bindgen");
    let wanted = format!("wit-bindgen-cli {WIT_BINDGEN_VERSION}");
    if output(Command::new(&exe).arg("--version")).is_ok_and(|v| v.trim() == wanted) {
        return Ok(exe);
    }
    run_step(
        &format!("installing wit-bindgen-cli {WIT_BINDGEN_VERSION} (C only; minutes, once)"),
        Command::new(cargo())
            .args(["install", "--locked", "--quiet", "--force", "--root"])
            .arg(dir)
            .arg(format!("wit-bindgen-cli@{WIT_BINDGEN_VERSION}"))
            .args(["--no-default-features", "--features", "c"]),
    )
    .context("installing wit-bindgen-cli from crates.io")?;
    let version = output(Command::new(&exe).arg("--version"))?;
    if version.trim() != wanted {
        bail!(
            "{} reports {:?} after installing {wanted}",
            exe.display(),
            version.trim()
        );
    }
    Ok(exe)
}

/// Regenerates the C bindings from `wit/task.wit` with the pinned
/// wit-bindgen and fails unless they are byte for byte the kept ones.
pub fn check_bindings() -> Result<()> {
    let dir = tools_dir()?;
    let wit_bindgen = ensure_wit_bindgen(&dir)?;
    let fresh = dir.join("regenerated");
    let _ = std::fs::remove_dir_all(&fresh);
    let out = Command::new(&wit_bindgen)
        .args(["c", WIT_FILE, "--world", WORLD, "--out-dir"])
        .arg(&fresh)
        .output()
        .with_context(|| format!("running {}", wit_bindgen.display()))?;
    if !out.status.success() {
        bail!(
            "{} c {WIT_FILE} failed: {}",
            wit_bindgen.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let regenerate = format!(
        "regenerate them with `{} c {WIT_FILE} --world {WORLD} --out-dir {BINDINGS_DIR}` \
         and commit the result",
        wit_bindgen.display()
    );
    let mut generated: Vec<String> = std::fs::read_dir(&fresh)
        .with_context(|| format!("listing {}", fresh.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    generated.sort();
    if generated != BINDINGS_FILES {
        bail!(
            "wit-bindgen {WIT_BINDGEN_VERSION} now generates {generated:?}, not {BINDINGS_FILES:?}: \
             update BINDINGS_FILES in xtask/src/c_tools.rs and what cronwerk new copies, then \
             {regenerate}"
        );
    }
    for file in BINDINGS_FILES {
        let kept = Path::new(BINDINGS_DIR).join(file);
        let kept_bytes =
            std::fs::read(&kept).with_context(|| format!("reading {}", kept.display()))?;
        if std::fs::read(fresh.join(file))? != kept_bytes {
            bail!(
                "{} is not what wit-bindgen-cli {WIT_BINDGEN_VERSION} generates from {WIT_FILE} \
                 (did the contract change?): {regenerate}",
                kept.display()
            );
        }
    }
    eprintln!("xtask: {BINDINGS_DIR} matches {WIT_FILE} (wit-bindgen-cli {WIT_BINDGEN_VERSION})");
    Ok(())
}

/// A command's stdout, failing with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept bindings are the files the check compares, and the README
    /// beside them names the pinned wit-bindgen.
    #[test]
    fn kept_bindings_are_complete_and_name_the_pin() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let dir = root.join(BINDINGS_DIR);
        for file in BINDINGS_FILES {
            assert!(dir.join(file).is_file(), "{file}");
        }
        let header = std::fs::read_to_string(dir.join("scheduled_task.h")).unwrap();
        assert!(
            header.starts_with(&format!(
                "// Generated by `wit-bindgen` {WIT_BINDGEN_VERSION}."
            )),
            "{}",
            first_line(&header)
        );
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(
            readme.contains(&format!("wit-bindgen-cli@{WIT_BINDGEN_VERSION}")),
            "{readme}"
        );
    }
}
