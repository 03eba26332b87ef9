//! `cronwerk inspect FILE`: load a component the way the host would and say
//! what it is, or exactly why it cannot be loaded.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::common::shown;
use super::compile_cache::{self, CacheArgs, LoadArgs, LoadStats};
use super::exit;
use crate::runtime::{Component, EngineSettings, Runtime, TaskInfo};

#[derive(Args)]
pub struct InspectArgs {
    /// The component file (.wasm, or .wat text).
    file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Serialize)]
struct Inspection<'a> {
    file: String,
    size_bytes: usize,
    sha256: &'a str,
    #[serde(flatten)]
    info: &'a TaskInfo,
    /// The version of cronwerk's task contract it was built against.
    contract: &'static str,
    imports: &'a [String],
    exports: &'a [String],
    load: &'a LoadStats,
}

pub async fn run(args: InspectArgs) -> anyhow::Result<u8> {
    let runtime = Runtime::new(EngineSettings {
        max_concurrent_runs: 4,
        load: args.load.limits(),
        ..Default::default()
    })?;
    let (component, load) =
        match compile_cache::open_and_load(&runtime, &args.cache, &args.file, args.json).await {
            Ok(loaded) => loaded,
            Err(code) => return Ok(code),
        };
    let inspection = describe(&component, &args.file, &load);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print_text(&inspection);
    }
    Ok(exit::OK)
}

fn describe<'a>(c: &'a Component, file: &std::path::Path, load: &'a LoadStats) -> Inspection<'a> {
    Inspection {
        file: file.display().to_string(),
        size_bytes: c.size_bytes(),
        sha256: c.sha256(),
        info: c.info(),
        contract: c.contract().version(),
        imports: c.imports(),
        exports: c.exports(),
        load,
    }
}

fn print_text(i: &Inspection<'_>) {
    println!(
        "file         {} ({})",
        i.file,
        bytesize::ByteSize(i.size_bytes as u64)
    );
    println!("sha256       {}", i.sha256);
    println!("identifier   {}", shown(&i.info.identifier));
    println!("name         {}", shown(&i.info.display_name));
    println!("version      {}", shown(&i.info.version));
    if !i.info.description.is_empty() {
        println!("description  {}", shown(&i.info.description));
    }
    if let Some(s) = &i.info.default_schedule {
        println!("schedule     {} (suggested)", shown(s));
    }
    println!("contract     cronwerk:task@{}", i.contract);
    println!("exports      {}", i.exports.join(", "));
    println!("imports      {}", i.imports.join("\n             "));
    println!("load         {}", i.load.describe());
}
