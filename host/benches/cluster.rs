//! Several scheduler instances on one PostgreSQL database, as a cluster of
//! `cronwerk serve` processes runs them, measured with the real pieces: per
//! instance a `PostgresStore` (its own connection pool and LISTEN
//! connection), its own `Runtime` and `Plugins` over a folder holding
//! `hello.wasm`, and a `Dispatcher` that schedules by the store's clock
//! (the database's) and runs whatever `Plugins::get` serves. The instances
//! live in this one process, on one multi-threaded Tokio runtime with one
//! worker per core: what is measured is the claim protocol and the store,
//! not process start-up. Each store is wrapped in the timing pass-through
//! (timings summed over the instances) to show where the time goes.
//!
//! With 1 and with 3 instances, each on a fresh database, first with the
//! server's `fsync` on (its default: a commit waits for the disk), then
//! off:
//!
//! 1. Throughput with exactly-once claims: N one-off configurations of
//!    `Acme.HelloScheduledTask` due at one instant; wall time from that
//!    instant until every run is recorded. Afterwards every configuration
//!    must have exactly one run, succeeded.
//! 2. Lateness: M configurations `every 1s` for S seconds; lateness of each
//!    slot from the moment the executor was called. Afterwards every slot
//!    of the window must have exactly one record.
//!
//! The server comes from `CRONWERK_BENCH_POSTGRES` (a connection URL; `cargo
//! xtask bench` starts a throwaway one); without it the bench says so and
//! does nothing. `CRONWERK_BENCH_QUICK=1` makes it smaller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use cronwerk::model::{InstanceInfo, RunRecord, RunState, Schedule, TaskConfig};
use cronwerk::plugins::Plugins;
use cronwerk::runtime::{CompileCache, EngineSettings, Runtime};
use cronwerk::scheduler::{Dispatcher, DispatcherConfig};
use cronwerk::store::{Configurations, Housekeeping, PostgresStore, RunFilter, RunLedger, Store};
use futures_util::StreamExt;

mod support;
use support::{BenchExecutor, TimedStore, Timing, ms, print_breakdown, quantile, sorted};

const HELLO: &str = "Acme.HelloScheduledTask";
/// Configurations created at once (each `create_task` is a transaction).
const CREATE_CONCURRENCY: usize = 16;

#[derive(Clone, Copy)]
struct Sizes {
    throughput_tasks: usize,
    lateness_tasks: usize,
    lateness_seconds: u64,
}

/// A fresh database on the server, dropped with this guard.
struct Database {
    admin: tokio_postgres::Config,
    name: String,
    config: tokio_postgres::Config,
}

async fn admin_client(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connecting to CRONWERK_BENCH_POSTGRES");
    tokio::spawn(connection);
    client
}

impl Database {
    async fn create(admin: &tokio_postgres::Config) -> Database {
        let name = format!("cronwerk_bench_{}", uuid::Uuid::now_v7().simple());
        admin_client(admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut config = admin.clone();
        config.dbname(&name);
        Database {
            admin: admin.clone(),
            name,
            config,
        }
    }

    async fn drop(self) {
        admin_client(&self.admin)
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
    }
}

/// Turns the server's `fsync` on or off (it takes a reload, not a restart).
async fn set_fsync(admin: &tokio_postgres::Config, on: bool) {
    let client = admin_client(admin).await;
    let value = if on { "on" } else { "off" };
    // Two statements: ALTER SYSTEM may not share a transaction.
    for sql in [
        &format!("ALTER SYSTEM SET fsync = {value}"),
        "SELECT pg_reload_conf()",
    ] {
        client
            .batch_execute(sql)
            .await
            .expect("setting fsync (the bench needs a superuser connection)");
    }
    // The reload is asynchronous: wait until new sessions see it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fsync_is_on(admin).await != on {
        assert!(
            Instant::now() < deadline,
            "the server did not take fsync = {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fsync_is_on(admin: &tokio_postgres::Config) -> bool {
    let row = admin_client(admin)
        .await
        .query_one("SHOW fsync", &[])
        .await
        .unwrap();
    row.get::<_, String>(0) == "on"
}

fn fsync_label(on: bool) -> &'static str {
    if on { "fsync on" } else { "fsync off" }
}

/// `url` (the server's) naming database `name` instead.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// One instance: its store (timed), runtime, plugins and dispatcher.
struct Instance {
    dispatcher: Arc<Dispatcher>,
    executor: Arc<BenchExecutor>,
}

async fn instance(
    db: &Database,
    name: &str,
    plugins_dir: &Path,
    cache: &Path,
    timing: &Arc<Timing>,
) -> Instance {
    let inner: Arc<dyn Store> = Arc::new(PostgresStore::connect(db.config.clone()).await.unwrap());
    let store = TimedStore::new(inner, timing.clone());
    let runtime = Arc::new(Runtime::new(EngineSettings::default()).unwrap());
    let plugins = Plugins::open(
        runtime.clone(),
        plugins_dir.to_owned(),
        CompileCache::open(cache).unwrap(),
        Arc::new(|_| {}),
    )
    .await
    .unwrap();
    assert!(plugins.get(HELLO).is_some());
    let executor = BenchExecutor::new(plugins, timing.clone());
    let dispatcher = Dispatcher::new(
        store.clone(),
        executor.clone(),
        store.clock(),
        DispatcherConfig {
            instance: InstanceInfo {
                name: name.to_owned(),
                roles: Vec::new(),
            },
            ..Default::default()
        },
    );
    Instance {
        dispatcher,
        executor,
    }
}

/// Runs every instance's dispatcher until `done` resolves, then stops them
/// (each records what it has in flight) and returns `done`'s output.
async fn serve<T>(instances: &[Instance], done: impl std::future::Future<Output = T>) -> T {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let handles: Vec<_> = instances
        .iter()
        .map(|i| {
            let mut stopped = stopped.clone();
            tokio::spawn(i.dispatcher.clone().run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            }))
        })
        .collect();
    let out = done.await;
    stop.send(true).unwrap();
    for h in handles {
        h.await.unwrap();
    }
    out
}

/// Creates `n` configurations with `schedule`, first due at `first`,
/// `CREATE_CONCURRENCY` at a time; returns how long it took.
async fn create_tasks(
    store: &dyn Store,
    n: usize,
    prefix: &str,
    schedule: &Schedule,
    first: DateTime<Utc>,
) -> Duration {
    let start = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let config = TaskConfig::new(&format!("{prefix}-{i:05}"), HELLO, schedule.clone());
            async move { store.create_task(&config, Some(first)).await.unwrap() }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    start.elapsed()
}

/// How long creating `n` configurations will take, from 300 created (and
/// deleted again) with a slot far away.
async fn creation_estimate(store: &dyn Store, n: usize) -> Duration {
    let far = Utc::now() + TimeDelta::days(1);
    let took = create_tasks(store, 300, "pilot", &Schedule::at(far), far).await;
    for i in 0..300 {
        store.delete_task(&format!("pilot-{i:05}")).await.unwrap();
    }
    took * (n as u32) / 300
}

/// Runs per instance name, and per configuration and slot.
struct History {
    by_instance: BTreeMap<String, usize>,
    by_slot: BTreeMap<(i64, Option<DateTime<Utc>>), Vec<RunRecord>>,
}

async fn history(store: &dyn Store) -> History {
    let runs = store.list_runs(&RunFilter::default()).await.unwrap();
    let mut by_instance = BTreeMap::new();
    let mut by_slot: BTreeMap<_, Vec<RunRecord>> = BTreeMap::new();
    for r in runs {
        if r.state != RunState::Skipped {
            *by_instance
                .entry(r.instance.clone().unwrap_or_default())
                .or_default() += 1;
        }
        by_slot
            .entry((r.task_id, r.scheduled_for))
            .or_default()
            .push(r);
    }
    History {
        by_instance,
        by_slot,
    }
}

/// How many slots a skip record stands for: a slot missed by more than the
/// misfire threshold is recorded once, "missed N slot(s) from SLOT ...",
/// for N slots; any other skip for its own.
fn slots_covered(run: &RunRecord) -> usize {
    run.message
        .strip_prefix("missed ")
        .and_then(|rest| rest.split_once(" slot(s)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------
// 1. Throughput
// ---------------------------------------------------------------------------

struct Throughput {
    fsync: bool,
    instances: usize,
    runs: usize,
    elapsed: Duration,
    by_instance: BTreeMap<String, usize>,
    breakdown: BTreeMap<&'static str, (u64, Duration)>,
}

async fn throughput(
    admin: &tokio_postgres::Config,
    plugins: &Path,
    cache: &Path,
    instances: usize,
    n: usize,
) -> Throughput {
    let db = Database::create(admin).await;
    // The bench's own store, for set-up and for watching: not timed.
    let observer = PostgresStore::connect(db.config.clone()).await.unwrap();
    let timing = Arc::new(Timing::default());
    let mut cluster = Vec::new();
    for i in 0..instances {
        cluster.push(instance(&db, &format!("node-{i}"), plugins, cache, &timing).await);
    }
    // The shared due time lies after the configurations exist (a slot
    // more than 5 s late would be a misfire, recorded skipped).
    let estimate = creation_estimate(&observer, n).await;
    let clock = observer.clock();
    let due = clock.now() + TimeDelta::from_std(estimate * 3 / 2).unwrap() + TimeDelta::seconds(1);
    let created_in = create_tasks(&observer, n, "hello", &Schedule::at(due), due).await;
    eprintln!(
        "throughput, {instances} instance(s): {n} configurations created in {:.1} s (estimated {:.1} s)",
        created_in.as_secs_f64(),
        estimate.as_secs_f64()
    );
    let wait = (due - clock.now()).to_std().unwrap_or(Duration::ZERO);
    if wait.is_zero() {
        eprintln!(
            "warning: creating the configurations overran the due time by {:?}",
            clock.now() - due
        );
    }

    let elapsed = serve(&cluster, async {
        tokio::time::sleep(wait).await;
        let start = Instant::now();
        // Done when nothing is due any more (every slot claimed) and,
        // after that, nothing is running (every run recorded).
        let running = RunFilter {
            state: Some(RunState::Running),
            limit: Some(1),
            ..Default::default()
        };
        loop {
            if observer.earliest_due().await.unwrap().is_none()
                && observer.list_runs(&running).await.unwrap().is_empty()
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(600), "stuck");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        start.elapsed()
    })
    .await;
    eprintln!(
        "throughput, {instances} instance(s): all recorded {:.2} s after the due time",
        elapsed.as_secs_f64()
    );

    // Exactly once: one record per configuration, and it succeeded.
    let h = history(&observer).await;
    let records: usize = h.by_slot.values().map(Vec::len).sum();
    let succeeded = h
        .by_slot
        .values()
        .filter(|r| r.len() == 1 && r[0].state == RunState::Succeeded)
        .count();
    assert_eq!(
        (h.by_slot.len(), records, succeeded),
        (n, n, n),
        "every configuration ran exactly once and succeeded"
    );
    let breakdown = timing.snapshot();
    drop(cluster);
    drop(observer);
    db.drop().await;
    Throughput {
        fsync: fsync_is_on(admin).await,
        instances,
        runs: n,
        elapsed,
        by_instance: h.by_instance,
        breakdown,
    }
}

// ---------------------------------------------------------------------------
// 2. Lateness
// ---------------------------------------------------------------------------

struct Lateness {
    fsync: bool,
    instances: usize,
    tasks: usize,
    seconds: u64,
    expected: usize,
    ran: usize,
    skipped: usize,
    duplicates: usize,
    /// executor entered − scheduled_for, ms, sorted.
    actual: Vec<f64>,
    by_instance: BTreeMap<String, usize>,
    breakdown: BTreeMap<&'static str, (u64, Duration)>,
}

async fn lateness(
    admin: &tokio_postgres::Config,
    plugins: &Path,
    cache: &Path,
    instances: usize,
    n: usize,
    seconds: u64,
) -> Lateness {
    let db = Database::create(admin).await;
    let observer = PostgresStore::connect(db.config.clone()).await.unwrap();
    let timing = Arc::new(Timing::default());
    let mut cluster = Vec::new();
    for i in 0..instances {
        cluster.push(instance(&db, &format!("node-{i}"), plugins, cache, &timing).await);
    }
    let clock = observer.clock();
    // First slot on a whole second after the configurations exist.
    let estimate = creation_estimate(&observer, n).await;
    let first = {
        let t = clock.now() + TimeDelta::from_std(estimate * 2).unwrap() + TimeDelta::seconds(2);
        DateTime::from_timestamp(t.timestamp() + 1, 0).unwrap()
    };
    let schedule = Schedule::every(Duration::from_secs(1), first).unwrap();
    create_tasks(&observer, n, "every", &schedule, first).await;
    eprintln!("lateness, {instances} instance(s): {n} configurations created, first slot {first}");
    assert!(clock.now() < first, "creating took longer than planned");
    let end = first + TimeDelta::seconds(seconds as i64);
    // Stopped once every slot of the window is taken (however late), so
    // each has its record; runs in flight are recorded on the way out.
    serve(&cluster, async {
        let wait = (end - clock.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        while observer
            .earliest_due()
            .await
            .unwrap()
            .is_some_and(|due| due < end)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let h = history(&observer).await;
    let in_window = |s: DateTime<Utc>| s >= first && s < end;
    let mut ran = 0;
    let mut skipped = 0;
    let mut duplicates = 0;
    for ((_, slot), records) in &h.by_slot {
        if !slot.is_some_and(in_window) {
            continue;
        }
        if records.len() > 1 {
            duplicates += 1;
        }
        for r in records {
            if r.state == RunState::Skipped {
                skipped += slots_covered(r);
            } else {
                ran += 1;
            }
        }
    }
    let actual = cluster
        .iter()
        .flat_map(|i| i.executor.entered.lock().unwrap().clone())
        .filter(|(slot, _)| in_window((*slot).into()))
        .map(|(slot, entered)| match entered.duration_since(slot) {
            Ok(late) => ms(late),
            Err(early) => -ms(early.duration()),
        })
        .collect();
    let breakdown = timing.snapshot();
    drop(cluster);
    drop(observer);
    db.drop().await;
    Lateness {
        fsync: fsync_is_on(admin).await,
        instances,
        tasks: n,
        seconds,
        expected: n * seconds as usize,
        ran,
        skipped,
        duplicates,
        actual: sorted(actual),
        by_instance: h.by_instance,
        breakdown,
    }
}

fn main() {
    let Some(url) = std::env::var("CRONWERK_BENCH_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "cluster bench skipped: CRONWERK_BENCH_POSTGRES is not set (`cargo xtask bench` \
             starts a PostgreSQL server and sets it)"
        );
        return;
    };
    let admin: tokio_postgres::Config = url
        .parse()
        .expect("CRONWERK_BENCH_POSTGRES is not a PostgreSQL connection URL");
    let dir = std::env::var_os("CRONWERK_BENCH_COMPONENTS")
        .expect("run with `cargo xtask bench` (it builds the components and sets CRONWERK_BENCH_COMPONENTS)");
    let quick = std::env::var("CRONWERK_BENCH_QUICK").is_ok_and(|v| v == "1");
    let sizes = if quick {
        Sizes {
            throughput_tasks: 5_000,
            lateness_tasks: 1_000,
            lateness_seconds: 10,
        }
    } else {
        Sizes {
            throughput_tasks: 20_000,
            lateness_tasks: 1_000,
            lateness_seconds: 30,
        }
    };
    let work = tempfile::tempdir().unwrap();
    let plugins: PathBuf = work.path().join("plugins");
    let cache = work.path().join("cache");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::copy(
        PathBuf::from(dir).join("hello.wasm"),
        plugins.join("hello.wasm"),
    )
    .unwrap();
    // Like `cronwerk serve`: a multi-threaded runtime, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    rt.block_on(async {
        let mut throughputs = Vec::new();
        let mut latenesses = Vec::new();
        let mut peers = Vec::new();
        // With fsync on, as a server runs by default (every commit waits
        // for the disk), then off, as the tests run theirs.
        for fsync in [true, false] {
            set_fsync(&admin, fsync).await;
            // The peer on a fresh database of the same server; 32 workers
            // was its best setting here (its pool has 10 connections).
            let db = Database::create(&admin).await;
            let peer_url = with_database(&url, &db.name);
            let peer = tokio::task::spawn_blocking(move || {
                support::peer::run(["--postgres", &peer_url], sizes.throughput_tasks, 32)
            })
            .await
            .unwrap();
            db.drop().await;
            peers.extend(peer.map(|p| (fsync, p)));
            for instances in [1, 3] {
                throughputs.push(
                    throughput(&admin, &plugins, &cache, instances, sizes.throughput_tasks).await,
                );
                latenesses.push(
                    lateness(
                        &admin,
                        &plugins,
                        &cache,
                        instances,
                        sizes.lateness_tasks,
                        sizes.lateness_seconds,
                    )
                    .await,
                );
            }
        }
        set_fsync(&admin, true).await;

        println!(
            "Instances on one PostgreSQL database (each its own PostgresStore pool, Runtime, \
             Plugins and Dispatcher; all in one process, tokio multi-thread, {cores} workers)\n"
        );
        println!("| measure | server | instances | result | runs per instance | vs 1 instance |");
        println!("| --- | --- | ---: | --- | --- | ---: |");
        let rate = |t: &Throughput| t.runs as f64 / t.elapsed.as_secs_f64();
        for t in &throughputs {
            let one = throughputs
                .iter()
                .find(|o| o.fsync == t.fsync && o.instances == 1)
                .map_or(f64::NAN, rate);
            println!(
                "| end-to-end, {} one-off `hello` configurations due at once, every run \
                 recorded; exactly once checked | {} | {} | **{:.0} runs/s** ({:.2} s) | {:?} | \
                 {:.2}× |",
                t.runs,
                fsync_label(t.fsync),
                t.instances,
                rate(t),
                t.elapsed.as_secs_f64(),
                t.by_instance.values().collect::<Vec<_>>(),
                rate(t) / one,
            );
        }
        for (fsync, p) in &peers {
            let cronwerk = |instances| {
                throughputs
                    .iter()
                    .find(|t| t.fsync == *fsync && t.instances == instances)
                    .map_or(f64::NAN, rate)
            };
            println!(
                "| peer, same run: {}, {} jobs due at once, native no-op handler, {} workers, \
                 jobs recorded done | {} | | {:.0} runs/s: **cronwerk / peer = {:.2} (1 \
                 instance), {:.2} (3)** | | |",
                p.label,
                p.jobs,
                p.workers,
                fsync_label(*fsync),
                p.runs_per_s,
                cronwerk(1) / p.runs_per_s,
                cronwerk(3) / p.runs_per_s,
            );
        }
        if peers.is_empty() {
            println!("| peer (apalis) | | | not measured: run through `cargo xtask bench` | | |");
        }
        for l in &latenesses {
            println!(
                "| lateness, {} configurations `every 1s` for {} s: executor called − slot | {} | \
                 {} | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} slots: {} ran, {} skipped, {} \
                 without a record, {} with two records | {:?} | |",
                l.tasks,
                l.seconds,
                fsync_label(l.fsync),
                l.instances,
                quantile(&l.actual, 0.5),
                quantile(&l.actual, 0.99),
                l.actual.last().copied().unwrap_or(f64::NAN),
                l.expected,
                l.ran,
                l.skipped,
                l.expected.saturating_sub(l.ran + l.skipped),
                l.duplicates,
                l.by_instance.values().collect::<Vec<_>>(),
            );
        }
        for t in &throughputs {
            print_breakdown(
                &format!(
                    "Where the time goes, end-to-end run with {} instance(s), {} ({} runs in \
                     {:.2} s; summed per call over the instances, including waits for a \
                     pooled connection and for row locks)",
                    t.instances,
                    fsync_label(t.fsync),
                    t.runs,
                    t.elapsed.as_secs_f64()
                ),
                &t.breakdown,
            );
        }
        for l in &latenesses {
            print_breakdown(
                &format!(
                    "Where the time goes, lateness run with {} instance(s), {} ({} s)",
                    l.instances,
                    fsync_label(l.fsync),
                    l.seconds
                ),
                &l.breakdown,
            );
        }
    });
}
