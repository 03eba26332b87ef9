//! The PostgreSQL adapter of the store's rules: statements are prepared
//! once per connection and run over the network, so where a rule does
//! something per item (append events, replace a state, lock runs) this
//! adapter does it in one statement over arrays instead: round trips, not
//! the database's work, are what a cluster's writes spend their time on.
//!
//! Every text value goes to the server through [`storable`]: a [`P::Text`]
//! parameter as it is bound, an array of them built with [`texts`] or
//! [`opt_texts`]. PostgreSQL refuses NUL in `text`, and a task may put one
//! in anything it hands the host; one such value would fail its whole
//! statement, and with it every run of a batch.

use std::borrow::Cow;
use std::error::Error;

use bytes::BytesMut;
use deadpool_postgres::GenericClient;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::model::NewEvent;
use crate::model::text::storable;
use crate::store::sql::{P, Row, Tx, Value, ms};

pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Text values for an array parameter, each made [`storable`].
pub fn texts<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Cow<'a, str>> {
    values.into_iter().map(storable).collect()
}

/// Optional text values for an array parameter, each made [`storable`].
pub fn opt_texts<'a>(
    values: impl IntoIterator<Item = Option<&'a str>>,
) -> Vec<Option<Cow<'a, str>>> {
    values.into_iter().map(|v| v.map(storable)).collect()
}

/// A pooled connection, or a transaction on one.
pub struct PgTx<'a, C>(pub &'a C);

impl<C: GenericClient> PgTx<'_, C> {
    /// Runs one (cached) statement with native parameters (arrays).
    pub async fn pg_exec(&self, sql: &str, params: Params<'_>) -> anyhow::Result<u64> {
        let stmt = self.0.prepare_cached(sql).await?;
        Ok(self.0.execute(&stmt, params).await?)
    }

    /// Runs one (cached) query with native parameters (arrays).
    pub async fn pg_query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> anyhow::Result<Vec<tokio_postgres::Row>> {
        let stmt = self.0.prepare_cached(sql).await?;
        Ok(self.0.query(&stmt, params).await?)
    }
}

impl<C: GenericClient> Tx for PgTx<'_, C> {
    /// The server's clock, in the whole milliseconds every time is kept in.
    const NOW: &'static str = "date_trunc('milliseconds', now())";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_UPDATE_SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";

    async fn exec(&self, sql: &str, params: &[P<'_>]) -> anyhow::Result<u64> {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.pg_exec(sql, &params).await
    }

    async fn query(&self, sql: &str, params: &[P<'_>]) -> anyhow::Result<Vec<Row>> {
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        self.pg_query(sql, &params).await?.iter().map(row).collect()
    }

    /// One statement, in order (ids ascend with the input).
    async fn insert_events(&self, events: &[NewEvent]) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let at: Vec<_> = events.iter().map(|e| ms(e.at)).collect();
        let level: Vec<i64> = events.iter().map(|e| e.level.rank()).collect();
        let source = texts(events.iter().map(|e| e.source.as_str()));
        let code = texts(events.iter().map(|e| e.code.as_str()));
        let message = texts(events.iter().map(|e| e.message.as_str()));
        let task_id: Vec<Option<i64>> = events.iter().map(|e| e.task_id).collect();
        let run_id = opt_texts(events.iter().map(|e| e.run_id.as_deref()));
        self.pg_exec(
            "INSERT INTO events (at, level, source, code, message, task_id, run_id)
             SELECT at, level, source, code, message, task_id, run_id
             FROM UNNEST($1::timestamptz[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                         $6::bigint[], $7::text[])
             WITH ORDINALITY AS e(at, level, source, code, message, task_id, run_id, n)
             ORDER BY n",
            &[&at, &level, &source, &code, &message, &task_id, &run_id],
        )
        .await?;
        Ok(())
    }

    async fn replace_state(
        &self,
        task_id: i64,
        state: &std::collections::BTreeMap<String, String>,
    ) -> anyhow::Result<()> {
        self.pg_exec("DELETE FROM task_state WHERE task_id = $1", &[&task_id])
            .await?;
        let keys = texts(state.keys().map(String::as_str));
        let values = texts(state.values().map(String::as_str));
        self.pg_exec(
            "INSERT INTO task_state (task_id, key, value)
             SELECT $1, k, v FROM UNNEST($2::text[], $3::text[]) AS s(k, v)",
            &[&task_id, &keys, &values],
        )
        .await?;
        Ok(())
    }

    async fn lock_runs(&self, run_ids: &[&str]) -> anyhow::Result<()> {
        lock_in_order(self, "runs", run_ids).await
    }
}

/// Locks the rows of `table` with these ids, in ascending id order.
pub async fn lock_in_order<C: GenericClient, I: ToSql + Sync>(
    tx: &PgTx<'_, C>,
    table: &str,
    ids: &[I],
) -> anyhow::Result<()> {
    let sql = format!("SELECT id FROM {table} WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    tx.pg_query(&sql, &[&ids]).await?;
    Ok(())
}

/// Locks the rows of `ids` that no other transaction holds, skipping the
/// others instead of waiting for them; returns the ids locked.
pub async fn lock_unheld_in_order<C: GenericClient>(
    tx: &PgTx<'_, C>,
    table: &str,
    ids: &[i64],
) -> anyhow::Result<std::collections::HashSet<i64>> {
    let sql =
        format!("SELECT id FROM {table} WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED");
    tx.pg_query(&sql, &[&ids])
        .await?
        .iter()
        .map(|row| Ok(row.try_get(0)?))
        .collect()
}

/// A result row as the shared mapping reads it.
pub(super) fn row(r: &tokio_postgres::Row) -> anyhow::Result<Row> {
    let mut values = Vec::with_capacity(r.len());
    for (i, column) in r.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            r.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            r.try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into()))
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME {
            r.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else if *ty == Type::TIMESTAMPTZ {
            r.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)?
                .map(Value::Time)
        } else if *ty == Type::BOOL {
            r.try_get::<_, Option<bool>>(i)?.map(Value::Bool)
        } else if *ty == Type::BYTEA {
            r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes)
        } else if *ty == Type::TEXT_ARRAY {
            r.try_get::<_, Option<Vec<String>>>(i)?.map(Value::List)
        } else {
            anyhow::bail!(
                "column {} has type {ty}, which no record reads",
                column.name()
            )
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl ToSql for P<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match *self {
            P::Null => Ok(IsNull::Yes),
            P::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql_checked(ty, out),
            P::Int(v) => v.to_sql_checked(ty, out),
            P::Bool(v) => v.to_sql_checked(ty, out),
            P::Text(s) => storable(s).to_sql_checked(ty, out),
            P::Bytes(b) => b.to_sql_checked(ty, out),
            P::Time(t) => ms(t).to_sql_checked(ty, out),
            P::List(names) => names.to_sql_checked(ty, out),
        }
    }

    /// Each variant checks the type against its own value's.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}
