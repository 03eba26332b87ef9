//! The audit trail's rules: appending an entry and reading entries back,
//! newest first, by kind and subject.

use super::{Tx, params, rows};
use crate::model::audit::{AuditRecord, Change, NewAudit};
use crate::store::AuditFilter;

pub async fn append<T: Tx + ?Sized>(tx: &T, entry: &NewAudit) -> anyhow::Result<()> {
    let changes = serde_json::to_string(&entry.changes)?;
    tx.exec(
        "INSERT INTO audit (at, actor, kind, subject, action, changes)
         VALUES ($1, $2, $3, $4, $5, $6)",
        params![
            entry.at,
            &entry.actor,
            entry.kind.as_str(),
            &entry.subject,
            &entry.action,
            &changes
        ],
    )
    .await?;
    Ok(())
}

/// Entries newest first. The casts type the parameters a filter leaves NULL.
pub async fn list<T: Tx + ?Sized>(
    tx: &T,
    filter: &AuditFilter,
) -> anyhow::Result<Vec<AuditRecord>> {
    let rows = tx
        .query(
            "SELECT id, at, actor, kind, subject, action, changes FROM audit
             WHERE (CAST($1 AS TEXT) IS NULL OR kind = $1)
               AND (CAST($2 AS TEXT) IS NULL OR subject = $2)
               AND (CAST($3 AS BIGINT) IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
            params![
                filter.kind.map(|k| k.as_str()),
                filter.subject.as_deref(),
                filter.before_id,
                super::ledger::limit(filter.limit),
            ],
        )
        .await?;
    rows::all(rows, |mut r| {
        let changes: Vec<Change> = serde_json::from_str(&r.text(6)?).unwrap_or_default();
        Ok(AuditRecord {
            id: r.int(0)?,
            at: r.time(1)?,
            actor: r.text(2)?,
            kind: r
                .parsed(3)?
                .unwrap_or(crate::model::audit::AuditKind::Configuration),
            subject: r.text(4)?,
            action: r.text(5)?,
            changes,
        })
    })
}
