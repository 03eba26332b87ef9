//! The child's side of compiling in a child process (`compile_child` is
//! the parent's): what the hidden `compile-worker` verb runs. It reads a
//! component on stdin, compiles it with an engine built from the parent's
//! settings and stores the code in the compile cache.

use std::io::Read as _;
use std::path::Path;

use super::cache::{self, CompileCache};
use super::compile_child::WorkerEngine;
use super::engine::CronwerkEngine;

/// The child's side: reads a component on stdin, compiles it with an
/// engine built from `engine` and stores the code in the cache at
/// `cache_dir`. The error says whether the component was at fault.
pub fn run_worker(engine: &WorkerEngine, cache_dir: &Path) -> Result<(), WorkerError> {
    let cache = CompileCache::open(cache_dir)
        .map_err(|e| WorkerError::Host(format!("opening the compile cache: {e}")))?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|e| WorkerError::Host(format!("reading the component from stdin: {e}")))?;
    let engine =
        CronwerkEngine::new(engine.settings()).map_err(|e| WorkerError::Host(format!("{e:#}")))?;
    cache::compile_and_store(&engine.engine, bytes, &cache).map_err(WorkerError::Invalid)
}

/// Why a `compile-worker` failed.
#[derive(Debug)]
pub enum WorkerError {
    /// The component did not compile.
    Invalid(String),
    /// The worker could not do its job (cache, engine, stdin).
    Host(String),
}
