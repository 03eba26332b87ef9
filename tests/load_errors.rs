//! Each class of unloadable file gets exit code 3 and a message that names
//! the file, says what is wrong and what would fix it.

use std::process::Command;

fn load(name: &str, bytes: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    run(&path)
}

fn run(path: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("exec")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_load_error(result: (Option<i32>, String), file: &str, needles: &[&str]) {
    let (code, stderr) = result;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains(file), "does not name {file}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "missing {n:?} in: {stderr}");
    }
}

#[test]
fn a_missing_file_or_a_directory_is_unreadable() {
    assert_load_error(
        run(std::path::Path::new("/no/such/task.wasm")),
        "/no/such/task.wasm",
        &["cannot read"],
    );
    let dir = tempfile::tempdir().unwrap();
    assert_load_error(
        run(dir.path()),
        &dir.path().display().to_string(),
        &["cannot read"],
    );
}

#[test]
fn a_file_that_is_not_wasm() {
    assert_load_error(
        load("notes.wasm", b"just some text"),
        "notes.wasm",
        &["not a WebAssembly file", "\\0asm"],
    );
}

#[test]
fn a_core_module_is_not_a_component() {
    let module = wat::parse_str("(module)").unwrap();
    assert_load_error(
        load("core.wasm", &module),
        "core.wasm",
        &["core WebAssembly module, not a component", "wasm32-wasip2"],
    );
}

#[test]
fn a_corrupt_component() {
    let mut bytes = wat::parse_str("(component)").unwrap();
    bytes.extend_from_slice(&[0xff, 0x10, 0x01]);
    assert_load_error(
        load("corrupt.wasm", &bytes),
        "corrupt.wasm",
        &["not a valid WebAssembly component"],
    );
}

#[test]
fn a_component_without_the_task_export() {
    let bytes = wat::parse_str("(component)").unwrap();
    assert_load_error(
        load("empty.wasm", &bytes),
        "empty.wasm",
        &[
            "does not export cronwerk's task interface (`cronwerk:task/task@VERSION`, \
             VERSION one of 0.1.0, 0.2.0",
            "its exports: none",
            "export_task!",
        ],
    );
}

#[test]
fn a_component_built_against_another_contract_version() {
    let bytes = wat::parse_str(
        r#"(component (instance $i) (export "cronwerk:task/task@0.9.0" (instance $i)))"#,
    )
    .unwrap();
    assert_load_error(
        load("future.wasm", &bytes),
        "future.wasm",
        &[
            "built against `cronwerk:task/task@0.9.0`",
            "this host implements 0.1.0, 0.2.0",
        ],
    );
}

#[test]
fn a_task_export_of_the_wrong_shape() {
    for version in ["0.1.0", "0.2.0"] {
        let export = format!("cronwerk:task/task@{version}");
        let bytes = wat::parse_str(format!(
            r#"(component (instance $i) (export "{export}" (instance $i)))"#
        ))
        .unwrap();
        assert_load_error(
            load("shape.wasm", &bytes),
            "shape.wasm",
            &[&format!(
                "exports `{export}` with a shape this host does not expect"
            )],
        );
    }
}

#[test]
fn a_component_importing_what_the_host_does_not_provide() {
    let bytes = wat::parse_str(
        r#"(component
             (import "acme:missing/api@1.0.0" (instance (export "ping" (func))))
             (instance $i)
             (export "cronwerk:task/task@0.1.0" (instance $i)))"#,
    )
    .unwrap();
    assert_load_error(
        load("imports.wasm", &bytes),
        "imports.wasm",
        &[
            "imports something cronwerk does not provide",
            "acme:missing/api@1.0.0",
        ],
    );
}

#[test]
fn json_mode_reports_load_errors_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.wasm");
    std::fs::write(&path, b"nope").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("exec")
        .arg(&path)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "load-error");
    assert!(v["message"].as_str().unwrap().contains("x.wasm"));
}

/// example-tasks/wat-hello with the length of one of `describe`'s strings
/// changed in place: the bytes after it in memory (other strings, zeros)
/// stand in for a long text.
fn wat_hello_with_length(store: &str, length: u32) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../example-tasks/wat-hello/task.wat");
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text.matches(store).count(), 1, "task.wat changed shape");
    let (prefix, _) = store.rsplit_once("(i32.const").unwrap();
    wat::parse_str(text.replace(store, &format!("{prefix}(i32.const {length}))"))).unwrap()
}

const VERSION_LENGTH: &str = "(i32.store offset=28 (i32.const 256) (i32.const 5))";
const DESCRIPTION_LENGTH: &str = "(i32.store offset=20 (i32.const 256) (i32.const 54))";

#[test]
fn a_component_describing_itself_at_length_is_refused_naming_the_field() {
    // At the limits it loads (and runs).
    let (code, stderr) = load("edge.wasm", &wat_hello_with_length(VERSION_LENGTH, 64));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = load(
        "edge.wasm",
        &wat_hello_with_length(DESCRIPTION_LENGTH, 4096),
    );
    assert_eq!(code, Some(0), "{stderr}");

    assert_load_error(
        load(
            "long-version.wasm",
            &wat_hello_with_length(VERSION_LENGTH, 65),
        ),
        "long-version.wasm",
        &["version of 65 bytes", "at most 64", "describe"],
    );
    assert_load_error(
        load(
            "long-description.wasm",
            &wat_hello_with_length(DESCRIPTION_LENGTH, 40_000),
        ),
        "long-description.wasm",
        &["description of 40000 bytes", "at most 4096"],
    );
}
