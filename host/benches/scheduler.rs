//! The scheduler service, measured with the real pieces: `SqliteStore` on a
//! temporary file, `Runtime`, `Plugins`, `Dispatcher` with `SystemClock`,
//! and an executor that runs `example-tasks/hello` the way `cronwerk serve`
//! does. Run with `cargo xtask bench` (it builds the components and sets
//! CRONWERK_BENCH_COMPONENTS); CRONWERK_BENCH_QUICK=1 shortens the lateness
//! run from 60 s to 10 s. Prints markdown tables.
//!
//! 1. End-to-end throughput: N one-off configurations of
//!    `Acme.HelloScheduledTask` due at the same instant; wall time from that
//!    instant until every run is recorded succeeded. The store is wrapped in
//!    a pass-through that times each call, to show where the time goes.
//! 2. Lateness: 1,000 configurations `every 1s`; lateness of each slot from
//!    its run record (started_at − scheduled_for) and, for comparison, from
//!    the moment the executor was actually called.
//! 3. Hot reload: a new version of hello renamed into a watched plugins
//!    folder, until `Plugins::get` serves its sha256.
//! 4. Restart: `Plugins::open` over 100 components, cold (compiles) and warm
//!    (compile cache).
//!
//! Beside 1, the two per-run costs alone (store calls, wasm run) and a
//! prototype of batching: the store's claim and finish SQL on its own
//! schema, 1, 16 or 256 runs per transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, TimeDelta, Utc};
use cronwerk::instance::traces::OtlpTraces;
use cronwerk::model::{
    EventSource, Level, NewEvent, RunOutcome, RunState, Schedule, SystemClock, TaskConfig, Trigger,
};
use cronwerk::plugins::{EventSink, Plugins};
use cronwerk::runtime::{CompileCache, EngineSettings, RunRequest, Runtime, sha256_hex};
use cronwerk::scheduler::trace::Tracing;
use cronwerk::scheduler::{Dispatcher, DispatcherConfig, LOOK_AHEAD};
use cronwerk::store::{
    Claim, Configurations, NewRun, RunFilter, RunFinish, RunLedger, SqliteStore, StateAndSettings,
    Store,
};

// The end-to-end tests' helpers (`with_custom_section`) serve the bench too.
#[path = "../../tests/common/mod.rs"]
mod common;
mod support;
use common::with_custom_section;
use support::{BenchExecutor, TimedStore, Timing, ms, print_breakdown, quantile, sorted};

const HELLO: &str = "Acme.HelloScheduledTask";
/// Configurations due at once in the throughput run.
const THROUGHPUT_TASKS: usize = 20_000;
/// Configurations `every 1s` in the lateness run.
const LATENESS_TASKS: usize = 1_000;
const RELOADS: usize = 20;
const RESTART_COMPONENTS: usize = 100;
/// Sequential runs for the isolated per-run costs.
const ISOLATED_RUNS: usize = 2_000;
/// Runs per batch size in the batching prototype.
const PROTOTYPE_RUNS: usize = 10_000;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A fresh SQLite store in a temp dir, wrapped to time every call; the
/// dir lives as long as the returned guard.
fn timed_temp_store() -> (
    tempfile::TempDir,
    Arc<SqliteStore>,
    Arc<Timing>,
    Arc<TimedStore>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let inner = Arc::new(SqliteStore::open(tmp.path()).unwrap());
    let timing = Arc::new(Timing::default());
    let store = TimedStore::new(inner.clone(), timing.clone());
    (tmp, inner, timing, store)
}

fn quiet_sink() -> EventSink {
    Arc::new(|_| {})
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap()
}

/// hello with its identifier string replaced in place by another of the
/// same length: the string is a data segment, its length a constant in the
/// code, so equal length keeps the component valid.
fn hello_as(hello: &[u8], identifier: &str) -> Vec<u8> {
    assert_eq!(identifier.len(), HELLO.len());
    let at: Vec<usize> = hello
        .windows(HELLO.len())
        .enumerate()
        .filter(|(_, w)| *w == HELLO.as_bytes())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "hello.wasm holds its identifier once");
    let mut out = hello.to_vec();
    out[at[0]..at[0] + HELLO.len()].copy_from_slice(identifier.as_bytes());
    out
}

/// Writes under a name the registry ignores, then renames into place.
fn write_then_rename(dir: &Path, name: &str, bytes: &[u8]) -> Instant {
    let partial = dir.join(format!("{name}.partial"));
    std::fs::write(&partial, bytes).unwrap();
    let renamed_at = Instant::now();
    std::fs::rename(partial, dir.join(name)).unwrap();
    renamed_at
}

fn dispatcher_config() -> DispatcherConfig {
    DispatcherConfig {
        instance: cronwerk::model::InstanceInfo {
            name: "bench".into(),
            roles: Vec::new(),
        },
        ..Default::default()
    }
}

struct Shared {
    runtime: Arc<Runtime>,
    plugins: Arc<Plugins>,
    hello: Vec<u8>,
    _plugins_dir: tempfile::TempDir,
}

fn executor(shared: &Shared, timing: &Arc<Timing>) -> Arc<BenchExecutor> {
    BenchExecutor::new(shared.plugins.clone(), timing.clone())
}

/// Creates `n` configurations (named `{prefix}-{i}`); returns the time it took.
async fn create_tasks(
    store: &dyn Store,
    n: usize,
    prefix: &str,
    schedule: &Schedule,
    first: DateTime<Utc>,
) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let config = TaskConfig::new(&format!("{prefix}-{i:05}"), HELLO, schedule.clone());
        store.create_task(&config, Some(first)).await.unwrap();
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------
// 1. Throughput
// ---------------------------------------------------------------------------

struct Throughput {
    runs: usize,
    created_in: Duration,
    elapsed: Duration,
    breakdown: BTreeMap<&'static str, (u64, Duration)>,
}

/// How many slots the SQLite store claims per transaction.
fn sqlite_chunk() -> usize {
    let dir = tempfile::tempdir().unwrap();
    SqliteStore::open(dir.path())
        .unwrap()
        .claims_per_transaction()
}

/// `n` one-off configurations due at once, claimed `chunk` per transaction
/// (`None`: as many as the store prefers).
async fn throughput(
    shared: &Shared,
    n: usize,
    chunk: Option<usize>,
    tracing: Tracing,
) -> Throughput {
    let (_tmp, inner, timing, store) = timed_temp_store();

    // Creating configurations takes a while; the shared due time must lie
    // after it (a slot more than 5 s late is a misfire and is skipped), so
    // estimate the rate on a throwaway store first.
    let pilot_dir = tempfile::tempdir().unwrap();
    let pilot = SqliteStore::open(pilot_dir.path()).unwrap();
    let far = Utc::now() + TimeDelta::days(1);
    let pilot_took = create_tasks(&pilot, 500, "pilot", &Schedule::at(far), far).await;
    drop(pilot);
    let estimate = pilot_took * (n as u32) / 500;
    let due = Utc::now() + delta(estimate * 3 / 2) + TimeDelta::seconds(1);
    let created_in = create_tasks(&*inner, n, "hello", &Schedule::at(due), due).await;
    let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    if wait.is_zero() {
        eprintln!(
            "warning: creating the configurations overran the due time by {:?}",
            Utc::now() - due
        );
    }
    tokio::time::sleep(wait).await;

    let dispatcher = Dispatcher::new(
        store.clone(),
        executor(shared, &timing),
        Arc::new(SystemClock),
        DispatcherConfig {
            claims_per_transaction: chunk,
            tracing,
            ..dispatcher_config()
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = Instant::now();
    let monitor = async {
        // Done when nothing is due any more (every slot claimed) and,
        // after that, nothing is running (every run recorded). Polls the
        // store directly so the polling does not count in the breakdown.
        let running = RunFilter {
            state: Some(RunState::Running),
            limit: Some(1),
            ..Default::default()
        };
        loop {
            if inner.earliest_due().await.unwrap().is_none()
                && inner.list_runs(&running).await.unwrap().is_empty()
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(300), "stuck");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = start.elapsed();
        stop.send(()).unwrap();
        elapsed
    };
    let ((), elapsed) = tokio::join!(
        dispatcher.run(async move {
            let _ = stopped.await;
        }),
        monitor
    );
    let succeeded = inner
        .list_runs(&RunFilter {
            state: Some(RunState::Succeeded),
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    let all = inner.list_runs(&RunFilter::default()).await.unwrap().len();
    assert_eq!(
        (succeeded, all),
        (n, n),
        "every configuration ran once and succeeded"
    );
    Throughput {
        runs: n,
        created_in,
        elapsed,
        breakdown: timing.snapshot(),
    }
}

/// Throughput with traces on (OTLP/HTTP to a loopback receiver that
/// counts what it is sent) and off, alternated so drift does not favour
/// either; and what "off" adds to a run: three clock reads (and two per
/// claim transaction, shared by its runs) and a branch.
struct Traced {
    off: Vec<f64>,
    on: Vec<f64>,
    spans_made: u64,
    spans_received: u64,
    clock_reads_ns: f64,
}

const TRACED_ROUNDS: usize = 2;

async fn traces_on_and_off(shared: &Shared) -> Traced {
    let receiver = common::otlp::Collector::start();
    let url = format!("{}/v1/traces", receiver.base());
    let mut traced = Traced {
        off: Vec::new(),
        on: Vec::new(),
        spans_made: 0,
        spans_received: 0,
        clock_reads_ns: 0.0,
    };
    for _ in 0..TRACED_ROUNDS {
        let off = throughput(shared, THROUGHPUT_TASKS, None, Tracing::default()).await;
        traced.off.push(off.runs as f64 / off.elapsed.as_secs_f64());
        let exporter = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || OtlpTraces::start(&url, "bench", "bench"))
                .await
                .unwrap()
                .unwrap()
        };
        let exporter = Arc::new(exporter);
        let on = throughput(
            shared,
            THROUGHPUT_TASKS,
            None,
            Tracing(Some(exporter.clone())),
        )
        .await;
        traced.on.push(on.runs as f64 / on.elapsed.as_secs_f64());
        tokio::task::spawn_blocking(move || exporter.shutdown())
            .await
            .unwrap();
        // Each run: `run` and its claim, instantiate, execute and record.
        traced.spans_made += on.runs as u64 * 5;
    }
    traced.spans_received = receiver.spans().len() as u64;
    const READS: u32 = 1_000_000;
    let start = Instant::now();
    for _ in 0..READS {
        std::hint::black_box(SystemTime::now());
    }
    traced.clock_reads_ns = start.elapsed().as_nanos() as f64 / f64::from(READS) * 3.0;
    traced
}

impl Traced {
    fn print(&self, runs_per_s: f64) {
        let best = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        let list = |v: &[f64]| {
            v.iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| the same, {TRACED_ROUNDS} rounds alternated: traces off | {} runs/s (best {:.0}) | |",
            list(&self.off),
            best(&self.off)
        );
        println!(
            "| the same, traces on: OTLP/HTTP to a loopback receiver | {} runs/s (best {:.0}): \
             **on / off = {:.2}**; {} of {} spans received (the rest dropped at the exporter's \
             2,048-span queue) | |",
            list(&self.on),
            best(&self.on),
            best(&self.on) / best(&self.off),
            self.spans_received,
            self.spans_made
        );
        println!(
            "| traces off: what a run does beyond the code without traces (3 clock reads, one \
             branch) | {:.0} ns per run = {:.3} % of a run at {runs_per_s:.0} runs/s | no cost |",
            self.clock_reads_ns,
            self.clock_reads_ns / (1e9 / runs_per_s) * 100.0
        );
    }
}

/// The two per-run costs, each alone on one thread: a claim and a finish
/// (two write transactions and the state read, as the dispatcher does them)
/// on a fresh store, and a `Runtime::run` of hello.
async fn isolated_costs(shared: &Shared) -> (Duration, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(tmp.path()).unwrap();
    let slot = Utc::now() - TimeDelta::seconds(1);
    let mut tasks = Vec::new();
    for i in 0..ISOLATED_RUNS {
        let config = TaskConfig::new(&format!("iso-{i:05}"), HELLO, Schedule::at(slot));
        tasks.push(store.create_task(&config, Some(slot)).await.unwrap());
    }
    let start = Instant::now();
    for task in &tasks {
        let now = Utc::now();
        let run = NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            task_id: task.id,
            task_name: task.config.name.clone(),
            implementation: HELLO.into(),
            trigger: Trigger::Schedule,
            attempt: 1,
            scheduled_for: Some(slot),
            started_at: now,
            lease_until: now + TimeDelta::seconds(30),
            instance: "bench".into(),
            message: String::new(),
            payload: None,
        };
        assert_eq!(
            store.claim_slot(task.id, slot, None, &run).await.unwrap(),
            Claim::Claimed
        );
        let state = store.load_state(task.id).await.unwrap();
        let finish = RunFinish {
            run_id: run.id.clone(),
            task_id: task.id,
            finished_at: Utc::now(),
            outcome: RunOutcome {
                state: RunState::Succeeded,
                reason: None,
                message: String::new(),
                duration_us: 40,
                fuel: 10_000,
                peak_memory_bytes: 1 << 20,
                component_sha256: Some(sha256_hex(b"x")),
                component_version: Some("0.1.0".into()),
                events: vec![NewEvent {
                    at: Utc::now(),
                    level: Level::Warning,
                    source: EventSource::Task,
                    code: "NOTIFICATION".into(),
                    message: "Hello from my scheduled task!".into(),
                    task_id: Some(task.id),
                    run_id: Some(run.id.clone()),
                }],
            },
            task_state: Some(state),
            retry: None,
            started_at: None,
            follow_ups: Vec::new(),
            // What a run of this task keeps for replay, about this size.
            inputs: Some(format!(
                "{{\"configuration\":\"{}\",\"identifier\":\"{HELLO}\",\"trigger\":\"schedule\",\
                 \"attempt\":1,\"scheduled_for\":\"{}\",\"last_run\":null,\"next_run\":null,\
                 \"run_count\":0,\"properties\":{{}},\"payload\":null,\"settings\":{{}},\
                 \"state\":{{}},\"instance\":\"bench\",\"limits\":{{\"timeout\":\"1m\",\
                 \"fuel\":null,\"memory_bytes\":134217728}},\"grants\":{{\"dirs\":[],\"http_hosts\":[]}}}}",
                task.config.name, slot
            )),
        };
        assert!(store.finish_run(&finish).await.unwrap());
    }
    let store_per_run = start.elapsed() / ISOLATED_RUNS as u32;

    let component = shared.plugins.get(HELLO).unwrap();
    let request = RunRequest::default();
    for _ in 0..200 {
        shared.runtime.run(&component, request.clone()).await;
    }
    let start = Instant::now();
    for _ in 0..ISOLATED_RUNS {
        let report = shared.runtime.run(&component, request.clone()).await;
        assert!(report.outcome.is_success());
    }
    let wasm_per_run = start.elapsed() / ISOLATED_RUNS as u32;
    (store_per_run, wasm_per_run)
}

/// What batching would buy: the SQL that `claim_slot`, `load_state` and
/// `finish_run` run for one run (copied from store/sqlite.rs), on the
/// store's own schema (`SqliteStore::open` creates it, then a plain
/// rusqlite connection takes over), with `batch` claims in one transaction
/// and then their `batch` finishes in another. Store work only, one thread;
/// returns µs per run.
fn batching_prototype(batch: usize, runs: usize) -> f64 {
    use rusqlite::{Connection, TransactionBehavior, params};
    let tmp = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(tmp.path()).unwrap());
    let mut conn = Connection::open(tmp.path().join("cronwerk.db")).unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    let slot = 1_000_i64;
    {
        let config = serde_json::to_string(&TaskConfig::new(
            "proto",
            HELLO,
            Schedule::at(DateTime::from_timestamp_millis(slot).unwrap()),
        ))
        .unwrap();
        let tx = conn.transaction().unwrap();
        for i in 0..runs {
            tx.execute(
                "INSERT INTO tasks (name, enabled, config, created_at, updated_at, next_run_at)
                 VALUES (?1, 1, ?2, 0, 0, ?3)",
                params![format!("proto-{i:05}"), config, slot],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let ids: Vec<(i64, String)> = (1..=runs as i64)
        .map(|id| (id, uuid::Uuid::now_v7().to_string()))
        .collect();
    let start = Instant::now();
    for chunk in ids.chunks(batch) {
        let now = Utc::now().timestamp_millis();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        for (task_id, run_id) in chunk {
            let won = tx
                .prepare_cached(
                    "UPDATE tasks SET next_run_at = ?1, running_run_id = ?2, last_run_at = ?3,
                            run_count = run_count + 1, retry_at = NULL, retry_attempt = 0
                     WHERE id = ?4 AND next_run_at = ?5 AND enabled = 1
                       AND running_run_id IS NULL",
                )
                .unwrap()
                .execute(params![None::<i64>, run_id, now, task_id, slot])
                .unwrap();
            assert_eq!(won, 1);
            tx.prepare_cached(
                "INSERT INTO runs (id, task_id, task_name, implementation, trigger, attempt,
                                   scheduled_for, started_at, finished_at, lease_until, state,
                                   message, instance)
                 VALUES (?1, ?2, 'proto', ?3, 'schedule', 1, ?4, ?5, NULL, ?6, 'running', '',
                         'bench')",
            )
            .unwrap()
            .execute(params![run_id, task_id, HELLO, slot, now, now + 30_000])
            .unwrap();
        }
        tx.commit().unwrap();
        for (task_id, _) in chunk {
            let mut stmt = conn
                .prepare_cached("SELECT key, value FROM task_state WHERE task_id = ?1")
                .unwrap();
            let state: Vec<(String, String)> = stmt
                .query_map([task_id], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(state.is_empty());
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        for (task_id, run_id) in chunk {
            let done = tx
                .prepare_cached(
                    "UPDATE runs SET state = 'succeeded', reason = NULL, message = '',
                            finished_at = ?1, duration_us = 40, fuel = 10000,
                            peak_memory = 1048576, component_sha256 = ?2,
                            component_version = '0.1.0', lease_until = NULL
                     WHERE id = ?3 AND state = 'running'",
                )
                .unwrap()
                .execute(params![now, sha256_hex(b"x"), run_id])
                .unwrap();
            assert_eq!(done, 1);
            tx.prepare_cached(
                "UPDATE tasks SET running_run_id = NULL, last_outcome = 'succeeded',
                        last_message = '', failed_count = failed_count + 0, retry_at = NULL,
                        retry_attempt = 0
                 WHERE id = ?1 AND running_run_id = ?2",
            )
            .unwrap()
            .execute(params![task_id, run_id])
            .unwrap();
            tx.prepare_cached(
                "INSERT INTO events (at, level, source, code, message, task_id, run_id)
                 VALUES (?1, 3, 'task', 'NOTIFICATION', 'Hello from my scheduled task!', ?2, ?3)",
            )
            .unwrap()
            .execute(params![now, task_id, run_id])
            .unwrap();
            tx.prepare_cached("DELETE FROM task_state WHERE task_id = ?1")
                .unwrap()
                .execute([task_id])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / runs as f64
}

// ---------------------------------------------------------------------------
// 2. Lateness
// ---------------------------------------------------------------------------

struct Lateness {
    seconds: u64,
    expected: usize,
    ran: usize,
    skipped: usize,
    /// Slots with more than one record (must be 0).
    twice: usize,
    /// started_at − scheduled_for from the run records, ms, sorted.
    recorded: Vec<f64>,
    /// executor entered − scheduled_for, ms, sorted.
    actual: Vec<f64>,
    breakdown: BTreeMap<&'static str, (u64, Duration)>,
}

async fn lateness(
    shared: &Shared,
    n: usize,
    seconds: u64,
    create_per_task: Duration,
    look_ahead: Duration,
) -> Lateness {
    let (_tmp, inner, timing, store) = timed_temp_store();
    // First slot on a whole second after the configurations exist.
    let lead = create_per_task * (n as u32) * 2 + Duration::from_secs(2);
    let first = {
        let t = Utc::now() + delta(lead);
        DateTime::from_timestamp(t.timestamp() + 1, 0).unwrap()
    };
    let schedule = Schedule::every(Duration::from_secs(1), first).unwrap();
    create_tasks(&*inner, n, "every", &schedule, first).await;
    assert!(Utc::now() < first, "creating took longer than planned");

    let exec = executor(shared, &timing);
    let dispatcher = Dispatcher::new(
        store.clone(),
        exec.clone(),
        Arc::new(SystemClock),
        DispatcherConfig {
            look_ahead,
            ..dispatcher_config()
        },
    );
    let end = first + TimeDelta::seconds(seconds as i64);
    // Stop half a second after the window, so its last slot has run.
    let stop_at = end + TimeDelta::milliseconds(500);
    dispatcher
        .run(async move {
            let wait = (stop_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        })
        .await;

    let runs = inner.list_runs(&RunFilter::default()).await.unwrap();
    let in_window = |s: DateTime<Utc>| s >= first && s < end;
    let mut ran = 0;
    let mut skipped = 0;
    let mut recorded = Vec::new();
    let mut per_slot: BTreeMap<(i64, DateTime<Utc>), usize> = BTreeMap::new();
    for run in &runs {
        let Some(slot) = run.scheduled_for.filter(|s| in_window(*s)) else {
            continue;
        };
        *per_slot.entry((run.task_id, slot)).or_default() += 1;
        if run.state == RunState::Skipped {
            skipped += 1;
        } else {
            ran += 1;
            let started = run.started_at.expect("a run that ran has started");
            recorded.push((started - slot).num_microseconds().unwrap() as f64 / 1e3);
        }
    }
    let actual = exec
        .entered
        .lock()
        .unwrap()
        .iter()
        .filter(|(slot, _)| in_window((*slot).into()))
        .map(|(slot, entered)| match entered.duration_since(*slot) {
            Ok(late) => ms(late),
            Err(early) => -ms(early.duration()),
        })
        .collect();
    Lateness {
        seconds,
        expected: n * seconds as usize,
        ran,
        skipped,
        twice: per_slot.values().filter(|n| **n > 1).count(),
        recorded: sorted(recorded),
        actual: sorted(actual),
        breakdown: timing.snapshot(),
    }
}

// ---------------------------------------------------------------------------
// 3. Hot reload
// ---------------------------------------------------------------------------

/// Latencies from the rename to `get` serving the new sha256, and the cold
/// load time of one such version (compile + link + describe, no watcher).
async fn hot_reload(shared: &Shared) -> (Vec<f64>, Vec<f64>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("hello.wasm"), &shared.hello).unwrap();
    let plugins = Plugins::open(
        shared.runtime.clone(),
        dir.clone(),
        CompileCache::open(&tmp.path().join("cache")).unwrap(),
        quiet_sink(),
    )
    .await
    .unwrap();
    let _watch = plugins.watch().unwrap();
    let mut changes = plugins.changes();
    // Let the watcher's first rescan pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_le_bytes();

    let mut latencies = Vec::new();
    for i in 0..RELOADS {
        let bytes = with_custom_section(
            &shared.hello,
            "cronwerk-bench",
            &[&nonce[..], &i.to_le_bytes()].concat(),
        );
        let sha = sha256_hex(&bytes);
        let renamed_at = write_then_rename(&dir, "hello.wasm", &bytes);
        let serving = |p: &Plugins| p.get(HELLO).is_some_and(|c| c.sha256() == sha);
        tokio::time::timeout(
            Duration::from_secs(10),
            changes.wait_for(|_| serving(&plugins)),
        )
        .await
        .expect("the new version was served within 10 s")
        .unwrap();
        latencies.push(ms(renamed_at.elapsed()));
        // Let the notification burst settle before the next version.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let mut loads = Vec::new();
    for i in 0..5 {
        let bytes = with_custom_section(
            &shared.hello,
            "cronwerk-bench-load",
            &[&nonce[..], &[i]].concat(),
        );
        let start = Instant::now();
        shared
            .runtime
            .load_bytes(bytes, "hello.wasm".into())
            .await
            .unwrap();
        loads.push(ms(start.elapsed()));
    }
    (sorted(latencies), sorted(loads))
}

// ---------------------------------------------------------------------------
// 4. Restart
// ---------------------------------------------------------------------------

struct Restart {
    cold: Duration,
    cold_stats: (u64, u64),
    runtime_new: Duration,
    warm: Duration,
    warm_stats: (u64, u64),
}

async fn restart(shared: &Shared) -> Restart {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plugins");
    let cache = tmp.path().join("cache");
    std::fs::create_dir(&dir).unwrap();
    // Distinct identifiers (Acme.HelloScheduled0000 …), so that all 100
    // serve: no conflicts.
    for i in 0..RESTART_COMPONENTS {
        let bytes = hello_as(&shared.hello, &format!("Acme.HelloScheduled{i:04}"));
        std::fs::write(dir.join(format!("hello-{i:03}.wasm")), bytes).unwrap();
    }
    let check = |plugins: &Plugins| {
        let entries = plugins.entries();
        assert_eq!(entries.len(), RESTART_COMPONENTS);
        assert!(entries.iter().all(|e| e.serving), "every component serves");
    };

    let start = Instant::now();
    let cold = Plugins::open(
        shared.runtime.clone(),
        dir.clone(),
        CompileCache::open(&cache).unwrap(),
        quiet_sink(),
    )
    .await
    .unwrap();
    let cold_took = start.elapsed();
    check(&cold);
    let cold_stats = cold.cache_stats();
    drop(cold);

    // A restarted process builds its engine again, then opens the folder.
    let start = Instant::now();
    let runtime = Arc::new(Runtime::new(EngineSettings::default()).unwrap());
    let runtime_new = start.elapsed();
    let start = Instant::now();
    let warm = Plugins::open(
        runtime,
        dir,
        CompileCache::open(&cache).unwrap(),
        quiet_sink(),
    )
    .await
    .unwrap();
    let warm_took = start.elapsed();
    check(&warm);
    Restart {
        cold: cold_took,
        cold_stats,
        runtime_new,
        warm: warm_took,
        warm_stats: warm.cache_stats(),
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let dir = std::env::var_os("CRONWERK_BENCH_COMPONENTS")
        .expect("run with `cargo xtask bench` (it builds the components and sets CRONWERK_BENCH_COMPONENTS)");
    let hello_path = PathBuf::from(dir).join("hello.wasm");
    let quick = std::env::var("CRONWERK_BENCH_QUICK").is_ok_and(|v| v == "1");
    let lateness_seconds = if quick { 10 } else { 60 };
    // Like `cronwerk serve`: a multi-threaded runtime, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    rt.block_on(async {
        let runtime = Arc::new(Runtime::new(EngineSettings::default()).unwrap());
        let hello = std::fs::read(&hello_path).unwrap();
        let plugins_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(plugins_dir.path().join("plugins")).unwrap();
        std::fs::copy(&hello_path, plugins_dir.path().join("plugins/hello.wasm")).unwrap();
        let plugins = Plugins::open(
            runtime.clone(),
            plugins_dir.path().join("plugins"),
            CompileCache::open(&plugins_dir.path().join("cache")).unwrap(),
            quiet_sink(),
        )
        .await
        .unwrap();
        assert!(plugins.get(HELLO).is_some());
        let shared = Shared {
            runtime,
            plugins,
            hello,
            _plugins_dir: plugins_dir,
        };

        // Every due slot in one claim (as before claims went in chunks),
        // and PostgreSQL's chunk of 500, against SQLite's own.
        let mut chunked: Vec<(usize, Throughput)> = Vec::new();
        for chunk in [THROUGHPUT_TASKS, 500] {
            let off = Tracing::default();
            chunked.push((chunk, throughput(&shared, THROUGHPUT_TASKS, Some(chunk), off).await));
        }
        let tp = throughput(&shared, THROUGHPUT_TASKS, None, Tracing::default()).await;
        let traced = traces_on_and_off(&shared).await;
        // The peer right after, on a SQLite file of its own in the same
        // folder: 64 workers was its best setting here (1, its default,
        // manages under 200 jobs/s at this size).
        let peer_dir = tempfile::tempdir().unwrap();
        let peer_db = peer_dir.path().join("apalis.db");
        let peer = support::peer::run(
            ["--sqlite", peer_db.to_str().unwrap()],
            THROUGHPUT_TASKS,
            64,
        );
        let (store_per_run, wasm_per_run) = isolated_costs(&shared).await;
        let batched: Vec<(usize, f64)> = [1, 16, 256]
            .into_iter()
            .map(|b| (b, batching_prototype(b, PROTOTYPE_RUNS)))
            .collect();
        let create_per_task = tp.created_in / tp.runs as u32;
        // Claimed when due (no look-ahead: how every slot was claimed
        // before), then claimed ahead as `serve` does by default.
        let late_when_due = lateness(
            &shared,
            LATENESS_TASKS,
            lateness_seconds,
            create_per_task,
            Duration::ZERO,
        )
        .await;
        let late = lateness(
            &shared,
            LATENESS_TASKS,
            lateness_seconds,
            create_per_task,
            LOOK_AHEAD,
        )
        .await;
        let (reloads, loads) = hot_reload(&shared).await;
        let rs = restart(&shared).await;

        let runs_per_s = tp.runs as f64 / tp.elapsed.as_secs_f64();
        println!(
            "Scheduler service (SqliteStore on a temp file, Runtime, Plugins, Dispatcher, \
             SystemClock; tokio multi-thread, {cores} workers)\n"
        );
        println!("| measure | result | target |");
        println!("| --- | --- | --- |");
        println!(
            "| end-to-end, {} one-off `hello` configurations due at once, history recorded | \
             **{runs_per_s:.0} runs/s** ({:.2} s until all {} recorded succeeded) | ≥ 20000 runs/s |",
            tp.runs,
            tp.elapsed.as_secs_f64(),
            tp.runs
        );
        for (chunk, t) in &chunked {
            println!(
                "| the same, claimed at most {chunk} per transaction (SQLite's own: {}) | \
                 {:.0} runs/s ({:.2} s) | |",
                sqlite_chunk(),
                t.runs as f64 / t.elapsed.as_secs_f64(),
                t.elapsed.as_secs_f64()
            );
        }
        match &peer {
            Some(p) => println!(
                "| peer, same run: {}, {} jobs due at once, native no-op handler, {} workers, \
                 jobs recorded done | {:.0} runs/s: **cronwerk / peer = {:.2}** | cronwerk ≥ peer |",
                p.label,
                p.jobs,
                p.workers,
                p.runs_per_s,
                runs_per_s / p.runs_per_s
            ),
            None => println!(
                "| peer (apalis) | not measured: run through `cargo xtask bench` | |"
            ),
        }
        println!(
            "| per run, alone on one thread: store (claim_slot + load_state + finish_run) | \
             {:.1} µs ({:.0}/s) | |",
            store_per_run.as_secs_f64() * 1e6,
            1.0 / store_per_run.as_secs_f64()
        );
        println!(
            "| per run, alone on one thread: wasm (`Runtime::run` of hello) | {:.1} µs ({:.0}/s) | |",
            wasm_per_run.as_secs_f64() * 1e6,
            1.0 / wasm_per_run.as_secs_f64()
        );
        for (batch, us) in &batched {
            println!(
                "| per run, prototype: the same SQL with {batch} claim(s) per transaction, then {batch} finish(es) | \
                 {us:.1} µs ({:.0}/s) | |",
                1e6 / us
            );
        }
        println!(
            "| creating a configuration (`create_task`) | {:.1} µs each | |",
            create_per_task.as_secs_f64() * 1e6
        );
        for (how, late, target) in [
            ("claimed when due", &late_when_due, ""),
            (
                &*format!(
                    "claimed {} ahead (default)",
                    humantime::format_duration(LOOK_AHEAD)
                ),
                &late,
                "p99 ≤ 5 ms",
            ),
        ] {
            println!(
                "| lateness, {} configurations `every 1s` for {} s, {how}: recorded \
                 (started_at − scheduled_for) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | {target} |",
                LATENESS_TASKS,
                late.seconds,
                quantile(&late.recorded, 0.5),
                quantile(&late.recorded, 0.99),
                late.recorded.last().copied().unwrap_or(f64::NAN)
            );
            println!(
                "| lateness, same runs, {how}: executor actually called − scheduled_for | \
                 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | |",
                quantile(&late.actual, 0.5),
                quantile(&late.actual, 0.99),
                late.actual.last().copied().unwrap_or(f64::NAN)
            );
            println!(
                "| slots in the window, {how} | {} expected: {} ran, {} skipped, {} missing, \
                 {} with two records | all ran, once |",
                late.expected,
                late.ran,
                late.skipped,
                late.expected as i64 - late.ran as i64 - late.skipped as i64,
                late.twice
            );
        }
        println!(
            "| hot reload, rename → `get` serves the new sha256 ({} versions) | \
             p50 {:.0} ms, max {:.0} ms | ≤ 300 ms |",
            RELOADS,
            quantile(&reloads, 0.5),
            reloads.last().unwrap()
        );
        println!(
            "| of which loading one new version (`Runtime::load_bytes`: compile, link, describe) | \
             p50 {:.0} ms | |",
            quantile(&loads, 0.5)
        );
        println!(
            "| restart, cold: `Plugins::open` over {} components, empty cache (hits/misses {}/{}) | \
             {:.2} s | |",
            RESTART_COMPONENTS,
            rs.cold_stats.0,
            rs.cold_stats.1,
            rs.cold.as_secs_f64()
        );
        println!(
            "| restart, warm: `Runtime::new` + `Plugins::open` over the same cache (hits/misses {}/{}) | \
             **{:.0} ms** ({:.0} + {:.0} ms) | ≤ 1 s warm |",
            rs.warm_stats.0,
            rs.warm_stats.1,
            ms(rs.runtime_new + rs.warm),
            ms(rs.runtime_new),
            ms(rs.warm)
        );

        traced.print(runs_per_s);
        print_breakdown(
            &format!(
                "Where the time goes, end-to-end run ({} runs in {:.2} s; summed per call, \
                 including waits for the store's connection mutex)",
                tp.runs,
                tp.elapsed.as_secs_f64()
            ),
            &tp.breakdown,
        );
        print_breakdown(
            &format!("Where the time goes, lateness run ({} s)", late.seconds),
            &late.breakdown,
        );
    });
}
