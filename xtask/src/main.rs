//! cronwerk's task runner. Every set-up step the project needs lives here, so
//! `cargo xtask demo` and `cargo xtask test` work on a fresh machine with
//! nothing but Rust installed.

mod browser;
mod c_tools;
mod dashboard;
mod examples;
mod lang_guests;
mod lang_tools;
mod postgres;
mod shells;
mod toolchain;

use std::path::PathBuf;
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
    /// Build the example tasks, schedule hello every 10 s, serve it with the dashboard.
    Demo {
        /// Stop after this long (e.g. 35s) and print the overview; default: until Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// The dashboard's address (when 127.0.0.1:7878 is taken).
        #[arg(long, default_value = dashboard::ADDRESS, env = "CRONWERK_DEMO_LISTEN")]
        listen: std::net::SocketAddr,
    },
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
    /// Run the benchmarks: per-run overhead, tasks per language, the
    /// scheduler service (with apalis as a peer), instances on PostgreSQL,
    /// 100,000 configurations, and (only when named) the soak (figures go
    /// to BENCHMARKS.md by hand).
    Bench {
        /// Only these (per_run, languages, scheduler, cluster, size, soak);
        /// default: all but soak.
        benches: Vec<String>,
        /// How long the soak runs, in minutes.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
}

fn main() -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)
        .with_context(|| format!("entering the workspace at {}", root.display()))?;
    match Cli::parse().command {
        Cmd::BuildExamples { out } => {
            examples::build(&out)?;
        }
        Cmd::Demo { duration, listen } => demo(duration, listen)?,
        Cmd::Test {
            no_lint,
            cargo_args,
        } => test(no_lint, &cargo_args)?,
        Cmd::Bench { benches, minutes } => bench(&benches, minutes)?,
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    // `cargo run` says where the manifest is now. The path compiled in is
    // only a fallback: several clones share one target directory, and a
    // binary built in another (maybe deleted) clone is reused when the
    // sources match.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
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

/// Installs Debian packages with apt-get (as root), trying without an
/// index update first: an index a few days old usually still has them.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let apt = |args: &[&str]| {
        run(Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    if apt(&install).is_ok() {
        return Ok(());
    }
    apt(&["update", "-qq"])?;
    apt(&install)
}

/// Runs a step that prints little and may take minutes (a release build
/// with `--quiet`, a guest's componentize, a tool's install): on a
/// terminal a spinner with the elapsed time while it runs, and on every
/// stderr a closing line with how long it took.
pub fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    let started = std::time::Instant::now();
    let spinner = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let spinner = indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} xtask: {msg} ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        spinner.set_message(what.to_owned());
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        spinner
    });
    match &spinner {
        Some(spinner) => spinner.suspend(|| eprintln!("xtask: {cmd:?}")),
        None => eprintln!("xtask: {what}: {cmd:?}"),
    }
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"));
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let status = status?;
    let took =
        humantime::format_duration(std::time::Duration::from_secs(started.elapsed().as_secs()));
    if !status.success() {
        bail!("{what} failed with {status} after {took}: {cmd:?}");
    }
    eprintln!("xtask: {what}: done in {took}");
    Ok(())
}

/// Builds `peers/apalis` (its own workspace and lock file, so none of its
/// dependencies reach cronwerk's build); the binary's path.
fn build_peer() -> Result<PathBuf> {
    let root = workspace_root();
    let target = target_dir()?.join("peers");
    run(Command::new(cargo())
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(root.join("peers/apalis/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target))?;
    Ok(target.join("release/apalis-peer"))
}

fn components_dir() -> Result<PathBuf> {
    Ok(target_dir()?.join("cronwerk-components"))
}

const DEMO_TASK: &str = "Hello every 10s";

fn demo(duration: Option<std::time::Duration>, listen: std::net::SocketAddr) -> Result<()> {
    // Before minutes of building: the address must be free.
    dashboard::check_free(listen)?;
    let plugins = PathBuf::from("plugins");
    let data = PathBuf::from("cronwerk-data");
    examples::build(&plugins)?;
    run_step(
        "building cronwerk (release; minutes the first time)",
        Command::new(cargo()).args(["build", "--release", "--quiet", "-p", "cronwerk"]),
    )?;
    let bin = target_dir()?.join("release/cronwerk");
    let cronwerk = |args: &[&str]| -> Result<std::process::ExitStatus> {
        Ok(Command::new(&bin)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .status()?)
    };

    println!("\n== the example components");
    for file in ["hello.wasm", "wat-hello.wasm", "misbehave.wasm"] {
        run(Command::new(&bin)
            .arg("inspect")
            .arg(plugins.join(file))
            .arg("--json")
            .stdout(std::process::Stdio::null()))?;
        println!("  plugins/{file}: ok");
    }
    // The demo configuration, created once; a second demo reuses the data.
    let exists = Command::new(&bin)
        .arg("--data-dir")
        .arg(&data)
        .args(["task", "show", DEMO_TASK])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?
        .success();
    if !exists {
        cronwerk(&[
            "task",
            "add",
            DEMO_TASK,
            "--implementation",
            "Acme.HelloScheduledTask",
            "--every",
            "10s",
            "--timeout",
            "2s",
            "--memory",
            "64MiB",
        ])?;
    }
    println!("\n== cronwerk serve (Ctrl-C stops it; the history is printed every 10 s)");
    let mut serve = Command::new(&bin)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", &listen.to_string(), "--plugins"])
        .arg(&plugins)
        .spawn()
        .context("starting cronwerk serve")?;
    dashboard::announce(&data, listen, &mut serve)?;
    let started = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(10));
        if let Some(status) = serve.try_wait()? {
            println!("cronwerk serve ended: {status}");
            return Ok(());
        }
        println!("\n$ cronwerk runs --task '{DEMO_TASK}' --limit 5");
        cronwerk(&["runs", "--task", DEMO_TASK, "--limit", "5"])?;
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
    }
    // A bounded demo ends the way an operator would: SIGTERM, then the overview.
    run(Command::new("kill").args(["-TERM", &serve.id().to_string()]))?;
    serve.wait()?;
    println!("\n$ cronwerk task list");
    cronwerk(&["task", "list"])?;
    println!("\n$ cronwerk events --task '{DEMO_TASK}' --limit 4");
    cronwerk(&["events", "--task", DEMO_TASK, "--limit", "4"])?;
    Ok(())
}

fn test(no_lint: bool, cargo_args: &[String]) -> Result<()> {
    toolchain::ensure_components(&["rustfmt", "clippy"])?;
    let components = components_dir()?;
    examples::build(&components)?;
    let chromium = browser::prepare()?;
    shells::prepare()?;
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
    // The store's PostgreSQL tests run against a throwaway cluster, stopped
    // when this returns (passed or not).
    let postgres = postgres::Cluster::start(&target_dir()?, false)?;
    // The `cronwerk new` tests build each language's template with the
    // pinned builders; installed here even when the examples were fresh.
    let tools = lang_tools::ensure()?;
    // The C template builds with the C toolchain (in `tools.dir`/c), and
    // its bindings must be what the contract generates today.
    c_tools::ensure()?;
    c_tools::check_bindings()?;
    // Release: the tests compile real components with Cranelift, which is
    // slow unoptimised, and it shares the build with demo and bench.
    run(Command::new(cargo())
        .args(["test", "--release", "--workspace"])
        .args(cargo_args)
        .env("CRONWERK_TEST_COMPONENTS", &components)
        .env("CRONWERK_TEST_POSTGRES", postgres.url())
        .env("CRONWERK_TEST_POSTGRES_BIN", postgres.bin())
        .env("CRONWERK_REQUIRE_POSTGRES", "1")
        .env("CRONWERK_TEST_TOOLS", &tools.dir)
        .env("CRONWERK_REQUIRE_TOOLS", "1")
        .env("CRONWERK_CHROMIUM", &chromium)
        .env(
            "CRONWERK_ARTIFACTS",
            target_dir()?.join("cronwerk-artifacts"),
        ))?;
    eprintln!(
        "xtask: all tests passed; screenshots of the dashboard are in {}",
        target_dir()?
            .join("cronwerk-artifacts/screenshots")
            .display()
    );
    Ok(())
}

const BENCHES: [&str; 6] = [
    "per_run",
    "languages",
    "scheduler",
    "cluster",
    "size",
    "soak",
];
/// Benches that run only when named: they take long by design.
const ON_REQUEST: [&str; 1] = ["soak"];

fn bench(only: &[String], soak_minutes: f64) -> Result<()> {
    for name in only {
        if !BENCHES.contains(&name.as_str()) {
            bail!("no bench named '{name}': pick from {}", BENCHES.join(", "));
        }
    }
    if soak_minutes.is_nan() || soak_minutes <= 0.0 {
        bail!("--minutes {soak_minutes}: give the soak a positive length, e.g. --minutes 2");
    }
    let selected: Vec<&str> = BENCHES
        .into_iter()
        .filter(|b| match only.is_empty() {
            true => !ON_REQUEST.contains(b),
            false => only.iter().any(|o| o == b),
        })
        .collect();
    let components = components_dir()?;
    examples::build(&components)?;
    // The cluster bench runs its instances on a throwaway PostgreSQL
    // server, like the tests; stopped when this returns.
    let postgres = if selected.contains(&"cluster") {
        Some(postgres::Cluster::start(&target_dir()?, true)?)
    } else {
        None
    };
    // The peer the throughput figures are compared with; the benches go
    // on without it (and say so) if it does not build.
    let peer = if selected
        .iter()
        .any(|b| ["scheduler", "cluster"].contains(b))
    {
        build_peer().map(Some).unwrap_or_else(|e| {
            eprintln!("xtask: warning: the apalis peer did not build ({e:#}); no peer figures");
            None
        })
    } else {
        None
    };
    // CRONWERK_BENCH_QUICK=1 (inherited) shortens the scheduler and cluster benches.
    for bench in selected {
        let mut cmd = Command::new(cargo());
        cmd.args(["bench", "-p", "cronwerk", "--bench", bench])
            .env("CRONWERK_BENCH_COMPONENTS", &components)
            .env("CRONWERK_SOAK_MINUTES", soak_minutes.to_string());
        if let Some(postgres) = &postgres {
            cmd.env("CRONWERK_BENCH_POSTGRES", postgres.url());
        }
        if let Some(peer) = &peer {
            cmd.env("CRONWERK_BENCH_PEER", peer);
        }
        run(&mut cmd)?;
    }
    Ok(())
}
