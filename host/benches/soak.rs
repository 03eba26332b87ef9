//! The soak: one real `cronwerk serve` on SQLite for a long stretch (10
//! minutes; `CRONWERK_SOAK_MINUTES` sets another length), with 500
//! configurations of mixed tasks, a hot reload of a component every
//! minute and a restart of `serve` half-way. What it shows is whether the
//! process settles: its resident memory over time (flat after warm-up),
//! its open file descriptors, the database's size against retention, and
//! runs lost or run twice (both must be 0). `cargo xtask bench soak` runs
//! it; BENCHMARKS.md keeps its latest figures.
//!
//! The mix: 250 `Acme.HelloScheduledTask` every 5 s; 100 that fail
//! (`misbehave action=fail`, one retry) every 10 s; 100 that print 200
//! lines (stored as events) every 10 s; 50 that sleep 2 s every 30 s.
//! Retention is set low (`--keep-runs 20 --keep-events 2m`) so it is
//! reached within the soak.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use cronwerk::model::{RunRecord, RunState, Schedule, TaskConfig};
use cronwerk::store::{Configurations, RunFilter, RunLedger, SqliteStore};

// The end-to-end tests' way of starting `serve` and reading what it prints.
#[path = "../../tests/common/mod.rs"]
mod common;
use common::serve_env::{Serve, start_serving};

const HELLO: &str = "Acme.HelloScheduledTask";
const MISBEHAVE: &str = "Cronwerk.Test.Misbehave";
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const RELOAD_EVERY: Duration = Duration::from_secs(60);
const KEEP_RUNS: &str = "20";
const KEEP_EVENTS: &str = "2m";

/// One kind of configuration in the mix.
struct Kind {
    prefix: &'static str,
    count: usize,
    every: u64,
    implementation: &'static str,
    properties: &'static [(&'static str, &'static str)],
    retries: u32,
}

const MIX: [Kind; 4] = [
    Kind {
        prefix: "hello",
        count: 250,
        every: 5,
        implementation: HELLO,
        properties: &[],
        retries: 0,
    },
    Kind {
        prefix: "failing",
        count: 100,
        every: 10,
        implementation: MISBEHAVE,
        properties: &[("action", "fail")],
        retries: 1,
    },
    Kind {
        prefix: "chatty",
        count: 100,
        every: 10,
        implementation: MISBEHAVE,
        properties: &[("action", "print"), ("n", "200")],
        retries: 0,
    },
    Kind {
        prefix: "slow",
        count: 50,
        every: 30,
        implementation: MISBEHAVE,
        properties: &[("action", "sleep"), ("ms", "2000")],
        retries: 0,
    },
];

/// What the process and its data directory looked like at one moment.
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    db_bytes: u64,
    /// Runs started so far (all configurations' run counters).
    runs: u64,
}

fn start_serve(data: &Path, plugins: &Path, cache: &Path) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronwerk"));
    cmd.arg("--data-dir")
        .arg(data)
        .args(["serve", "--name", "soak", "--listen", "none"])
        .args(["--keep-runs", KEEP_RUNS, "--keep-events", KEEP_EVENTS])
        .arg("--plugins")
        .arg(plugins)
        .arg("--cache-dir")
        .arg(cache);
    start_serving(cmd, "soak")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn db_bytes(data: &Path) -> u64 {
    ["cronwerk.db", "cronwerk.db-wal", "cronwerk.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// `hello.wasm` with a custom section that changes with `n`: a new file
/// for the watcher to load, serving the same identifier.
fn reloaded_hello(original: &[u8], n: u32) -> Vec<u8> {
    let name = b"cronwerk-soak";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(&n.to_le_bytes());
    let mut bytes = original.to_vec();
    bytes.push(0); // a custom section
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(&payload);
    bytes
}

fn configurations(now: DateTime<Utc>) -> Vec<TaskConfig> {
    // Slots on whole seconds, so every kind's slots line up.
    let anchor = DateTime::from_timestamp(now.timestamp(), 0).unwrap();
    let mut configs = Vec::new();
    for kind in &MIX {
        for i in 0..kind.count {
            let schedule = Schedule::every(Duration::from_secs(kind.every), anchor).unwrap();
            let mut config = TaskConfig::new(
                &format!("{}-{i:03}", kind.prefix),
                kind.implementation,
                schedule,
            );
            config.retries = kind.retries;
            config.retry_backoff = Duration::from_secs(1);
            for (k, v) in kind.properties {
                config.properties.insert((*k).into(), (*v).into());
            }
            configs.push(config);
        }
    }
    configs
}

/// Slots of one configuration that have no record (lost) or more than
/// one (run twice), over the span its retained records cover. A record
/// of missed slots (the misfire policy `skip`, after the restart) covers
/// the number of slots its message names.
fn audit(runs: &[RunRecord], every: TimeDelta) -> (usize, usize) {
    let mut covered: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    for run in runs {
        let Some(slot) = run.scheduled_for else {
            continue;
        };
        let missed = run
            .message
            .strip_prefix("missed ")
            .and_then(|m| m.split_whitespace().next()?.parse::<i32>().ok())
            .filter(|_| run.state == RunState::Skipped)
            .unwrap_or(1);
        for k in 0..missed {
            *covered.entry(slot + every * k).or_default() += 1;
        }
    }
    let (Some(first), Some(last)) = (
        covered.keys().next().copied(),
        covered.keys().next_back().copied(),
    ) else {
        return (0, 0);
    };
    let mut lost = 0;
    let mut slot = first;
    while slot <= last {
        if !covered.contains_key(&slot) {
            lost += 1;
        }
        slot += every;
    }
    let twice = covered.values().filter(|n| **n > 1).count();
    (lost, twice)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let minutes: f64 = std::env::var("CRONWERK_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10.0);
    let Some(components) = std::env::var_os("CRONWERK_BENCH_COMPONENTS").map(PathBuf::from) else {
        eprintln!("soak: CRONWERK_BENCH_COMPONENTS is not set; run `cargo xtask bench soak`");
        return;
    };
    let length = Duration::from_secs_f64(minutes * 60.0);
    let dir = tempfile::tempdir().unwrap();
    let (data, plugins, cache) = (
        dir.path().join("data"),
        dir.path().join("plugins"),
        dir.path().join("cache"),
    );
    std::fs::create_dir_all(&plugins).unwrap();
    let hello = std::fs::read(components.join("hello.wasm")).unwrap();
    std::fs::write(plugins.join("hello.wasm"), &hello).unwrap();
    std::fs::copy(
        components.join("misbehave.wasm"),
        plugins.join("misbehave.wasm"),
    )
    .unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let configs = configurations(Utc::now() + TimeDelta::seconds(5));
    {
        let store = SqliteStore::open(&data).unwrap();
        runtime.block_on(async {
            for config in &configs {
                let next = cronwerk::spec::first_run(config, Utc::now());
                store.create_task(config, next).await.unwrap();
            }
        });
    }
    println!(
        "soak: {} configurations, {minutes} min, a reload every {} s, a restart at half-time; \
         retention --keep-runs {KEEP_RUNS} --keep-events {KEEP_EVENTS}",
        configs.len(),
        RELOAD_EVERY.as_secs()
    );

    let started = Instant::now();
    let mut serve = start_serve(&data, &plugins, &cache);
    let mut samples: Vec<Sample> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let (mut next_sample, mut next_reload) = (SAMPLE_EVERY, RELOAD_EVERY);
    let mut restarted = None;
    let mut reloads = 0u32;
    let store = SqliteStore::open(&data).unwrap();
    loop {
        let now = started.elapsed();
        if now >= length {
            break;
        }
        if restarted.is_none() && now >= length / 2 {
            let down = Instant::now();
            let (code, lines) = serve.stop();
            assert_eq!(code, Some(0), "serve's exit at the restart: {lines:#?}");
            warnings.extend(
                lines
                    .into_iter()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR")),
            );
            serve = start_serve(&data, &plugins, &cache);
            restarted = Some((now, down.elapsed()));
        }
        if now >= next_reload {
            reloads += 1;
            let fresh = plugins.join(".hello.wasm.new");
            std::fs::write(&fresh, reloaded_hello(&hello, reloads)).unwrap();
            std::fs::rename(&fresh, plugins.join("hello.wasm")).unwrap();
            next_reload += RELOAD_EVERY;
        }
        if now >= next_sample {
            let pid = serve.child.id();
            // Runs ever recorded: the configurations' counters (retention
            // deletes the runs themselves).
            let runs = runtime
                .block_on(store.list_tasks())
                .map_or(0, |tasks| tasks.iter().map(|t| t.run_count).sum());
            samples.push(Sample {
                at: now,
                rss_kib: rss_kib(pid),
                fds: fds(pid),
                db_bytes: db_bytes(&data),
                runs,
            });
            let s = samples.last().unwrap();
            println!(
                "soak: {:>4} s  rss {:>6.1} MiB  fds {:>3}  db {:>6.1} MiB  runs started {:>7}",
                s.at.as_secs(),
                s.rss_kib as f64 / 1024.0,
                s.fds,
                mib(s.db_bytes),
                s.runs
            );
            next_sample += SAMPLE_EVERY;
        }
        warnings.extend(
            serve
                .lines
                .try_iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR")),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, lines) = serve.stop();
    assert_eq!(code, Some(0), "serve's exit at the end: {lines:#?}");
    warnings.extend(
        lines
            .into_iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR")),
    );
    report(
        &runtime, &store, &configs, &samples, restarted, reloads, &warnings,
    );
}

fn report(
    runtime: &tokio::runtime::Runtime,
    store: &SqliteStore,
    configs: &[TaskConfig],
    samples: &[Sample],
    restarted: Option<(Duration, Duration)>,
    reloads: u32,
    warnings: &[String],
) {
    let (mut lost, mut twice, mut left_running, mut abandoned) = (0, 0, 0, 0);
    let mut states: BTreeMap<&'static str, usize> = BTreeMap::new();
    for config in configs {
        let task = runtime.block_on(store.get_task(&config.name)).unwrap();
        let runs = runtime
            .block_on(store.list_runs(&RunFilter {
                task_id: Some(task.id),
                limit: Some(100_000),
                ..Default::default()
            }))
            .unwrap();
        for run in &runs {
            *states.entry(run.state.as_str()).or_default() += 1;
            match run.state {
                RunState::Running => left_running += 1,
                RunState::Abandoned => abandoned += 1,
                _ => {}
            }
        }
        let every = match config.schedule {
            Schedule::Every { interval, .. } => TimeDelta::from_std(interval).unwrap(),
            _ => unreachable!("the soak's configurations are intervals"),
        };
        let (l, t) = audit(&runs, every);
        lost += l;
        twice += t;
    }
    // Warm-up: the first quarter (compiling, the first retention passes).
    let warm = samples.len() / 4;
    let after: Vec<&Sample> = samples.iter().skip(warm.max(1)).collect();
    let rss_after: Vec<u64> = after.iter().map(|s| s.rss_kib).collect();
    let (rss_min, rss_max) = (
        rss_after.iter().min().copied().unwrap_or(0),
        rss_after.iter().max().copied().unwrap_or(0),
    );
    let first_after = after.first().map_or(0, |s| s.rss_kib);
    let last = samples.last();
    println!("\nsoak: summary");
    if let Some((at, down)) = restarted {
        println!(
            "  restart at {} s (stop, then start until serving: {} ms); {reloads} hot reloads",
            at.as_secs(),
            down.as_millis()
        );
    }
    println!(
        "  rss after warm-up: {:.1} .. {:.1} MiB; first {:.1}, last {:.1} MiB (last / first = {:.2})",
        rss_min as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        first_after as f64 / 1024.0,
        last.map_or(0.0, |s| s.rss_kib as f64 / 1024.0),
        last.map_or(0.0, |s| s.rss_kib as f64) / (first_after.max(1) as f64)
    );
    println!(
        "  fds: {} .. {}",
        samples.iter().map(|s| s.fds).min().unwrap_or(0),
        samples.iter().map(|s| s.fds).max().unwrap_or(0)
    );
    println!(
        "  database (file + WAL): max {:.1} MiB, last {:.1} MiB",
        mib(samples.iter().map(|s| s.db_bytes).max().unwrap_or(0)),
        mib(last.map_or(0, |s| s.db_bytes))
    );
    println!("  runs started: {}", last.map_or(0, |s| s.runs));
    println!("  retained records by state: {states:?}");
    println!(
        "  slots lost: {lost}; slots run twice: {twice}; left running: {left_running}; \
         abandoned: {abandoned}"
    );
    println!("  warnings and errors serve printed: {}", warnings.len());
    for w in warnings.iter().take(10) {
        println!("    {w}");
    }
    assert_eq!((lost, twice, left_running, abandoned), (0, 0, 0, 0));
}
