//! `cronwerk new` end to end: each language's template is scaffolded by the
//! real binary into a temporary folder outside this repository, built there
//! with the language's real toolchain, and run with `cronwerk exec --json`.
//! A run must show what the template promises (its event, result and state
//! carried forward), and a run with a bad property its error.
//!
//! Tools: Rust needs the wasm32-wasip2 target. Python and JavaScript use the
//! builders `cargo xtask test` installs (it names their folder in
//! `CRONWERK_TEST_TOOLS`), or for Python a componentize-py on the PATH, at
//! the versions the templates pin. C needs clang for wasm32-wasi, wasm-ld,
//! make and wasm-component-ld (`CRONWERK_TEST_TOOLS`/c/bin holds the one
//! `cargo xtask test` found or installed; otherwise the Makefile looks in
//! the Rust toolchain). A missing tool skips that language,
//! except under `CRONWERK_REQUIRE_TOOLS=1` (set by `cargo xtask test`),
//! where it fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cronwerk");

/// Where these tests keep what is worth keeping between runs (the Rust
/// dependencies' build): beside the binary, in the cargo target directory.
fn work_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in TARGET/PROFILE/")
        .join("cronwerk-new-task")
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`; panics with its output unless it succeeds.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {cmd:?}: {e}"));
    assert!(out.status.success(), "{what} failed: {}", show(&out));
    out
}

/// Reports a missing tool: a failure under CRONWERK_REQUIRE_TOOLS=1, a
/// skipped language otherwise.
fn missing(lang: &str, why: &str) {
    if std::env::var_os("CRONWERK_REQUIRE_TOOLS").is_some_and(|v| v == "1") {
        panic!("cannot test the {lang} template: {why} (CRONWERK_REQUIRE_TOOLS=1 requires it)");
    }
    eprintln!("skipping the {lang} template: {why}");
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// The folder `cargo xtask test` installs the language tools into.
fn test_tools() -> Option<PathBuf> {
    std::env::var_os("CRONWERK_TEST_TOOLS").map(PathBuf::from)
}

/// A project scaffolded by `cronwerk new` in a temporary folder, which
/// lives as long as this value.
struct Scaffold {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    identifier: String,
}

fn scaffold(lang: &str, name: &str, identifier: &str) -> Scaffold {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    let out = run_ok(
        Command::new(BIN)
            .args([
                "new",
                "--lang",
                lang,
                name,
                "--identifier",
                identifier,
                "--dir",
            ])
            .arg(&dir),
        "cronwerk new",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Next steps"), "{stdout}");
    assert!(stdout.contains("cronwerk exec "), "{stdout}");
    // The contract travels with the project, exactly as the host has it.
    let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/task.wit");
    assert_eq!(
        std::fs::read_to_string(dir.join("wit/task.wit")).unwrap(),
        std::fs::read_to_string(wit).unwrap()
    );
    Scaffold {
        _tmp: tmp,
        dir,
        identifier: identifier.to_owned(),
    }
}

/// One `cronwerk exec --json` of `wasm`: its exit code and report.
fn exec(wasm: &Path, cache: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(BIN)
        .arg("exec")
        .arg(wasm)
        .args(["--json", "--name", "nightly", "--cache-dir"])
        .arg(cache)
        .args(args)
        .output()
        .expect("running cronwerk exec");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("exec printed no JSON ({e}): {}", show(&out)));
    (out.status.code().unwrap_or(-1), report)
}

/// (level, source, code, message) of each event.
fn events(report: &serde_json::Value) -> Vec<[String; 4]> {
    report["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| ["level", "source", "code", "message"].map(|k| e[k].as_str().unwrap().to_owned()))
        .collect()
}

fn state(report: &serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(report["state"].clone()).unwrap()
}

/// What every template does: greet (event GREETING), count runs in state,
/// report the count; fail on an empty greeting.
fn check_template_runs(project: &Scaffold, wasm: &Path) {
    assert!(wasm.is_file(), "the build left no {}", wasm.display());
    let cache = tempfile::tempdir().unwrap();

    let (code, report) = exec(
        wasm,
        cache.path(),
        &["--property", "greeting=Hi", "--state", "runs=41"],
    );
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    assert_eq!(report["identifier"], project.identifier.as_str());
    assert_eq!(report["version"], "0.1.0");
    assert_eq!(report["message"], "greeted nightly, run 42");
    assert_eq!(
        events(&report),
        [["info", "task", "GREETING", "Hi, nightly!"].map(String::from)]
    );
    assert_eq!(
        state(&report),
        BTreeMap::from([("runs".into(), "42".into())])
    );

    let (code, report) = exec(wasm, cache.path(), &["--property", "greeting="]);
    assert_eq!(code, 1, "a failed run exits 1: {report:#}");
    assert_eq!(report["outcome"], "failed", "{report:#}");
    assert_eq!(
        report["message"],
        "property 'greeting' is empty: set a word such as Hi, or leave it out"
    );
    // The failure is also the run's one host event, where `events` shows it.
    assert_eq!(
        events(&report),
        [[
            "error",
            "host",
            "RUN_FAILED",
            "property 'greeting' is empty: set a word such as Hi, or leave it out"
        ]
        .map(String::from)]
    );
    assert_eq!(state(&report), BTreeMap::new());

    // The cases the project comes with pass with `cronwerk test`.
    let out = run_ok(
        Command::new(env!("CARGO_BIN_EXE_cronwerk"))
            .arg("test")
            .arg(wasm)
            .args(["--cases", "cases.toml", "--cache-dir"])
            .arg(cache.path())
            .current_dir(&project.dir),
        "cronwerk test with the project's cases",
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("2 passed, 0 failed"), "{report}");
}

#[test]
fn rust_template_builds_and_runs() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = run_ok(
        Command::new(rustc).args(["--print", "target-libdir", "--target", "wasm32-wasip2"]),
        "rustc --print target-libdir",
    );
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    if !libdir.is_dir() {
        return missing(
            "Rust",
            "the wasm32-wasip2 target is not installed (rustup target add wasm32-wasip2)",
        );
    }
    let project = scaffold("rust", "new-rust-task", "Test.NewRust");
    // Outside this workspace, with its own lock file, like a newcomer's
    // build; the dependencies' build is kept between test runs.
    let target = work_dir().join("rust-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_ok(
        Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&project.dir)
            .env("CARGO_TARGET_DIR", &target),
        "cargo build of the Rust template",
    );
    check_template_runs(
        &project,
        &target.join("wasm32-wasip2/release/new_rust_task.wasm"),
    );
    // Its own tests pass natively, against the SDK's in-memory host.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let tested = run_ok(
        Command::new(cargo)
            .args(["test", "--quiet"])
            .current_dir(&project.dir)
            .env("CARGO_TARGET_DIR", &target),
        "cargo test of the Rust template",
    );
    let out = String::from_utf8_lossy(&tested.stdout);
    assert!(out.contains("2 passed; 0 failed"), "{out}");
}

/// componentize-py at the version the template's requirements.txt pins.
fn componentize_py(pin: &str) -> Result<PathBuf, String> {
    let exe = match test_tools() {
        Some(tools) => tools.join("python/bin/componentize-py"),
        None => on_path("componentize-py").ok_or(
            "componentize-py is not on the PATH and CRONWERK_TEST_TOOLS is not set \
             (`cargo xtask test` installs it)",
        )?,
    };
    let out = Command::new(&exe)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    match version.trim().strip_prefix("componentize-py ") {
        Some(v) if v == pin => Ok(exe),
        _ => Err(format!(
            "{} is {:?}, the template pins componentize-py {pin}",
            exe.display(),
            version.trim()
        )),
    }
}

#[test]
fn python_template_builds_and_runs() {
    let project = scaffold("python", "new-python-task", "Test.NewPython");
    let requirements = std::fs::read_to_string(project.dir.join("requirements.txt")).unwrap();
    let pin = requirements
        .lines()
        .find_map(|l| l.strip_prefix("componentize-py=="))
        .expect("requirements.txt pins componentize-py");
    let exe = match componentize_py(pin) {
        Ok(exe) => exe,
        Err(why) => return missing("Python", &why),
    };
    // The build line the template's README gives.
    run_ok(
        Command::new(&exe)
            .args(["-d", "wit", "-w", "scheduled-task", "componentize", "app"])
            .args(["-o", "new-python-task.wasm"])
            .current_dir(&project.dir),
        "componentize-py build of the Python template",
    );
    check_template_runs(&project, &project.dir.join("new-python-task.wasm"));

    // The project's own tests, with the in-memory host it comes with, by
    // the pytest its requirements.txt pins (installed beside componentize-py).
    let beside = exe.with_file_name("python");
    let python = if beside.exists() {
        beside
    } else {
        PathBuf::from("python3")
    };
    let tested = run_ok(
        Command::new(&python)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .current_dir(&project.dir),
        "pytest in the Python template",
    );
    let out = String::from_utf8_lossy(&tested.stdout);
    assert!(out.contains("2 passed"), "{out}");
    let pytest_pin = requirements
        .lines()
        .find_map(|l| l.strip_prefix("pytest=="))
        .expect("requirements.txt pins pytest");
    let version = run_ok(
        Command::new(&python).args(["-m", "pytest", "--version"]),
        "pytest --version",
    );
    let version = String::from_utf8_lossy(&version.stdout).to_string()
        + &String::from_utf8_lossy(&version.stderr);
    assert!(
        version.contains(pytest_pin),
        "{version} is not the pinned {pytest_pin}"
    );
}

/// The node_modules folder `cargo xtask test` installed, if it holds the
/// componentize-js the template's package.json pins.
fn componentize_js_modules(manifest: &serde_json::Value) -> Result<PathBuf, String> {
    on_path("npm").ok_or("npm is not on the PATH")?;
    let tools = test_tools().ok_or(
        "CRONWERK_TEST_TOOLS is not set (`cargo xtask test` installs componentize-js there)",
    )?;
    let modules = tools.join("node/node_modules");
    for (package, pin) in manifest["dependencies"].as_object().expect("dependencies") {
        let installed = std::fs::read(modules.join(package).join("package.json"))
            .ok()
            .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m).ok())
            .map(|m| m["version"].clone());
        if installed.as_ref() != Some(pin) {
            return Err(format!(
                "{} has {package} {installed:?}, the template pins {pin}",
                modules.display()
            ));
        }
    }
    Ok(modules)
}

#[test]
fn javascript_template_builds_and_runs() {
    let project = scaffold("js", "new-js-task", "Test.NewJs");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.dir.join("package.json")).unwrap()).unwrap();
    let modules = match componentize_js_modules(&manifest) {
        Ok(m) => m,
        Err(why) => return missing("JavaScript", &why),
    };
    // The packages `npm install` would fetch, already installed at the
    // pinned versions; the build is the template's own `npm run build`.
    std::os::unix::fs::symlink(&modules, project.dir.join("node_modules")).unwrap();
    run_ok(
        Command::new("npm")
            .args(["run", "build"])
            .current_dir(&project.dir),
        "npm run build of the JavaScript template",
    );
    check_template_runs(&project, &project.dir.join("new-js-task.wasm"));

    // The project's own tests, with the in-memory host it comes with.
    let tested = run_ok(
        Command::new("npm")
            .args(["test", "--silent"])
            .current_dir(&project.dir),
        "npm test in the JavaScript template",
    );
    let out = String::from_utf8_lossy(&tested.stdout);
    assert!(
        out.contains("# pass 2") && out.contains("# fail 0"),
        "{out}"
    );
}

/// Whether the Makefile's default, the Rust toolchain's wasm-component-ld,
/// is there.
fn rust_toolchain_has_wasm_component_ld() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let print = |args: &[&str]| {
        Command::new(&rustc)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let sysroot = print(&["--print", "sysroot"]);
    let verbose = print(&["-vV"]);
    let Some(host) = verbose.lines().find_map(|l| l.strip_prefix("host: ")) else {
        return false;
    };
    Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host.trim())
        .join("bin/wasm-component-ld")
        .is_file()
}

#[test]
fn c_template_builds_and_runs() {
    for tool in ["clang", "wasm-ld", "make"] {
        if on_path(tool).is_none() {
            return missing(
                "C",
                &format!(
                    "{tool} is not on the PATH \
                     (apt-get install clang lld wasi-libc libclang-rt-dev-wasm32 make)"
                ),
            );
        }
    }
    let project = scaffold("c", "new-c-task", "Test.NewC");
    // The README's build line, `make`, with the wasm-component-ld
    // `cargo xtask test` provides (the Makefile's own default otherwise).
    let mut make = Command::new("make");
    make.current_dir(&project.dir);
    if let Some(tools) = test_tools() {
        let linker = tools.join("c/bin/wasm-component-ld");
        if !linker.exists() {
            return missing(
                "C",
                &format!(
                    "{} is missing (`cargo xtask test` links it)",
                    linker.display()
                ),
            );
        }
        make.arg(format!("WASM_COMPONENT_LD={}", linker.display()));
    } else if !rust_toolchain_has_wasm_component_ld() {
        return missing(
            "C",
            "the Rust toolchain has no wasm-component-ld and CRONWERK_TEST_TOOLS is not set",
        );
    }
    run_ok(&mut make, "make in the C template");
    let wasm = project.dir.join("new-c-task.wasm");
    check_template_runs(&project, &wasm);
    // Small: no interpreter inside.
    let size = std::fs::metadata(&wasm).unwrap().len();
    assert!(size < 512 * 1024, "{size} bytes");
}

#[test]
fn new_refuses_a_folder_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
    let out = Command::new(BIN)
        .args(["new", "--lang", "python", "my-task", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not empty"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["notes.txt"]);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("notes.txt")).unwrap(),
        "mine"
    );

    let out = Command::new(BIN)
        .args(["new", "--lang", "rust", "My Task", "--dir"])
        .arg(tmp.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(!tmp.path().join("other").exists());
}
