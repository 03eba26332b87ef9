//! Size: one real `cronwerk serve` on SQLite with 100,000 configurations,
//! 1,000 of them due every second (`every 100s`, anchors spread over the
//! hundred seconds). What it shows is whether the work of a pass follows
//! what is due rather than what exists: lateness of the runs (from their
//! records), the resident memory of the process (against the same process
//! with 1,000 configurations, which gives the memory per configuration),
//! the time from starting `serve` again to its first run, and the store's
//! two per-pass reads timed at both sizes. Every slot of the measured
//! window must have run exactly once. `cargo xtask bench size` runs it;
//! `CRONWERK_BENCH_QUICK=1` shortens the window from 30 s to 10 s.

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

mod support;
use support::{quantile, sorted};

const HELLO: &str = "Acme.HelloScheduledTask";
/// Each configuration runs every this many seconds; with the anchors spread
/// over them, configurations / PERIOD are due each second.
const PERIOD: u64 = 100;

struct Site {
    _dir: tempfile::TempDir,
    data: PathBuf,
    plugins: PathBuf,
    cache: PathBuf,
}

/// A data folder with `n` configurations of hello `every 100s`, the first
/// slots `lead` from now; a plugins folder with hello, already compiled
/// into the cache (so starting `serve` measures the scheduler, not the
/// compiler). Returns it, when the first slots are due, and how long
/// creating the configurations took.
fn site(n: usize, components: &Path, lead: Duration) -> (Site, DateTime<Utc>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let site = Site {
        data: dir.path().join("data"),
        plugins: dir.path().join("plugins"),
        cache: dir.path().join("cache"),
        _dir: dir,
    };
    std::fs::create_dir_all(&site.plugins).unwrap();
    std::fs::copy(
        components.join("hello.wasm"),
        site.plugins.join("hello.wasm"),
    )
    .unwrap();
    let warmed = Command::new(env!("CARGO_BIN_EXE_cronwerk"))
        .arg("inspect")
        .arg(site.plugins.join("hello.wasm"))
        .arg("--cache-dir")
        .arg(&site.cache)
        .output()
        .unwrap();
    assert!(warmed.status.success(), "{warmed:?}");
    let start = Utc::now() + TimeDelta::from_std(lead).unwrap();
    let base = DateTime::from_timestamp(start.timestamp() + 1, 0).unwrap();
    let store = SqliteStore::open(&site.data).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = Instant::now();
    rt.block_on(async {
        for i in 0..n {
            let anchor = base + TimeDelta::seconds((i as u64 % PERIOD) as i64);
            let schedule = Schedule::every(Duration::from_secs(PERIOD), anchor).unwrap();
            let config = TaskConfig::new(&format!("t{i:06}"), HELLO, schedule);
            store.create_task(&config, Some(anchor)).await.unwrap();
        }
    });
    (site, base, began.elapsed())
}

fn start_serve(site: &Site) -> Serve {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cronwerk"));
    cmd.arg("--data-dir")
        .arg(&site.data)
        .args(["serve", "--name", "size", "--listen", "none"])
        .arg("--plugins")
        .arg(&site.plugins)
        .arg("--cache-dir")
        .arg(&site.cache);
    start_serving(cmd, "size")
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn runs_since(
    store: &SqliteStore,
    rt: &tokio::runtime::Runtime,
    since: DateTime<Utc>,
) -> Vec<RunRecord> {
    rt.block_on(store.list_runs(&RunFilter {
        since: Some(since),
        limit: Some(u32::MAX),
        ..Default::default()
    }))
    .unwrap()
}

/// Mean time of `call` over 20 calls, in ms.
fn mean_ms<T>(rt: &tokio::runtime::Runtime, mut call: impl AsyncFnMut() -> T) -> f64 {
    let began = Instant::now();
    for _ in 0..20 {
        rt.block_on(call());
    }
    began.elapsed().as_secs_f64() * 1000.0 / 20.0
}

/// The store's two reads of every pass at this size: the earliest due time
/// and the configurations due by `horizon` (one second's worth).
fn pass_reads(
    site: &Site,
    rt: &tokio::runtime::Runtime,
    horizon: DateTime<Utc>,
) -> (f64, f64, usize) {
    let store = SqliteStore::open(&site.data).unwrap();
    let due = rt.block_on(store.due_tasks(horizon)).unwrap().len();
    let earliest = mean_ms(rt, async || store.earliest_due().await.unwrap());
    let due_ms = mean_ms(rt, async || store.due_tasks(horizon).await.unwrap());
    (earliest, due_ms, due)
}

/// What one serve over one site measured.
struct Served {
    configurations: usize,
    serving_after: Duration,
    first_run_after: Duration,
    rss_mib: f64,
    peak_mib: f64,
    lateness_ms: Vec<f64>,
    expected: usize,
    ran: usize,
    twice: usize,
}

/// Serves `site` for `seconds`, then checks every slot of the window.
fn serve_for(site: &Site, n: usize, seconds: u64, rt: &tokio::runtime::Runtime) -> Served {
    let spawned = Instant::now();
    let spawned_at = Utc::now();
    let serve = start_serve(site);
    let serving_after = spawned.elapsed();
    let store = SqliteStore::open(&site.data).unwrap();
    let first_run_after = loop {
        if !runs_since(&store, rt, spawned_at).is_empty() {
            break spawned.elapsed();
        }
        assert!(spawned.elapsed() < Duration::from_secs(120), "no run");
        std::thread::sleep(Duration::from_millis(5));
    };
    // The window: whole seconds from 3 s after the first run.
    let from = DateTime::from_timestamp(Utc::now().timestamp() + 3, 0).unwrap();
    let to = from + TimeDelta::seconds(seconds as i64);
    std::thread::sleep((to - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(2));
    let pid = serve.child.id();
    let (rss, peak) = (rss_mib(pid, "VmRSS:"), rss_mib(pid, "VmHWM:"));
    let (code, lines) = serve.stop();
    assert_eq!(code, Some(0), "{lines:#?}");

    let runs = runs_since(&store, rt, from - TimeDelta::seconds(1));
    let mut per_slot: BTreeMap<(i64, DateTime<Utc>), Vec<&RunRecord>> = BTreeMap::new();
    for r in &runs {
        if let Some(slot) = r.scheduled_for.filter(|s| *s >= from && *s < to) {
            per_slot.entry((r.task_id, slot)).or_default().push(r);
        }
    }
    let lateness_ms = per_slot
        .values()
        .flatten()
        .filter(|r| r.state == RunState::Succeeded)
        .filter_map(|r| {
            Some((r.started_at? - r.scheduled_for?).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    Served {
        configurations: n,
        serving_after,
        first_run_after,
        rss_mib: rss,
        peak_mib: peak,
        lateness_ms: sorted(lateness_ms),
        expected: n / PERIOD as usize * seconds as usize,
        ran: per_slot
            .values()
            .filter(|r| r.iter().any(|x| x.state == RunState::Succeeded))
            .count(),
        twice: per_slot.values().filter(|r| r.len() > 1).count(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(components) = std::env::var_os("CRONWERK_BENCH_COMPONENTS").map(PathBuf::from) else {
        eprintln!("size: CRONWERK_BENCH_COMPONENTS is not set; run `cargo xtask bench size`");
        return;
    };
    let quick = std::env::var("CRONWERK_BENCH_QUICK").is_ok_and(|v| v == "1");
    let seconds = if quick { 10 } else { 30 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let mut served = Vec::new();
    let mut reads = Vec::new();
    for n in [1_000, 100_000] {
        // Far enough ahead that the first slots come after creating them.
        let (site, first, created_in) =
            site(n, &components, Duration::from_secs(n as u64 / 4_000 + 30));
        eprintln!(
            "size: {n} configurations created in {:.1} s",
            created_in.as_secs_f64()
        );
        reads.push((n, pass_reads(&site, &rt, first)));
        served.push(serve_for(&site, n, seconds, &rt));
        if n == 100_000 {
            // Started again over the same folder: what a restart costs.
            served.push(serve_for(&site, n, seconds.min(10), &rt));
        }
    }

    println!(
        "Size: one `cronwerk serve` (release build, SQLite, --listen none), configurations of \
         hello `every {PERIOD}s` with their slots spread so that configurations/{PERIOD} are due \
         each second; lateness from the run records (started_at − scheduled_for) over whole \
         seconds of the window\n"
    );
    println!(
        "| configurations | due per second | start | serving after | first run after | \
         lateness p50 / p99 / max | slots: expected / ran once / twice | RSS (peak) |"
    );
    println!("| ---: | ---: | --- | ---: | ---: | --- | --- | --- |");
    for (i, s) in served.iter().enumerate() {
        // A first start waits for the slots, which begin once every
        // configuration exists; a restart meets them going.
        let (start, first_run) = if i == 2 {
            ("restart", format!("{} ms", s.first_run_after.as_millis()))
        } else {
            ("first", "(slots begin later)".to_owned())
        };
        println!(
            "| {} | {} | {start} | {} ms | {first_run} | {:.1} / {:.1} / {:.1} ms | {} / {} / {} | \
             {:.0} MiB ({:.0}) |",
            s.configurations,
            s.configurations / PERIOD as usize,
            s.serving_after.as_millis(),
            quantile(&s.lateness_ms, 0.5),
            quantile(&s.lateness_ms, 0.99),
            s.lateness_ms.last().copied().unwrap_or(f64::NAN),
            s.expected,
            s.ran,
            s.twice,
            s.rss_mib,
            s.peak_mib,
        );
    }
    let (small, big) = (&served[0], &served[1]);
    println!(
        "\nMemory per configuration: ({:.0} − {:.0} MiB) / {} = {:.2} KiB",
        big.rss_mib,
        small.rss_mib,
        big.configurations - small.configurations,
        (big.rss_mib - small.rss_mib) * 1024.0 / (big.configurations - small.configurations) as f64
    );
    println!(
        "\n| configurations | `earliest_due` | `due_tasks` (one second's slots) | rows it returned |"
    );
    println!("| ---: | ---: | ---: | ---: |");
    for (n, (earliest, due, rows)) in &reads {
        println!("| {n} | {earliest:.3} ms | {due:.3} ms | {rows} |");
    }
}
