//! The store's rules, stated once for both backends. Each consistency
//! rule (claim a slot, finish a run, start a queued run, claim a retry,
//! abandon expired leases, deliver a broadcast) is a sequence of
//! conditional statements and checks on what they changed, written here as
//! plain async functions over a [`Tx`]; row mapping is written once over
//! [`Row`]. A backend contributes a small adapter: how to run a statement,
//! how its values look (SQLite keeps times as epoch milliseconds, PostgreSQL
//! as `timestamptz`), and the few places where it must differ, each a
//! method or constant of [`Tx`] that says why.
//!
//! Statements use PostgreSQL's `$1..$n` placeholders; the SQLite adapter
//! rewrites them to `?1..?n`. Everything else in them is SQL both accept.

pub mod audit;
pub mod backfills;
pub mod fleet;
pub mod journal;
pub mod ledger;
pub mod rows;
pub mod stops;
pub mod tasks;

use anyhow::{Context as _, bail};
use chrono::{DateTime, TimeZone, Utc};

use crate::model::NewEvent;

/// A transaction (or, for reads, a connection) of one backend.
///
/// Futures are not required to be `Send`: the SQLite adapter never waits
/// and is driven to completion on the spot ([`run_now`]); the PostgreSQL
/// one is, and the compiler checks that where it is used.
#[allow(async_fn_in_trait)]
pub trait Tx {
    /// SQL for "now" as this backend stores times, for the times the store
    /// sets itself (created, updated, queued): PostgreSQL takes the
    /// server's clock, the one every instance schedules by.
    const NOW: &'static str;
    /// Appended to a `SELECT` of rows this transaction goes on to change.
    /// PostgreSQL locks them so a concurrent transaction waits, then finds
    /// them changed; SQLite's write transaction already excludes every
    /// other writer, and it has no row locks.
    const FOR_UPDATE: &'static str;
    /// Like [`FOR_UPDATE`](Self::FOR_UPDATE), passing over rows another
    /// transaction has locked (they are being finished or abandoned by it).
    const FOR_UPDATE_SKIP_LOCKED: &'static str;

    /// Runs one statement; the number of rows it changed.
    async fn exec(&self, sql: &str, params: &[P<'_>]) -> anyhow::Result<u64>;
    /// Runs one statement that returns rows.
    async fn query(&self, sql: &str, params: &[P<'_>]) -> anyhow::Result<Vec<Row>>;

    /// Appends events in order. One statement per event here; PostgreSQL
    /// does it in one statement over arrays, as round trips are its cost.
    async fn insert_events(&self, events: &[NewEvent]) -> anyhow::Result<()> {
        for e in events {
            journal::insert_event(self, e).await?;
        }
        Ok(())
    }

    /// Replaces a configuration's state (PostgreSQL: one insert over arrays).
    async fn replace_state(
        &self,
        task_id: i64,
        state: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        self.exec(
            "DELETE FROM task_state WHERE task_id = $1",
            &[task_id.into()],
        )
        .await?;
        for (k, v) in state {
            self.exec(
                "INSERT INTO task_state (task_id, key, value) VALUES ($1, $2, $3)",
                &[task_id.into(), k.into(), v.into()],
            )
            .await?;
        }
        Ok(())
    }

    /// Locks these runs' rows in ascending id order, so concurrent batches
    /// finishing the same runs cannot deadlock. Nothing to do where a write
    /// transaction excludes every other (SQLite).
    async fn lock_runs(&self, run_ids: &[&str]) -> anyhow::Result<()> {
        let _ = run_ids;
        Ok(())
    }
}

/// The first row, if any.
pub async fn query_opt<T: Tx + ?Sized>(
    tx: &T,
    sql: &str,
    params: &[P<'_>],
) -> anyhow::Result<Option<Row>> {
    Ok(tx.query(sql, params).await?.into_iter().next())
}

/// Drives a future that never waits (the SQLite adapter's) to its end.
pub fn run_now<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => unreachable!("a SQLite statement never waits"),
    }
}

/// A statement parameter, borrowed from the caller's data.
#[derive(Debug, Clone, Copy)]
pub enum P<'a> {
    Null,
    Int(i64),
    Bool(bool),
    Text(&'a str),
    Bytes(&'a [u8]),
    /// Stored as whole milliseconds on both backends, so a slot read back
    /// compares equal to the one the schedule computes.
    Time(DateTime<Utc>),
    /// A list of names (an instance's roles).
    List(&'a [String]),
}

impl From<i64> for P<'_> {
    fn from(v: i64) -> Self {
        P::Int(v)
    }
}

impl From<u32> for P<'_> {
    fn from(v: u32) -> Self {
        P::Int(i64::from(v))
    }
}

impl From<u64> for P<'_> {
    fn from(v: u64) -> Self {
        P::Int(v as i64)
    }
}

impl From<bool> for P<'_> {
    fn from(v: bool) -> Self {
        P::Bool(v)
    }
}

impl<'a> From<&'a str> for P<'a> {
    fn from(v: &'a str) -> Self {
        P::Text(v)
    }
}

impl<'a> From<&'a String> for P<'a> {
    fn from(v: &'a String) -> Self {
        P::Text(v)
    }
}

impl<'a> From<&'a Vec<u8>> for P<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        P::Bytes(v)
    }
}

impl<'a> From<&'a [String]> for P<'a> {
    fn from(v: &'a [String]) -> Self {
        P::List(v)
    }
}

impl From<DateTime<Utc>> for P<'_> {
    fn from(v: DateTime<Utc>) -> Self {
        P::Time(v)
    }
}

impl<'a, T: Into<P<'a>>> From<Option<T>> for P<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(P::Null, Into::into)
    }
}

impl<'a> From<&'a Option<String>> for P<'a> {
    fn from(v: &'a Option<String>) -> Self {
        v.as_deref().into()
    }
}

/// `&[P::from(a), P::from(b), ...]`.
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::sql::P::from($v)),*] };
}
pub(crate) use params;

/// A time truncated to whole milliseconds (what both backends keep).
pub fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(t.timestamp_millis())
        .single()
        .unwrap_or(t)
}

/// A column value as a backend returned it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    Time(DateTime<Utc>),
    List(Vec<String>),
}

/// One result row; mapping code takes its columns by position. The getters
/// accept each backend's encoding of a type: a time is epoch milliseconds
/// (SQLite) or a `timestamptz` (PostgreSQL), a flag an integer or a
/// boolean, a list JSON text or an array.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn take(&mut self, i: usize) -> anyhow::Result<Value> {
        let cell = self
            .0
            .get_mut(i)
            .with_context(|| format!("the row has no column {i}"))?;
        Ok(std::mem::replace(cell, Value::Null))
    }

    fn mismatch<T>(i: usize, wanted: &str, found: &Value) -> anyhow::Result<T> {
        bail!("column {i}: expected {wanted}, found {found:?}")
    }

    pub fn opt_int(&mut self, i: usize) -> anyhow::Result<Option<i64>> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            other => Self::mismatch(i, "an integer", &other),
        }
    }

    pub fn int(&mut self, i: usize) -> anyhow::Result<i64> {
        self.opt_int(i)?
            .with_context(|| format!("column {i} is NULL"))
    }

    /// A non-negative counter or measure.
    pub fn opt_u64(&mut self, i: usize) -> anyhow::Result<Option<u64>> {
        Ok(self.opt_int(i)?.map(|v| v as u64))
    }

    pub fn opt_text(&mut self, i: usize) -> anyhow::Result<Option<String>> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v)),
            other => Self::mismatch(i, "text", &other),
        }
    }

    pub fn text(&mut self, i: usize) -> anyhow::Result<String> {
        self.opt_text(i)?
            .with_context(|| format!("column {i} is NULL"))
    }

    /// Text naming a variant of `T`; `None` for NULL and for a name this
    /// build does not know.
    pub fn parsed<T: std::str::FromStr>(&mut self, i: usize) -> anyhow::Result<Option<T>> {
        Ok(self.opt_text(i)?.and_then(|s| s.parse().ok()))
    }

    pub fn opt_time(&mut self, i: usize) -> anyhow::Result<Option<DateTime<Utc>>> {
        match self.take(i)? {
            Value::Null => Ok(None),
            Value::Time(t) => Ok(Some(t)),
            Value::Int(v) => Ok(Some(
                Utc.timestamp_millis_opt(v).single().unwrap_or_default(),
            )),
            other => Self::mismatch(i, "a time", &other),
        }
    }

    pub fn time(&mut self, i: usize) -> anyhow::Result<DateTime<Utc>> {
        self.opt_time(i)?
            .with_context(|| format!("column {i} is NULL"))
    }

    pub fn flag(&mut self, i: usize) -> anyhow::Result<bool> {
        match self.take(i)? {
            Value::Bool(v) => Ok(v),
            Value::Int(v) => Ok(v != 0),
            other => Self::mismatch(i, "a flag", &other),
        }
    }

    pub fn bytes(&mut self, i: usize) -> anyhow::Result<Vec<u8>> {
        match self.take(i)? {
            Value::Bytes(v) => Ok(v),
            other => Self::mismatch(i, "bytes", &other),
        }
    }

    /// A list of names; an unreadable one reads as empty (like a plugin
    /// status this build does not know).
    pub fn list(&mut self, i: usize) -> anyhow::Result<Vec<String>> {
        match self.take(i)? {
            Value::List(v) => Ok(v),
            Value::Text(json) => Ok(serde_json::from_str(&json).unwrap_or_default()),
            other => Self::mismatch(i, "a list", &other),
        }
    }
}
