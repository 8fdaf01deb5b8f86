//! The audit log's rows: appended by the gateway's audit middleware, read newest first.

use rusqlite::params;

use super::Store;

/// One recorded request.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub method: String,
    pub route: String,
    pub path: String,
    pub status: u16,
    pub peer: String,
    pub fields: Vec<String>,
}

impl Store {
    /// Appends a record (its `id` is assigned).
    pub async fn insert_audit(&self, r: AuditRecord) -> anyhow::Result<()> {
        let fields = serde_json::to_string(&r.fields)?;
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO audit (at, actor, method, route, path, status, peer, fields)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                r.at, r.actor, r.method, r.route, r.path, r.status, r.peer, fields
            ])?;
            Ok(())
        })
        .await
    }

    /// Up to `limit` records older than `before` (an id), newest first.
    pub async fn audit_page(&self, before: i64, limit: u32) -> anyhow::Result<Vec<AuditRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, at, actor, method, route, path, status, peer, fields FROM audit
                 WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![before, limit], |r| {
                let fields: String = r.get(8)?;
                Ok(AuditRecord {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    method: r.get(3)?,
                    route: r.get(4)?,
                    path: r.get(5)?,
                    status: r.get(6)?,
                    peer: r.get(7)?,
                    fields: serde_json::from_str(&fields).unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
        .await
    }
}
