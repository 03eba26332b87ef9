//! Installing the pinned Python and JavaScript component builders.
//!
//! The example tasks written in Python and JavaScript are built from source
//! like the Rust ones, so `cargo xtask test` needs componentize-py and
//! componentize-js. They are installed once into the cargo target directory
//! (never system-wide) at exactly the versions below, and reinstalled only
//! when a pin changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use crate::{run, run_step};

/// The componentize-py release installed from PyPI.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The componentize-js release; npm installs it (and its dependencies, as
/// locked) from the package.json and package-lock.json in this folder. That
/// package.json also names @bytecodealliance/preview2-shim: componentize-js
/// 0.23.0 imports it at run time but lists it only as a dev dependency.
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
pub const JS_PACKAGE_DIR: &str = "example-tasks/cache-warmup";

/// The installed builders.
pub struct LangTools {
    /// The folder holding both: `python/` (a virtual environment) and
    /// `node/node_modules`.
    pub dir: PathBuf,
    /// The `componentize-py` executable inside its virtual environment.
    pub componentize_py: PathBuf,
    /// componentize-js's command-line script, run with `node`.
    pub componentize_js: PathBuf,
}

/// Installs whatever is missing or at another version, once per process, and
/// says what is installed.
pub fn ensure() -> Result<&'static LangTools> {
    static TOOLS: OnceLock<LangTools> = OnceLock::new();
    if let Some(tools) = TOOLS.get() {
        return Ok(tools);
    }
    let dir = crate::target_dir()?.join("cronwerk-tools");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tools = LangTools {
        componentize_py: ensure_componentize_py(&dir.join("python"))?,
        componentize_js: ensure_componentize_js(&dir.join("node"))?,
        dir: dir.clone(),
    };
    eprintln!(
        "xtask: using componentize-py {COMPONENTIZE_PY_VERSION} and componentize-js \
         {COMPONENTIZE_JS_VERSION} (node {}) from {}",
        node_version()?,
        dir.display()
    );
    Ok(TOOLS.get_or_init(|| tools))
}

/// The Python template's requirements (componentize-py and pytest, pinned):
/// the tools venv holds exactly what a scaffolded project installs, so the
/// scaffold's own tests run with it.
pub const PYTHON_REQUIREMENTS: &str = "host/src/cli/templates/python/requirements.txt";

/// A virtual environment with the Python template's requirements, at `venv`.
fn ensure_componentize_py(venv: &Path) -> Result<PathBuf> {
    let exe = venv.join("bin/componentize-py");
    let requirements = read(Path::new(PYTHON_REQUIREMENTS))?;
    // A copy of the requirements the venv was installed from, written after
    // a successful install: a changed pin reinstalls.
    let marker = venv.join("installed-from.requirements.txt");
    if std::fs::read(&marker).ok().as_deref() == Some(&requirements[..])
        && installed_py_version(&exe).as_deref() == Some(COMPONENTIZE_PY_VERSION)
    {
        return Ok(exe);
    }
    eprintln!(
        "xtask: installing componentize-py {COMPONENTIZE_PY_VERSION} and pytest into {}",
        venv.display()
    );
    if !venv.join("bin/pip").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(venv)).context(
            "creating a Python virtual environment (the Python example needs python3 \
             with the venv module, 3.10 or newer)",
        )?;
    }
    let _ = std::fs::remove_file(&marker);
    run_step(
        &format!("installing componentize-py {COMPONENTIZE_PY_VERSION} and pytest"),
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(Path::new(PYTHON_REQUIREMENTS).canonicalize()?),
    )
    .context("installing componentize-py and pytest from PyPI")?;
    match installed_py_version(&exe) {
        Some(v) if v == COMPONENTIZE_PY_VERSION => {
            std::fs::write(&marker, &requirements)
                .with_context(|| format!("writing {}", marker.display()))?;
            Ok(exe)
        }
        other => bail!(
            "{} reports version {other:?}, but COMPONENTIZE_PY_VERSION is \
             {COMPONENTIZE_PY_VERSION}: {PYTHON_REQUIREMENTS} and the constant must agree",
            exe.display()
        ),
    }
}

fn installed_py_version(exe: &Path) -> Option<String> {
    let out = Command::new(exe).arg("--version").output().ok()?;
    out.status.success().then_some(())?;
    parse_py_version(&String::from_utf8_lossy(&out.stdout)).map(str::to_owned)
}

/// The version in `componentize-py --version` output (`componentize-py 0.25.1`).
fn parse_py_version(output: &str) -> Option<&str> {
    output.trim().strip_prefix("componentize-py ")
}

/// componentize-js and its locked dependencies in `dir`/node_modules.
fn ensure_componentize_js(dir: &Path) -> Result<PathBuf> {
    let package = Path::new(JS_PACKAGE_DIR);
    let manifest = read(&package.join("package.json"))?;
    let lock = read(&package.join("package-lock.json"))?;
    let module = dir.join("node_modules/@bytecodealliance/componentize-js");
    let cli = module.join("src/cli.js");
    // A copy of the lock file node_modules was installed from, written after
    // a successful install: a changed lock (a new pin) reinstalls.
    let marker = dir.join("installed-from.package-lock.json");
    let current = std::fs::read(&marker).ok().as_deref() == Some(&lock[..])
        && installed_js_version(&module).as_deref() == Some(COMPONENTIZE_JS_VERSION);
    if current && cli.exists() {
        return Ok(cli);
    }
    eprintln!(
        "xtask: installing componentize-js {COMPONENTIZE_JS_VERSION} into {}",
        dir.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(&marker);
    std::fs::write(dir.join("package.json"), manifest)?;
    std::fs::write(dir.join("package-lock.json"), &lock)?;
    // `npm install` with a lock file present installs the locked versions.
    // Not `npm ci`: npm 11 writes locks without other platforms' optional
    // native bindings and then `npm ci` rejects them as out of sync.
    run_step(
        &format!("installing componentize-js {COMPONENTIZE_JS_VERSION} with npm"),
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(dir),
    )
    .context("installing componentize-js with npm (the JavaScript example needs node and npm)")?;
    match installed_js_version(&module) {
        Some(v) if v == COMPONENTIZE_JS_VERSION => {
            std::fs::write(&marker, &lock)
                .with_context(|| format!("writing {}", marker.display()))?;
            Ok(cli)
        }
        other => bail!(
            "{} has version {other:?} after installing {COMPONENTIZE_JS_VERSION}; \
             does {JS_PACKAGE_DIR}/package.json pin it?",
            module.display()
        ),
    }
}

fn installed_js_version(module: &Path) -> Option<String> {
    let manifest = std::fs::read(module.join("package.json")).ok()?;
    package_version(&manifest)
}

/// The `version` field of a package.json.
fn package_version(manifest: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(manifest).ok()?;
    json["version"].as_str().map(str::to_owned)
}

fn node_version() -> Result<String> {
    let out = Command::new("node")
        .arg("--version")
        .output()
        .context("running `node --version` (the JavaScript example needs Node.js 18 or newer)")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_componentize_py_version() {
        assert_eq!(parse_py_version("componentize-py 0.25.1\n"), Some("0.25.1"));
        assert_eq!(parse_py_version("something else 1.0"), None);
    }

    fn workspace_file(path: &str) -> Vec<u8> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        std::fs::read(root.join(path)).unwrap()
    }

    /// The pin in the code and the one npm installs must be the same version,
    /// exactly (no range), or every build would reinstall.
    #[test]
    fn package_json_pins_componentize_js_exactly() {
        let manifest: serde_json::Value =
            serde_json::from_slice(&workspace_file(&format!("{JS_PACKAGE_DIR}/package.json")))
                .unwrap();
        assert_eq!(
            manifest["dependencies"]["@bytecodealliance/componentize-js"],
            COMPONENTIZE_JS_VERSION
        );
        let lock: serde_json::Value = serde_json::from_slice(&workspace_file(&format!(
            "{JS_PACKAGE_DIR}/package-lock.json"
        )))
        .unwrap();
        assert_eq!(
            lock["packages"]["node_modules/@bytecodealliance/componentize-js"]["version"],
            COMPONENTIZE_JS_VERSION
        );
    }

    #[test]
    fn reads_a_package_version() {
        assert_eq!(
            package_version(br#"{"name": "x", "version": "0.23.0"}"#).as_deref(),
            Some("0.23.0")
        );
        assert_eq!(package_version(b"not json"), None);
    }
}
