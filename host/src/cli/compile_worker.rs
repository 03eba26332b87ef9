//! The hidden `compile-worker` verb: the short-lived child in which
//! `serve` compiles a component that is not in its compile cache, so the
//! compiler's memory goes back to the system when it exits (see
//! `runtime::compile_child`). Not meant for people; its arguments are
//! whatever the parent passes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, Args};

use crate::runtime::compile_child::{EXIT_INVALID, WorkerEngine};
use crate::runtime::compile_worker::{WorkerError, run_worker};

#[derive(Args)]
pub struct CompileWorkerArgs {
    /// The compile cache folder to store the code in.
    #[arg(long)]
    cache: PathBuf,
    #[arg(long, action = ArgAction::Set)]
    pooling: bool,
    #[arg(long)]
    max_concurrent_runs: u32,
    #[arg(long)]
    max_memory_bytes: usize,
    #[arg(long)]
    max_wasm_stack: usize,
    #[arg(long)]
    keep_resident_bytes: usize,
}

/// Compiles the component on stdin into the cache. Runs before the async
/// runtime exists: the child needs none.
pub fn run(args: CompileWorkerArgs) -> ExitCode {
    let engine = WorkerEngine {
        pooling: args.pooling,
        max_concurrent_runs: args.max_concurrent_runs,
        max_memory_bytes: args.max_memory_bytes,
        max_wasm_stack: args.max_wasm_stack,
        keep_resident_bytes: args.keep_resident_bytes,
    };
    match run_worker(&engine, &args.cache) {
        Ok(()) => ExitCode::SUCCESS,
        Err(WorkerError::Invalid(message)) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(WorkerError::Host(message)) => {
            eprintln!("{message}");
            ExitCode::from(super::exit::INTERNAL)
        }
    }
}
