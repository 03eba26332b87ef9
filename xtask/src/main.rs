//! cronwerk's task runner. Every set-up step the project needs lives here, so
//! `cargo xtask demo` and `cargo xtask test` work on a fresh machine with
//! nothing but Rust installed.

mod examples;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "cronwerk's task runner")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the example tasks and run them through cronwerk.
    Demo,
    /// Run the whole test suite, with every set-up step it needs.
    Test {
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Build every example and test component from source into DIR.
    BuildExamples {
        #[arg(long, default_value = "plugins")]
        out: PathBuf,
    },
    /// Run the per-run overhead benchmark (figures go to BENCHMARKS.md by hand).
    Bench,
}

fn main() -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)
        .with_context(|| format!("entering the workspace at {}", root.display()))?;
    match Cli::parse().command {
        Cmd::BuildExamples { out } => {
            examples::build(&out)?;
        }
        Cmd::Demo => demo()?,
        Cmd::Test {
            no_lint,
            cargo_args,
        } => test(no_lint, &cargo_args)?,
        Cmd::Bench => bench()?,
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

/// The directory cargo builds into (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> Result<PathBuf> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let dir = meta["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs a command, failing with its command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    eprintln!("xtask: {line}");
    let status = cmd.status().with_context(|| format!("starting {line}"))?;
    if !status.success() {
        bail!("{line} failed with {status}");
    }
    Ok(())
}

fn components_dir() -> Result<PathBuf> {
    Ok(target_dir()?.join("cronwerk-components"))
}

fn demo() -> Result<()> {
    let plugins = PathBuf::from("plugins");
    examples::build(&plugins)?;
    run(Command::new(cargo()).args(["build", "--release", "--quiet", "-p", "cronwerk"]))?;
    let cronwerk = target_dir()?.join("release/cronwerk");
    let hello = plugins.join("hello.wasm");
    println!("\n== cronwerk inspect {}", hello.display());
    run(Command::new(&cronwerk).arg("inspect").arg(&hello))?;
    println!(
        "\n== cronwerk exec {} --property greeting=Hi",
        hello.display()
    );
    run(Command::new(&cronwerk).arg("exec").arg(&hello).args([
        "--property",
        "greeting=Hi",
        "--timeout",
        "2s",
        "--memory",
        "64MiB",
    ]))?;
    let wat = plugins.join("wat-hello.wasm");
    println!("\n== cronwerk exec {}", wat.display());
    run(Command::new(&cronwerk).arg("exec").arg(&wat))?;
    println!("\n== a runaway task, stopped by its fuel limit (exit code 2 is expected)");
    let status = Command::new(&cronwerk)
        .arg("exec")
        .arg(plugins.join("misbehave.wasm"))
        .args(["--property", "action=spin", "--fuel", "50_000_000"])
        .status()?;
    println!("{status}");
    println!(
        "\nThe components are in {}/; try `{} exec {} --json`.",
        plugins.display(),
        cronwerk.display(),
        hello.display()
    );
    Ok(())
}

fn test(no_lint: bool, cargo_args: &[String]) -> Result<()> {
    toolchain::ensure_components(&["rustfmt", "clippy"])?;
    let components = components_dir()?;
    examples::build(&components)?;
    if !no_lint {
        run(Command::new(cargo()).args(["fmt", "--all", "--check"]))?;
        run(Command::new(cargo()).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // Release: the tests compile real components with Cranelift, which is
    // slow unoptimised, and it shares the build with demo and bench.
    run(Command::new(cargo())
        .args(["test", "--release"])
        .args(cargo_args)
        .env("CRONWERK_TEST_COMPONENTS", &components))?;
    eprintln!("xtask: all tests passed");
    Ok(())
}

fn bench() -> Result<()> {
    let components = components_dir()?;
    examples::build(&components)?;
    run(Command::new(cargo())
        .args(["bench", "-p", "cronwerk", "--bench", "per_run"])
        .env("CRONWERK_BENCH_COMPONENTS", &components))
}
