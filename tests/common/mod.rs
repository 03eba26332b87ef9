//! Helpers shared by the end-to-end tests: where the built components are,
//! a shared runtime, and run requests with test-friendly defaults.
#![allow(dead_code)]

pub mod cluster;
pub mod otlp;
pub mod own_postgres;
pub mod serve_env;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use cronwerk::runtime::{Component, EngineSettings, RunContext, RunRequest, Runtime};

use cronwerk::model::RunLimits;

/// Folder with the components `cargo xtask build-examples` produced.
pub fn components_dir() -> PathBuf {
    match std::env::var_os("CRONWERK_TEST_COMPONENTS") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "CRONWERK_TEST_COMPONENTS is not set: run the tests with `cargo xtask test`, \
             or build the components with `cargo xtask build-examples --out DIR` and set it to DIR"
        ),
    }
}

/// Compiled code shared by every test process (beside the components), so
/// the big Python and JavaScript guests compile once per build, not per test.
pub fn compile_cache_dir() -> PathBuf {
    let dir = components_dir();
    dir.parent().unwrap_or(&dir).join("cronwerk-test-cache")
}

/// Compiles `file` into [`compile_cache_dir`] once per test process (a
/// no-op when an earlier process did), so that a test starting `serve` with
/// a big guest does not spend its start-up wait in Cranelift, and parallel
/// tests do not compile the same guest side by side.
pub fn warm_compile_cache(file: &str) {
    static WARMED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut warmed = WARMED.lock().unwrap_or_else(|e| e.into_inner());
    if warmed.iter().any(|f| f == file) {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("inspect")
        .arg(component_path(file))
        .arg("--cache-dir")
        .arg(compile_cache_dir())
        .output()
        .expect("running cronwerk inspect");
    assert!(out.status.success(), "inspect {file}: {out:?}");
    warmed.push(file.to_owned());
}

pub fn component_path(file: &str) -> PathBuf {
    let path = components_dir().join(file);
    assert!(
        path.is_file(),
        "{} is missing: rebuild the examples",
        path.display()
    );
    path
}

/// One runtime per test binary: engines are process-wide in real use too.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Runtime::new(EngineSettings {
            max_concurrent_runs: 16,
            ..Default::default()
        })
        .expect("creating the runtime")
    })
}

pub async fn load(file: &str) -> Component {
    runtime()
        .load_file(&component_path(file))
        .await
        .unwrap_or_else(|e| panic!("loading {file}: {e}"))
}

/// A request with the given properties and a 10 s time limit.
pub fn request(properties: &[(&str, &str)]) -> RunRequest {
    RunRequest {
        context: RunContext {
            configuration_name: "test".into(),
            run_id: "run-1".into(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
        limits: RunLimits {
            timeout: Duration::from_secs(10),
            ..Default::default()
        },
        grace: Duration::from_secs(1),
        ..Default::default()
    }
}

/// The same component with a custom section appended: identical behaviour,
/// a different sha256 (a new "version" of the file).
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}
