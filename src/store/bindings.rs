//! Bindings (an environment mapped onto a node) and their setup logs.

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};
use crate::protocol::{BindingStatus, BindingStrategy};

#[derive(Debug, Clone)]
pub struct BindingRecord {
    pub id: String,
    pub environment_id: String,
    pub node_id: String,
    pub strategy: BindingStrategy,
    pub path: Option<String>,
    pub resolved_working_dir: Option<String>,
    pub status: BindingStatus,
    pub step: Option<String>,
    pub last_error: Option<String>,
    pub commit_sha: Option<String>,
    pub prepared_version: Option<i64>,
    pub last_prepare_at: Option<i64>,
    pub created_at: i64,
}

const BINDING_COLUMNS: &str = "id, environment_id, node_id, strategy, path, resolved_working_dir, \
     status, step, last_error, commit_sha, prepared_version, last_prepare_at, created_at";

fn binding_from_row(r: &Row) -> rusqlite::Result<BindingRecord> {
    Ok(BindingRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        node_id: r.get(2)?,
        strategy: r.get(3)?,
        path: r.get(4)?,
        resolved_working_dir: r.get(5)?,
        status: r.get(6)?,
        step: r.get(7)?,
        last_error: r.get(8)?,
        commit_sha: r.get(9)?,
        prepared_version: r.get(10)?,
        last_prepare_at: r.get(11)?,
        created_at: r.get(12)?,
    })
}

/// A binding's new state as reported by its node.
#[derive(Debug, Clone)]
pub struct BindingUpdate {
    pub status: BindingStatus,
    pub step: Option<String>,
    pub error: Option<String>,
    pub working_dir: Option<String>,
    pub commit: Option<String>,
    pub prepared_version: Option<i64>,
    pub at: i64,
}

impl Store {
    /// Creates a binding, or resets the strategy of the existing one for (environment, node).
    pub async fn upsert_binding(&self, b: BindingRecord) -> anyhow::Result<BindingRecord> {
        self.write(move |c| {
            c.exec(
                "INSERT INTO environment_bindings
                    (id, environment_id, node_id, strategy, path, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)
                 ON CONFLICT (environment_id, node_id) DO UPDATE SET
                    strategy = excluded.strategy, path = excluded.path, status = 'pending',
                    step = NULL, last_error = NULL",
                params![b.id, b.environment_id, b.node_id, b.strategy, b.path, b.created_at],
            )?;
            c.row(
                &format!("SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE environment_id = ?1 AND node_id = ?2"),
                params![b.environment_id, b.node_id],
                binding_from_row,
            )
        })
        .await
    }

    pub async fn binding(&self, id: String) -> anyhow::Result<Option<BindingRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE id = ?1"),
                params![id],
                binding_from_row,
            )
            .optional()
        })
        .await
    }

    pub async fn bindings_of_environment(
        &self,
        env_id: String,
    ) -> anyhow::Result<Vec<BindingRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE environment_id = ?1 ORDER BY created_at"
            ))?;
            let rows = st.query_map(params![env_id], binding_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn bindings_of_node(&self, node_id: String) -> anyhow::Result<Vec<BindingRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE node_id = ?1 ORDER BY created_at"
            ))?;
            let rows = st.query_map(params![node_id], binding_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn update_binding(&self, id: String, u: BindingUpdate) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE environment_bindings SET status = ?2, step = ?3, last_error = ?4,
                    resolved_working_dir = coalesce(?5, resolved_working_dir),
                    commit_sha = coalesce(?6, commit_sha),
                    prepared_version = coalesce(?7, prepared_version),
                    last_prepare_at = ?8
                 WHERE id = ?1",
                params![
                    id,
                    u.status,
                    u.step,
                    u.error,
                    u.working_dir,
                    u.commit,
                    u.prepared_version,
                    u.at
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn append_binding_log(
        &self,
        binding_id: String,
        text: String,
        at: i64,
    ) -> anyhow::Result<i64> {
        self.write(move |c| {
            c.row(
                "INSERT INTO binding_logs (binding_id, seq, line, at)
                 VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM binding_logs WHERE binding_id = ?1), ?2, ?3)
                 RETURNING seq",
                params![binding_id, text, at],
                |r| r.get(0),
            )
        })
        .await
    }

    pub async fn binding_logs(
        &self,
        binding_id: String,
        after: i64,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, line FROM binding_logs WHERE binding_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 5000",
            )?;
            let rows = st.query_map(params![binding_id, after], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    // ---- threads ----
}
