//! The SQLite adapter of the store's rules: statements run synchronously
//! on the connection the store holds (they are short, and SQLite has no
//! server to wait for), times are epoch milliseconds in INTEGER columns,
//! lists are JSON text, and `$n` placeholders become `?n`. Text is bound
//! through [`storable`], like PostgreSQL's.

use std::borrow::Cow;

use rusqlite::Connection;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::model::text::storable;
use crate::store::sql::{P, Row, Tx, Value};

/// A connection, inside a write transaction or not.
pub struct SqliteTx<'c>(pub &'c Connection);

impl Tx for SqliteTx<'_> {
    /// Epoch milliseconds from SQLite's clock, this machine's.
    const NOW: &'static str = "CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";
    const FOR_UPDATE: &'static str = "";
    const FOR_UPDATE_SKIP_LOCKED: &'static str = "";

    async fn exec(&self, sql: &str, params: &[P<'_>]) -> anyhow::Result<u64> {
        let mut stmt = self.0.prepare_cached(&placeholders(sql))?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    async fn query(&self, sql: &str, params: &[P<'_>]) -> anyhow::Result<Vec<Row>> {
        let mut stmt = self.0.prepare_cached(&placeholders(sql))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut found = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    // No column of the schema holds reals; a computed one
                    // (a rounded time) reads as the integer it is.
                    ValueRef::Real(v) => Value::Int(v as i64),
                    ValueRef::Text(t) => Value::Text(std::str::from_utf8(t)?.to_owned()),
                    ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                });
            }
            found.push(Row(values));
        }
        Ok(found)
    }
}

/// `$n` → `?n`: SQLite reads `$1` as a parameter *named* "$1", numbered by
/// first appearance, which would bind `... $2 ... $1` the wrong way round.
fn placeholders(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

impl rusqlite::ToSql for P<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            P::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            P::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            P::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(v))),
            // NUL is replaced as on PostgreSQL, which refuses it, so a
            // task's text reads back the same from either backend.
            P::Text(s) => match storable(s) {
                Cow::Borrowed(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
                Cow::Owned(s) => ToSqlOutput::Owned(rusqlite::types::Value::Text(s)),
            },
            P::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            P::Time(t) => ToSqlOutput::Borrowed(ValueRef::Integer(t.timestamp_millis())),
            P::List(names) => ToSqlOutput::Owned(rusqlite::types::Value::Text(
                serde_json::to_string(names)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn numbered_placeholders_keep_their_numbers() {
        assert_eq!(
            placeholders("UPDATE t SET a = $2 WHERE b = $1 AND c = $10"),
            "UPDATE t SET a = ?2 WHERE b = ?1 AND c = ?10"
        );
        assert_eq!(placeholders("SELECT 1"), "SELECT 1");
    }
}
