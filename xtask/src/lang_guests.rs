//! Building the example tasks written in Python, JavaScript and C.
//!
//! A Python or JavaScript build takes 5–20 s and produces a 12–18 MB
//! component, so each one is kept in the target directory with a fingerprint
//! of everything it was built from (its sources, the WIT contract and the
//! builder's version); while the fingerprint matches, the kept component is
//! reused instead of rebuilt. C builds in a second, but goes the same way so
//! a warm build runs no tool at all.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::c_tools::{self, BINDINGS_DIR};
use crate::lang_tools::{self, COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY_VERSION};
use crate::run_step;

/// The WIT folder every task is built against.
const WIT_DIR: &str = "wit";
const WORLD: &str = "scheduled-task";

/// How a guest's sources become a component.
#[derive(Clone, Copy)]
pub enum Builder {
    /// componentize-py; `module` is the app module in the guest's folder.
    Python { module: &'static str },
    /// componentize-js; `entry` is the ES module in the guest's folder.
    JavaScript { entry: &'static str },
    /// The guest's own Makefile, run with the C toolchain `c_tools` installs
    /// and the C bindings kept in `guest-c/bindings`.
    C,
}

impl Builder {
    /// Names the builder and its version, so a new pin rebuilds everything.
    fn tag(self) -> Result<String> {
        Ok(match self {
            Builder::Python { module } => {
                format!("componentize-py {COMPONENTIZE_PY_VERSION} world {WORLD} module {module}")
            }
            Builder::JavaScript { entry } => {
                format!("componentize-js {COMPONENTIZE_JS_VERSION} world {WORLD} entry {entry}")
            }
            Builder::C => format!("make world {WORLD}\n{}", c_tools::ensure()?.versions),
        })
    }

    /// What the build reads besides the guest's folder.
    fn shared_inputs(self) -> &'static [&'static str] {
        match self {
            Builder::Python { .. } | Builder::JavaScript { .. } => &[WIT_DIR],
            Builder::C => &[WIT_DIR, BINDINGS_DIR],
        }
    }
}

/// A guest built from a folder of sources by one of the builders.
pub struct Guest {
    /// The folder holding all of the guest's sources (and nothing generated).
    pub dir: &'static str,
    pub builder: Builder,
    /// File name of the component in the output folder.
    pub file: &'static str,
}

/// Returns the component for `guest`, building it into `cache` (a folder in
/// the target directory) unless the kept one was built from the same inputs.
pub fn build(guest: &Guest, cache: &Path) -> Result<Vec<u8>> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let output = cache.join(guest.file);
    let stamp = stamp_path(&output);
    let mut roots = vec![Path::new(guest.dir)];
    roots.extend(guest.builder.shared_inputs().iter().map(Path::new));
    let fingerprint = fingerprint(guest.builder, &roots)?;
    if is_fresh(&output, &stamp, &fingerprint) {
        return std::fs::read(&output).with_context(|| format!("reading {}", output.display()));
    }
    let started = Instant::now();
    let partial = output.with_extension("wasm.partial");
    let mut cmd = match guest.builder {
        Builder::Python { module } => {
            let tools = lang_tools::ensure()?;
            let mut cmd = Command::new(&tools.componentize_py);
            cmd.args([
                "-d",
                WIT_DIR,
                "-w",
                WORLD,
                "componentize",
                "-p",
                guest.dir,
                module,
                "-o",
            ])
            .arg(&partial);
            cmd
        }
        Builder::JavaScript { entry } => {
            let tools = lang_tools::ensure()?;
            let mut cmd = Command::new("node");
            cmd.arg(&tools.componentize_js)
                .arg(Path::new(guest.dir).join(entry))
                .args(["--wit", WIT_DIR, "--world-name", WORLD, "--out"])
                .arg(&partial);
            cmd
        }
        Builder::C => {
            let tools = c_tools::ensure()?;
            // A clean build each time: make's timestamps cannot see a new
            // compiler, the fingerprint can.
            let objects = output.with_extension("wasm.build");
            let _ = std::fs::remove_dir_all(&objects);
            let bindings = std::env::current_dir()?.join(BINDINGS_DIR);
            let mut cmd = Command::new("make");
            cmd.args(["--no-print-directory", "-C", guest.dir])
                .arg(format!("BUILD={}", objects.display()))
                .arg(format!("OUT={}", partial.display()))
                .arg(format!("BINDINGS={}", bindings.display()))
                .arg(format!(
                    "WASM_COMPONENT_LD={}",
                    tools.wasm_component_ld.display()
                ));
            cmd
        }
    };
    let what = format!("building {} from {}", guest.file, guest.dir);
    run_step(&what, &mut cmd)?;
    let bytes =
        std::fs::read(&partial).with_context(|| format!("reading {}", partial.display()))?;
    std::fs::rename(&partial, &output)
        .with_context(|| format!("moving into {}", output.display()))?;
    // The stamp goes last: an interrupted build leaves none, so it reruns.
    std::fs::write(&stamp, &fingerprint).with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!(
        "xtask: built {} ({:.1} MiB) in {:.1} s",
        guest.file,
        bytes.len() as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    Ok(bytes)
}

/// Where the fingerprint of `output`'s inputs is kept: beside it.
fn stamp_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_owned();
    name.push(".inputs-sha256");
    output.with_file_name(name)
}

fn is_fresh(output: &Path, stamp: &Path, fingerprint: &str) -> bool {
    output.is_file() && std::fs::read_to_string(stamp).is_ok_and(|s| s == fingerprint)
}

/// SHA-256 over the builder's tag and every source file under `roots`: per
/// root its number of files, then each file's path below the root and its
/// contents, in a fixed order. Where the checkout lives does not matter.
fn fingerprint(builder: Builder, roots: &[&Path]) -> Result<String> {
    let mut hash = Sha256::new();
    hash_field(&mut hash, builder.tag()?.as_bytes());
    for root in roots {
        let files = source_files(root)?;
        hash.update((files.len() as u64).to_le_bytes());
        for file in files {
            let relative = file.strip_prefix(root).unwrap_or(&file);
            hash_field(&mut hash, relative.to_string_lossy().as_bytes());
            hash_field(
                &mut hash,
                &std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
            );
        }
    }
    Ok(hex::encode(hash.finalize()))
}

/// Length-prefixed, so no two different inputs hash the same byte stream.
fn hash_field(hash: &mut Sha256, bytes: &[u8]) {
    hash.update((bytes.len() as u64).to_le_bytes());
    hash.update(bytes);
}

/// Files under `root`, sorted, leaving out what tools generate there
/// (componentize-py compiles the app it imports into `__pycache__`, a C
/// example's `make` run by hand builds into `build/` and `*.wasm`).
fn source_files(root: &Path) -> Result<Vec<PathBuf>> {
    const GENERATED: &[&str] = &["__pycache__", "node_modules", "build"];
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                if !GENERATED.iter().any(|g| entry.file_name() == *g) {
                    pending.push(path);
                }
            } else if path.extension().is_none_or(|e| e != "wasm") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PY: Builder = Builder::Python { module: "app" };

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    fn print(builder: Builder, dir: &tempfile::TempDir) -> String {
        fingerprint(builder, &[dir.path()]).unwrap()
    }

    #[test]
    fn fingerprint_is_stable_for_the_same_inputs() {
        let dir = folder(&[("app.py", "x = 1"), ("lib/util.py", "y = 2")]);
        assert_eq!(print(PY, &dir), print(PY, &dir));
    }

    #[test]
    fn fingerprint_follows_contents_names_and_builder() {
        let dir = folder(&[("app.py", "x = 1"), ("lib/util.py", "y = 2")]);
        let before = print(PY, &dir);

        std::fs::write(dir.path().join("lib/util.py"), "y = 3").unwrap();
        let edited = print(PY, &dir);
        assert_ne!(before, edited);

        std::fs::rename(
            dir.path().join("lib/util.py"),
            dir.path().join("lib/other.py"),
        )
        .unwrap();
        let renamed = print(PY, &dir);
        assert_ne!(edited, renamed);

        std::fs::write(dir.path().join("extra.py"), "").unwrap();
        assert_ne!(renamed, print(PY, &dir));

        assert_ne!(
            print(PY, &dir),
            print(Builder::JavaScript { entry: "app" }, &dir)
        );
    }

    #[test]
    fn fingerprint_covers_every_root() {
        let sources = folder(&[("app.py", "x = 1")]);
        let wit = folder(&[("task.wit", "package a:b;")]);
        let before = fingerprint(PY, &[sources.path(), wit.path()]).unwrap();
        std::fs::write(wit.path().join("task.wit"), "package a:c;").unwrap();
        assert_ne!(
            before,
            fingerprint(PY, &[sources.path(), wit.path()]).unwrap()
        );
    }

    #[test]
    fn fingerprint_ignores_where_the_folder_is() {
        let a = folder(&[("app.py", "x = 1"), ("lib/util.py", "y = 2")]);
        let b = folder(&[("app.py", "x = 1"), ("lib/util.py", "y = 2")]);
        assert_eq!(print(PY, &a), print(PY, &b));
    }

    /// Moving bytes between a file's name and its contents is a change.
    #[test]
    fn fingerprint_separates_names_from_contents() {
        let a = folder(&[("ab", "c")]);
        let b = folder(&[("a", "bc")]);
        assert_ne!(print(PY, &a), print(PY, &b));
    }

    /// Moving a file from one root to the next is a change.
    #[test]
    fn fingerprint_separates_roots() {
        let a1 = folder(&[("x", "1"), ("y", "2")]);
        let a2 = folder(&[]);
        let b1 = folder(&[("x", "1")]);
        let b2 = folder(&[("y", "2")]);
        assert_ne!(
            fingerprint(PY, &[a1.path(), a2.path()]).unwrap(),
            fingerprint(PY, &[b1.path(), b2.path()]).unwrap()
        );
    }

    #[test]
    fn generated_folders_are_not_inputs() {
        let dir = folder(&[("app.py", "x = 1")]);
        let before = print(PY, &dir);
        std::fs::create_dir_all(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/app.cpython-311.pyc"), "junk").unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/x")).unwrap();
        std::fs::write(dir.path().join("node_modules/x/index.js"), "junk").unwrap();
        std::fs::create_dir_all(dir.path().join("build")).unwrap();
        std::fs::write(dir.path().join("build/task.o"), "junk").unwrap();
        std::fs::write(dir.path().join("task.wasm"), "junk").unwrap();
        assert_eq!(before, print(PY, &dir));
    }

    #[test]
    fn fresh_only_with_output_and_matching_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("task.wasm");
        let stamp = stamp_path(&output);
        assert_eq!(stamp, dir.path().join("task.wasm.inputs-sha256"));

        assert!(!is_fresh(&output, &stamp, "abc"), "nothing built yet");
        std::fs::write(&stamp, "abc").unwrap();
        assert!(!is_fresh(&output, &stamp, "abc"), "stamp without output");
        std::fs::write(&output, b"\0asm").unwrap();
        assert!(is_fresh(&output, &stamp, "abc"));
        assert!(!is_fresh(&output, &stamp, "abd"), "inputs changed");
    }
}
