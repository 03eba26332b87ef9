//! One dedicated connection per store that LISTENs for other instances'
//! changes and keeps the database clock's offset current. Pooled
//! connections cannot LISTEN (a notification goes to the session that
//! listens, and pooled sessions come and go), so this one lives apart,
//! and is re-established whenever it drops.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::schema::CHANGES_CHANNEL;
use crate::model::Clock;

/// How often the listener checks its connection and re-measures the clock offset.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long a check may take before the connection counts as dead.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait between reconnection attempts.
const RECONNECT_AFTER: Duration = Duration::from_millis(250);

/// What the listener maintains, read by the store.
#[derive(Default)]
pub struct Shared {
    /// Bumped by every notification (and by every commit of this store).
    pub changes: AtomicU64,
    /// The database clock minus the local clock, in microseconds.
    offset_us: AtomicI64,
}

impl Shared {
    pub fn bump(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn offset(&self) -> TimeDelta {
        TimeDelta::microseconds(self.offset_us.load(Ordering::Relaxed))
    }
}

/// The local clock corrected by the measured offset to the database's clock:
/// every instance on one database schedules slots and judges leases by this
/// one clock, so a machine whose clock runs ahead neither fires early nor
/// declares a live instance's runs abandoned.
pub struct DatabaseClock(pub Arc<Shared>);

impl Clock for DatabaseClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.0.offset()
    }
}

/// The database clock's offset from one round trip, NTP-style: the server
/// read its clock somewhere between `sent` and `received`; the midpoint is
/// the best guess, off by at most half the round trip.
pub fn offset_from(
    sent: DateTime<Utc>,
    server: DateTime<Utc>,
    received: DateTime<Utc>,
) -> TimeDelta {
    let midpoint = sent + (received - sent) / 2;
    server - midpoint
}

async fn measure_offset(client: &Client, shared: &Shared) -> anyhow::Result<()> {
    let sent = Utc::now();
    let row = client.query_one("SELECT clock_timestamp()", &[]).await?;
    let received = Utc::now();
    let server: DateTime<Utc> = row.try_get(0)?;
    let offset = offset_from(sent, server, received);
    shared
        .offset_us
        .store(offset.num_microseconds().unwrap_or(0), Ordering::Relaxed);
    Ok(())
}

/// A listening connection: its client, and the task that drives it.
struct Session {
    client: Client,
    driver: JoinHandle<()>,
}

async fn connect(config: &tokio_postgres::Config, shared: &Arc<Shared>) -> anyhow::Result<Session> {
    let (client, mut connection) = config.connect(NoTls).await?;
    // The connection delivers notifications only while it is polled for
    // messages, so its driver counts them as it goes.
    let counter = shared.clone();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => counter.bump(),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    // A server's own words ("terminating connection due to
                    // administrator command") say more than "db error".
                    let why = e
                        .as_db_error()
                        .map_or_else(|| e.to_string(), |db| db.message().to_owned());
                    tracing::warn!("the PostgreSQL change listener lost its connection: {why}");
                    return;
                }
                None => return,
            }
        }
    });
    let session = Session { client, driver };
    session
        .client
        .batch_execute(&format!("LISTEN {CHANGES_CHANNEL}"))
        .await
        .context("subscribing to change notifications")?;
    measure_offset(&session.client, shared)
        .await
        .context("reading the database clock")?;
    Ok(session)
}

/// Connects and listens (failing if that is impossible now), then keeps a
/// listening connection up in the background until the handle is aborted.
pub async fn start(
    config: tokio_postgres::Config,
    shared: Arc<Shared>,
) -> anyhow::Result<JoinHandle<()>> {
    let session = connect(&config, &shared).await?;
    Ok(tokio::spawn(supervise(config, shared, session)))
}

async fn supervise(config: tokio_postgres::Config, shared: Arc<Shared>, mut session: Session) {
    loop {
        loop {
            tokio::select! {
                _ = &mut session.driver => break,
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    let check = tokio::time::timeout(
                        CHECK_TIMEOUT,
                        measure_offset(&session.client, &shared),
                    );
                    match check.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!("the PostgreSQL change listener failed a check: {e}");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("the PostgreSQL change listener stopped answering");
                            break;
                        }
                    }
                }
            }
        }
        session.driver.abort();
        let lost = std::time::Instant::now();
        let mut attempts = 0u64;
        session = loop {
            tokio::time::sleep(RECONNECT_AFTER).await;
            match connect(&config, &shared).await {
                Ok(session) => break session,
                // Said once: the server may be away for minutes, and the
                // store's watcher reports the outage meanwhile.
                Err(e) if attempts == 0 => {
                    tracing::warn!(
                        "the PostgreSQL change listener cannot reconnect yet ({e:#}); it keeps \
                         trying every {}",
                        humantime::format_duration(RECONNECT_AFTER)
                    );
                }
                Err(_) => {}
            }
            attempts += 1;
        };
        // Notifications sent while nobody listened are lost: count the gap
        // as a change so the dispatcher looks again.
        shared.bump();
        tracing::warn!(
            "the PostgreSQL change listener is back after {}",
            humantime::format_duration(Duration::from_millis(lost.elapsed().as_millis() as u64))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_offset_is_taken_at_the_round_trips_midpoint() {
        let t = |ms: i64| Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap();
        // Sent at 0, answered at 100: the server read its clock at ~50.
        assert_eq!(offset_from(t(0), t(50), t(100)), TimeDelta::zero());
        assert_eq!(offset_from(t(0), t(5_050), t(100)), TimeDelta::seconds(5));
        assert_eq!(offset_from(t(0), t(-1_950), t(100)), TimeDelta::seconds(-2));
    }
}
