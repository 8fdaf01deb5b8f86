//! Retention: what the sweeper deletes so the database does not grow without bound.
//!
//! Ended tasks keep their row (goal, state, times, exit code, error, result, usage) for ever;
//! their chunks go after the retention period. Setup logs go after the same period;
//! idempotency keys after a day; board sessions when they expire; enrollment tokens a
//! retention period after they expired; pairing requests once they lapsed (rejected keys
//! are remembered); commands once their task ended; audit records
//! after a year (or the retention period, if longer).
//!
//! Work is cut into small transactions (one task's chunks at a time) so the task writer,
//! which shares the write connection, never waits long behind the sweeper.

use rusqlite::params;

use super::{Cached, Store};

/// Audit records are kept at least this long.
const AUDIT_KEPT_MS: i64 = 365 * 86_400_000;

/// Tasks whose chunks are deleted per call of [`Store::prune_task_outputs`].
const TASKS_PER_CALL: usize = 50;

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub task_outputs: usize,
    pub chunks: usize,
    pub binding_log_lines: usize,
    pub idempotency_keys: usize,
    pub sessions: usize,
    pub enrollments: usize,
    pub commands: usize,
    pub audit: usize,
    pub pairing_requests: usize,
}

impl Pruned {
    pub fn is_empty(&self) -> bool {
        *self == Pruned::default()
    }
}

impl Store {
    /// Deletes the chunks of up to [`TASKS_PER_CALL`] tasks that ended before `cutoff`, one
    /// transaction per task, and marks them pruned at `now`. Returns (tasks, chunks); fewer
    /// than [`TASKS_PER_CALL`] tasks means none is left.
    pub async fn prune_task_outputs(
        &self,
        cutoff: i64,
        now: i64,
    ) -> anyhow::Result<(usize, usize)> {
        let ids: Vec<String> = self
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id FROM tasks WHERE output_pruned_at IS NULL AND finished_at < ?1
                     AND state IN ('completed', 'error', 'stopped') LIMIT ?2",
                )?;
                let rows = st.query_map(params![cutoff, TASKS_PER_CALL], |r| r.get(0))?;
                rows.collect()
            })
            .await?;
        let mut chunks = 0;
        for id in &ids {
            let id = id.clone();
            chunks += self
                .write(move |c| {
                    let tx = c.transaction()?;
                    let n: i64 = tx.row(
                        "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM task_chunk_runs
                         WHERE task_id = ?1",
                        [&id],
                        |r| r.get(0),
                    )?;
                    tx.exec("DELETE FROM task_chunk_runs WHERE task_id = ?1", [&id])?;
                    tx.exec(
                        "UPDATE tasks SET output_pruned_at = ?2 WHERE id = ?1",
                        params![id, now],
                    )?;
                    tx.commit()?;
                    Ok(n as usize)
                })
                .await?;
        }
        Ok((ids.len(), chunks))
    }

    /// Deletes the small things past their time; see the module documentation.
    pub async fn prune_records(
        &self,
        cutoff: i64,
        keys_cutoff: i64,
        now: i64,
    ) -> anyhow::Result<Pruned> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let p = Pruned {
                binding_log_lines: tx
                    .exec("DELETE FROM binding_logs WHERE at < ?1", [cutoff])?,
                idempotency_keys: tx.exec(
                    "DELETE FROM idempotency_keys WHERE created_at < ?1",
                    [keys_cutoff],
                )?,
                sessions: tx.exec("DELETE FROM sessions WHERE expires_at < ?1", [now])?,
                enrollments: tx.exec(
                    "DELETE FROM enrollments WHERE expires_at < ?1 AND used_at IS NULL",
                    [cutoff],
                )?,
                commands: tx.exec(
                    // From the (small) commands table, one task lookup each.
                    "DELETE FROM commands WHERE EXISTS (SELECT 1 FROM tasks t
                       WHERE t.id = commands.task_id AND t.state IN ('completed', 'error', 'stopped'))",
                    [],
                )?,
                audit: tx.exec(
                    "DELETE FROM audit WHERE at < ?1",
                    [cutoff.min(now - AUDIT_KEPT_MS)],
                )?,
                pairing_requests: tx.exec(
                    "DELETE FROM pairing_requests WHERE status != 'rejected' AND expires_at < ?1",
                    [now],
                )?,
                ..Pruned::default()
            };
            tx.commit()?;
            Ok(p)
        })
        .await
    }
}
