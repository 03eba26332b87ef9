//! A peer reference for cronwerk's throughput benchmarks: the same number of
//! jobs run through apalis (a Rust background-job library) with a native no-op
//! handler, on the same SQLite file or PostgreSQL server, printing runs/s.
//!
//! Jobs are enqueued in bulk before any worker starts (timed apart); the timed
//! part runs from starting the worker(s) until the handler has counted all N
//! jobs and apalis's own table shows all N as `Done`. It is not a workspace
//! member and not part of cronwerk.
//!
//! ```text
//! apalis-peer --sqlite PATH --jobs N [--workers W]
//! apalis-peer --postgres URL --jobs N [--workers W]
//! ```

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use apalis::prelude::*;
use apalis_postgres::{PgConnectOptions, PgPool, PostgresStorage};
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// The apalis release this was built against (kept in step with Cargo.toml).
const APALIS_VERSION: &str = "1.0.0";
/// apalis's own default: one worker per queue (its examples run one); more
/// workers, each polling separately, are asked for with `--workers`.
const DEFAULT_WORKERS: usize = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    n: u64,
}

static COMPLETED: AtomicU64 = AtomicU64::new(0);
static TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static ALL_COMPLETED: Notify = Notify::const_new();

/// The native no-op handler: counts completions.
async fn noop(_job: Job) -> Result<(), BoxDynError> {
    if COMPLETED.fetch_add(1, Ordering::Relaxed) + 1 == TARGET.load(Ordering::Relaxed) {
        ALL_COMPLETED.notify_one();
    }
    Ok(())
}

enum Backend {
    Sqlite(String),
    Postgres(String),
}

struct Args {
    backend: Backend,
    jobs: u64,
    workers: usize,
}

fn parse_args() -> Result<Args> {
    const USAGE: &str =
        "usage: apalis-peer (--sqlite PATH | --postgres URL) --jobs N [--workers W]";
    let mut backend = None;
    let mut jobs = None;
    let mut workers = DEFAULT_WORKERS;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--sqlite" => backend = Some(Backend::Sqlite(value()?)),
            "--postgres" => backend = Some(Backend::Postgres(value()?)),
            "--jobs" => jobs = Some(value()?.parse::<u64>().context("--jobs")?),
            "--workers" => workers = value()?.parse::<usize>().context("--workers")?,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    let backend =
        backend.with_context(|| format!("--sqlite or --postgres is required; {USAGE}"))?;
    let jobs = jobs.with_context(|| format!("--jobs is required; {USAGE}"))?;
    if jobs == 0 || workers == 0 {
        bail!("--jobs and --workers must be at least 1");
    }
    Ok(Args {
        backend,
        jobs,
        workers,
    })
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("apalis-peer: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> Result<()> {
    let args = parse_args()?;
    TARGET.store(args.jobs, Ordering::Relaxed);
    let batch = || (0..args.jobs).map(|n| Job { n }).collect::<Vec<_>>();

    let (name, enqueue, (seconds, done_in_db)) = match &args.backend {
        Backend::Sqlite(path) => {
            let options = SqliteConnectOptions::from_str(path)
                .with_context(|| format!("SQLite path {path}"))?
                .create_if_missing(true);
            let pool = SqlitePoolOptions::new()
                .connect_with(options)
                .await
                .with_context(|| format!("opening SQLite database {path}"))?;
            SqliteStorage::setup(&pool)
                .await
                .context("apalis SQLite setup (migrations)")?;
            let mut storage = SqliteStorage::<Job>::new(&pool);

            let started = Instant::now();
            storage
                .push_bulk(batch())
                .await
                .map_err(|e| anyhow!("enqueueing jobs: {e:?}"))?;
            let enqueue = started.elapsed().as_secs_f64();

            let measured = measure(
                args.jobs,
                args.workers,
                |ctx| {
                    WorkerBuilder::new(ctx)
                        .backend(storage.clone())
                        .build(noop)
                        .run()
                },
                || sqlite_done(&pool),
            )
            .await?;
            pool.close().await;
            ("sqlite", enqueue, measured)
        }
        Backend::Postgres(url) => {
            let pool = PgPool::connect_with(pg_options(url)?)
                .await
                .context("connecting to PostgreSQL")?;
            PostgresStorage::setup(&pool)
                .await
                .context("apalis PostgreSQL setup (migrations)")?;
            let mut storage = PostgresStorage::<Job>::new(&pool);

            let started = Instant::now();
            storage
                .push_bulk(batch())
                .await
                .map_err(|e| anyhow!("enqueueing jobs: {e:?}"))?;
            let enqueue = started.elapsed().as_secs_f64();

            let measured = measure(
                args.jobs,
                args.workers,
                |ctx| {
                    WorkerBuilder::new(ctx)
                        .backend(storage.clone())
                        .build(noop)
                        .run()
                },
                || postgres_done(&pool),
            )
            .await?;
            pool.close().await;
            ("postgres", enqueue, measured)
        }
    };

    let line = serde_json::json!({
        "peer": "apalis",
        "version": APALIS_VERSION,
        "backend": name,
        "jobs": args.jobs,
        "workers": args.workers,
        "enqueue_seconds": enqueue,
        "seconds": seconds,
        "runs_per_s": args.jobs as f64 / seconds,
        "done_in_db": done_in_db,
    });
    println!("{line}");
    Ok(())
}

/// libpq accepts `postgresql://user@/db?host=/socket/dir`, but the URL parser
/// under sqlx rejects the empty host; a placeholder host is given then, and the
/// `host` parameter still selects the socket.
fn pg_options(url: &str) -> Result<PgConnectOptions> {
    PgConnectOptions::from_str(url)
        .or_else(|_| PgConnectOptions::from_str(&url.replacen("@/", "@localhost/", 1)))
        .context("PostgreSQL URL")
}

async fn sqlite_done(pool: &SqlitePool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE status = 'Done'")
        .fetch_one(pool)
        .await
        .context("counting Done jobs in SQLite")?;
    Ok(n as u64)
}

async fn postgres_done(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'")
        .fetch_one(pool)
        .await
        .context("counting Done jobs in PostgreSQL")?;
    Ok(n as u64)
}

/// Starts `workers` workers, waits until the handler has seen every job and
/// the backend records every job as done, then stops the workers. Returns the
/// elapsed seconds and the done count read from the database.
async fn measure<W>(
    jobs: u64,
    workers: usize,
    make_worker: impl Fn(&WorkerContext) -> W,
    done_in_db: impl AsyncFn() -> Result<u64>,
) -> Result<(f64, u64)>
where
    W: Future<Output = Result<(), WorkerError>> + Send + 'static,
{
    let started = Instant::now();
    let mut running = JoinSet::new();
    let mut contexts = Vec::with_capacity(workers);
    for i in 0..workers {
        let ctx = WorkerContext::new(&format!("apalis-peer-{i}"));
        running.spawn(make_worker(&ctx));
        contexts.push(ctx);
    }

    tokio::select! {
        _ = ALL_COMPLETED.notified() => {}
        Some(exit) = running.join_next() => bail!("a worker stopped before all jobs ran: {exit:?}"),
    }
    let mut done = done_in_db().await?;
    while done < jobs {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {done} of {jobs} jobs are recorded done after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        done = done_in_db().await?;
    }
    let seconds = started.elapsed().as_secs_f64();

    for ctx in &contexts {
        let _ = ctx.stop();
    }
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(exit) = running.join_next().await {
            exit.context("worker task panicked")?
                .map_err(|e| anyhow!("worker: {e}"))?;
        }
        anyhow::Ok(())
    });
    drained
        .await
        .context("workers did not stop within 10 s")??;
    Ok((seconds, done))
}
