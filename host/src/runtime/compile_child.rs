//! Compiling in a short-lived child process. Cranelift's working memory
//! for a big guest (hundreds of megabytes for the Python and JavaScript
//! examples) stays with the allocator of the process that compiled it, so
//! a host that compiled at start-up held several times the memory of one
//! that loaded the same code from its compile cache. In a child, that
//! memory goes back to the system when the child exits; a compiler crash
//! ends the child, not the host; and a compilation that outlasts its limit
//! is killed instead of left running on a thread.
//!
//! The child is this program's hidden `compile-worker` verb (its side is
//! `compile_worker`). It builds an engine from the parent's settings,
//! compiles the component it reads on stdin and writes the code into the
//! compile cache, from which the parent then loads it exactly as a restart
//! would. Without a usable cache, or if the child cannot be started, the
//! parent compiles in process as before.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::engine::{Allocator, CronwerkEngine, EngineSettings};

/// The child's exit code for bytes that are not a valid component; its
/// stderr says why.
pub const EXIT_INVALID: u8 = 65;
/// Most of the child's stderr kept for an error message.
const MAX_MESSAGE_BYTES: u64 = 16 * 1024;

/// How to start the child: normally this very program.
#[derive(Debug, Clone)]
pub struct CompileWorker {
    pub exe: PathBuf,
}

/// What the child needs to build an engine whose code the parent's engine
/// accepts: every setting that goes into the engine's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEngine {
    pub pooling: bool,
    pub max_concurrent_runs: u32,
    pub max_memory_bytes: usize,
    pub max_wasm_stack: usize,
    pub keep_resident_bytes: usize,
}

impl WorkerEngine {
    pub(super) fn of(engine: &CronwerkEngine) -> Self {
        let s = &engine.settings;
        WorkerEngine {
            pooling: engine.pooling,
            max_concurrent_runs: s.max_concurrent_runs,
            max_memory_bytes: s.max_memory_bytes,
            max_wasm_stack: s.max_wasm_stack,
            keep_resident_bytes: s.keep_resident_bytes,
        }
    }

    /// The command-line arguments of `compile-worker` that carry these.
    fn args(&self) -> Vec<String> {
        vec![
            format!("--pooling={}", self.pooling),
            format!("--max-concurrent-runs={}", self.max_concurrent_runs),
            format!("--max-memory-bytes={}", self.max_memory_bytes),
            format!("--max-wasm-stack={}", self.max_wasm_stack),
            format!("--keep-resident-bytes={}", self.keep_resident_bytes),
        ]
    }

    pub(super) fn settings(&self) -> EngineSettings {
        EngineSettings {
            allocator: if self.pooling {
                Allocator::Pooling
            } else {
                Allocator::OnDemand
            },
            max_concurrent_runs: self.max_concurrent_runs,
            max_memory_bytes: self.max_memory_bytes,
            max_wasm_stack: self.max_wasm_stack,
            keep_resident_bytes: self.keep_resident_bytes,
            ..Default::default()
        }
    }
}

/// Why the child did not leave code in the cache.
pub(super) enum ChildFailure {
    /// The component does not compile (or the compiler crashed on it).
    Invalid(String),
    /// The compilation outlasted its time limit; the child was killed.
    TimedOut,
    /// It could not do its job at all; compile in process instead.
    Unavailable(String),
}

/// Compiles `bytes` in a child, which stores the code in the compile cache
/// at `cache_dir`; the caller then finds it there.
pub(super) async fn compile_into_cache(
    worker: &CompileWorker,
    engine: &WorkerEngine,
    bytes: &[u8],
    cache_dir: &Path,
    timeout: Duration,
) -> Result<(), ChildFailure> {
    let unavailable = |what: &str, e: std::io::Error| {
        ChildFailure::Unavailable(format!("{what} {}: {e}", worker.exe.display()))
    };
    let mut child = tokio::process::Command::new(&worker.exe)
        .arg("compile-worker")
        .arg("--cache")
        .arg(cache_dir)
        .args(engine.args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A compilation past its limit, or a host that gave up on it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| unavailable("starting", e))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let work = async {
        // The child reads all of stdin before it writes anything, so
        // writing first cannot deadlock.
        stdin
            .write_all(bytes)
            .await
            .map_err(|e| unavailable("writing to", e))?;
        drop(stdin);
        let mut message = String::new();
        let _ = stderr
            .take(MAX_MESSAGE_BYTES)
            .read_to_string(&mut message)
            .await;
        let status = child
            .wait()
            .await
            .map_err(|e| unavailable("waiting for", e))?;
        Ok::<_, ChildFailure>((status, message))
    };
    let (status, message) = match tokio::time::timeout(timeout, work).await {
        Err(_) => return Err(ChildFailure::TimedOut),
        Ok(done) => done?,
    };
    let message = message.trim().to_owned();
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt as _;
    Err(match (status.code(), status.signal()) {
        (Some(code), _) if code == i32::from(EXIT_INVALID) => ChildFailure::Invalid(message),
        (_, Some(signal)) => {
            ChildFailure::Invalid(format!("the compiler crashed on it (signal {signal})"))
        }
        (code, _) => ChildFailure::Unavailable(format!(
            "{} compile-worker exited with {code:?}: {message}",
            worker.exe.display()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_engine_rebuilds_the_settings_that_shape_the_code() {
        let engine = CronwerkEngine::new(EngineSettings {
            allocator: Allocator::OnDemand,
            max_concurrent_runs: 7,
            max_wasm_stack: 512 << 10,
            ..Default::default()
        })
        .unwrap();
        let worker = WorkerEngine::of(&engine);
        let rebuilt = CronwerkEngine::new(worker.settings()).unwrap();
        assert_eq!(WorkerEngine::of(&rebuilt), worker);
        // The same code: the cache names entries by this hash.
        assert_eq!(
            super::super::cache::engine_hash(&rebuilt.engine),
            super::super::cache::engine_hash(&engine.engine)
        );
        assert_eq!(worker.args().len(), 5);
    }
}
