//! The cluster backend: several `cronwerk serve` instances (and the CLI)
//! share one PostgreSQL database, which does all the coordination. A slot
//! is claimed by a conditional update in a transaction, with a unique
//! `(task, scheduled_for)` row behind it, so exactly one instance runs it;
//! no instance holds authority in memory.
//!
//! Time: the trait's operations take the times they compare against
//! (`now`, lease ends) from the caller, so tests can decide them, and this
//! backend stores and compares exactly those. What makes every instance
//! agree is [`Housekeeping::clock`](crate::store::Housekeeping::clock): here it is the local clock corrected by the
//! measured offset to the database server's clock, and `serve` schedules by
//! it. Slots fire, leases are written and expired leases judged on the
//! database's clock, whatever the machines' clocks say. Times the backend
//! sets itself (created, updated, queued) come from the server (`now()`).
//!
//! Changes: writes that other instances must see (configurations, queued
//! manual runs, new retries) `NOTIFY` through triggers; each store keeps
//! one connection that `LISTEN`s and bumps
//! [`Housekeeping::change_token`](crate::store::Housekeeping::change_token), and
//! reconnects when it drops (counting the gap as a change).
//!
//! Connections come from a pool; a transaction PostgreSQL aborts for a
//! deadlock or serialization failure was rolled back whole and is retried.
//!
//! The statements are the shared rules of `store::sql`; what is written
//! here is only what PostgreSQL does differently: its adapter (`tx`), the
//! set-based batches (`batches`), the schema with its notification
//! triggers, and the listener.

mod batches;
mod listener;
mod schema;
#[cfg(test)]
mod tests;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use listener::Shared;

pub use schema::LATEST as SCHEMA_VERSION;

/// Connections per store: a `serve` has a claim pass, group commits, lease
/// renewal, heartbeats and plugin reports in flight at once.
const POOL_SIZE: usize = 16;
/// Attempts of a transaction PostgreSQL aborted as a deadlock victim.
const ATTEMPTS: u32 = 5;

/// True for `postgres://` and `postgresql://` URLs (the `--database` values
/// that select this backend).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A connection target for messages: never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    format!(
        "database '{}' on {host}",
        config.get_dbname().unwrap_or("(default)")
    )
}

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    shared: Arc<Shared>,
    listener: JoinHandle<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Was `e` PostgreSQL aborting this transaction to let another proceed?
fn is_transient(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.code())
        .is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
        })
}

/// Did `e` come from a unique constraint named `constraint`?
fn violates(e: &anyhow::Error, constraint: &str) -> bool {
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .is_some_and(|db| {
            *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
        })
}

/// Runs `$body` with `$tx` bound to a [`PgTx`](tx::PgTx) over a new
/// transaction and commits it, retrying the whole transaction when
/// PostgreSQL aborted it for a deadlock or serialization failure (it was
/// rolled back, so running it again is what the caller asked for).
/// Evaluates to `StoreResult<_>`. A macro, not a method taking a closure,
/// because the body borrows the transaction across awaits.
macro_rules! in_transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &$crate::store::PostgresStore = $store;
        let mut attempt = 1;
        loop {
            let outcome: anyhow::Result<_> = async {
                let mut client = store.client().await?;
                let transaction = client.transaction().await?;
                let $tx = &$crate::store::postgres::tx::PgTx(&transaction);
                let value = $body;
                transaction.commit().await?;
                Ok(value)
            }
            .await;
            match outcome {
                Ok(value) => {
                    store.shared.bump();
                    break Ok(value);
                }
                Err(e)
                    if attempt < $crate::store::postgres::ATTEMPTS
                        && $crate::store::postgres::is_transient(&e) =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(attempt)))
                        .await;
                }
                Err(e) => break Err($crate::store::StoreError::Backend(e)),
            }
        }
    }};
}

// After the macro, which its operations use.
mod roles;

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host/db`, or
    /// `postgresql:///db?host=/run/postgresql` for a Unix socket) and
    /// migrates it.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let config: tokio_postgres::Config = url.parse().context(
            "the --database URL is not a PostgreSQL connection URL \
             (e.g. postgres://user:password@host:5432/cronwerk)",
        )?;
        Self::connect(config).await
    }

    /// Like [`open`](Self::open) with a parsed configuration.
    pub async fn connect(mut config: tokio_postgres::Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.get_ssl_mode() != tokio_postgres::config::SslMode::Require,
            "sslmode=require: cronwerk does not speak TLS to PostgreSQL yet; connect over a \
             Unix socket or a trusted network (sslmode=disable or prefer)"
        );
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("cronwerk");
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(15)))
            .build()
            .context("creating the PostgreSQL connection pool")?;
        let mut client = pool
            .get()
            .await
            .with_context(|| format!("connecting to PostgreSQL ({target})"))?;
        schema::migrate(&mut client)
            .await
            .with_context(|| format!("preparing the schema in {target}"))?;
        drop(client);
        let shared = Arc::new(Shared::default());
        let mut listen_config = config;
        listen_config.application_name("cronwerk-listener");
        let listener = listener::start(listen_config, shared.clone())
            .await
            .with_context(|| format!("listening for changes in {target}"))?;
        Ok(PostgresStore {
            pool,
            shared,
            listener,
        })
    }

    async fn client(&self) -> anyhow::Result<Object> {
        self.pool
            .get()
            .await
            .context("getting a PostgreSQL connection from the pool")
    }
}
