//! Threads' git worktrees: the branch, the node that holds it, where it started, and the
//! pull request opened from it.

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeRecord {
    pub thread_id: String,
    pub node_id: String,
    pub binding_id: String,
    pub branch: String,
    /// Where the branch started (reported by the node once it created the worktree).
    pub base_commit: Option<String>,
    pub path: Option<String>,
    pub pr_url: Option<String>,
    pub pr_number: Option<i64>,
    pub created_at: i64,
}

const COLUMNS: &str =
    "thread_id, node_id, binding_id, branch, base_commit, path, pr_url, pr_number, created_at";

fn from_row(r: &Row) -> rusqlite::Result<WorktreeRecord> {
    Ok(WorktreeRecord {
        thread_id: r.get(0)?,
        node_id: r.get(1)?,
        binding_id: r.get(2)?,
        branch: r.get(3)?,
        base_commit: r.get(4)?,
        path: r.get(5)?,
        pr_url: r.get(6)?,
        pr_number: r.get(7)?,
        created_at: r.get(8)?,
    })
}

impl Store {
    /// The thread's worktree record, created with `w` when it has none.
    pub async fn worktree_or_insert(&self, w: WorktreeRecord) -> anyhow::Result<WorktreeRecord> {
        self.write(move |c| {
            c.exec(
                &format!(
                    "INSERT INTO worktrees ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (thread_id) DO UPDATE SET
                        node_id = excluded.node_id, binding_id = excluded.binding_id"
                ),
                params![
                    w.thread_id,
                    w.node_id,
                    w.binding_id,
                    w.branch,
                    w.base_commit,
                    w.path,
                    w.pr_url,
                    w.pr_number,
                    w.created_at
                ],
            )?;
            c.row(
                &format!("SELECT {COLUMNS} FROM worktrees WHERE thread_id = ?1"),
                params![w.thread_id],
                from_row,
            )
        })
        .await
    }

    pub async fn worktree(&self, thread_id: String) -> anyhow::Result<Option<WorktreeRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {COLUMNS} FROM worktrees WHERE thread_id = ?1"),
                params![thread_id],
                from_row,
            )
            .optional()
        })
        .await
    }

    /// The worktrees of an environment's threads.
    pub async fn worktrees_of_environment(
        &self,
        env_id: String,
    ) -> anyhow::Result<Vec<WorktreeRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM worktrees WHERE thread_id IN
                    (SELECT id FROM threads WHERE environment_id = ?1)"
            ))?;
            let rows = st.query_map(params![env_id], from_row)?;
            rows.collect()
        })
        .await
    }

    /// What the node reported: where the worktree is and where its branch started. Only
    /// for the node that holds it.
    pub async fn worktree_reported(
        &self,
        thread_id: String,
        node_id: String,
        branch: String,
        base_commit: String,
        path: String,
    ) -> anyhow::Result<bool> {
        self.write(move |c| {
            let n = c.exec(
                "UPDATE worktrees SET base_commit = ?4, path = ?5
                 WHERE thread_id = ?1 AND node_id = ?2 AND branch = ?3",
                params![thread_id, node_id, branch, base_commit, path],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// A sync moved what the diff is against.
    pub async fn set_worktree_base(&self, thread_id: String, base: String) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE worktrees SET base_commit = ?2 WHERE thread_id = ?1",
                params![thread_id, base],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn set_worktree_pr(
        &self,
        thread_id: String,
        url: String,
        number: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE worktrees SET pr_url = ?2, pr_number = ?3 WHERE thread_id = ?1",
                params![thread_id, url, number],
            )?;
            Ok(())
        })
        .await
    }

    /// The worktree is gone from its node (the branch stays, so the record does: a new
    /// task of the thread creates the worktree again on it).
    pub async fn worktree_removed(&self, thread_id: String) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE worktrees SET path = NULL WHERE thread_id = ?1",
                params![thread_id],
            )?;
            Ok(())
        })
        .await
    }

    /// Of `threads` (reported by a node), those with no worktree of theirs on that node
    /// that should stay: unknown, archived, or held elsewhere.
    pub async fn orphan_worktrees(
        &self,
        node_id: String,
        threads: Vec<String>,
    ) -> anyhow::Result<Vec<String>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT 1 FROM worktrees w JOIN threads t ON t.id = w.thread_id
                 WHERE w.thread_id = ?1 AND w.node_id = ?2 AND t.status != 'archived'",
            )?;
            let mut orphans = Vec::new();
            for t in threads {
                if st
                    .query_row(params![t, node_id], |_| Ok(()))
                    .optional()?
                    .is_none()
                {
                    orphans.push(t);
                }
            }
            Ok(orphans)
        })
        .await
    }
}
