//! Terminals: where each runs and how it ended.

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};

#[derive(Debug, Clone)]
pub struct TerminalRecord {
    pub id: String,
    pub node_id: String,
    pub environment_id: String,
    pub binding_id: String,
    pub thread_id: Option<String>,
    pub command: Vec<String>,
    pub persistent: bool,
    /// `running`, `exited` or `lost`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub created_at: i64,
    pub ended_at: Option<i64>,
}

const COLUMNS: &str = "id, node_id, environment_id, binding_id, thread_id, command, persistent, \
                       status, exit_code, error, created_at, ended_at";

fn from_row(r: &Row) -> rusqlite::Result<TerminalRecord> {
    Ok(TerminalRecord {
        id: r.get(0)?,
        node_id: r.get(1)?,
        environment_id: r.get(2)?,
        binding_id: r.get(3)?,
        thread_id: r.get(4)?,
        command: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        persistent: r.get(6)?,
        status: r.get(7)?,
        exit_code: r.get(8)?,
        error: r.get(9)?,
        created_at: r.get(10)?,
        ended_at: r.get(11)?,
    })
}

impl Store {
    pub async fn insert_terminal(&self, t: TerminalRecord) -> anyhow::Result<()> {
        let command = serde_json::to_string(&t.command)?;
        self.write(move |c| {
            c.exec(
                &format!(
                    "INSERT INTO terminals ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    t.id, t.node_id, t.environment_id, t.binding_id, t.thread_id, command,
                    t.persistent, t.status, t.exit_code, t.error, t.created_at, t.ended_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn terminal(&self, id: String) -> anyhow::Result<Option<TerminalRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {COLUMNS} FROM terminals WHERE id = ?1"),
                params![id],
                from_row,
            )
            .optional()
        })
        .await
    }

    /// Terminals, newest first, by binding or thread, running ones only unless `all`.
    pub async fn list_terminals(
        &self,
        binding: Option<String>,
        thread: Option<String>,
        all: bool,
    ) -> anyhow::Result<Vec<TerminalRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM terminals
                 WHERE (?1 IS NULL OR binding_id = ?1) AND (?2 IS NULL OR thread_id = ?2)
                   AND (?3 OR status = 'running')
                 ORDER BY created_at DESC, id DESC LIMIT 500"
            ))?;
            let rows = st.query_map(params![binding, thread, all], from_row)?;
            rows.collect()
        })
        .await
    }

    /// The running terminals of a node.
    pub async fn running_terminals_of_node(
        &self,
        node: String,
    ) -> anyhow::Result<Vec<TerminalRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM terminals WHERE node_id = ?1 AND status = 'running'"
            ))?;
            let rows = st.query_map(params![node], from_row)?;
            rows.collect()
        })
        .await
    }

    /// Records that a terminal ended (once: a second end changes nothing). True when it was
    /// running.
    pub async fn end_terminal(
        &self,
        id: String,
        status: &'static str,
        exit_code: Option<i32>,
        error: Option<String>,
        at: i64,
    ) -> anyhow::Result<bool> {
        self.write(move |c| {
            Ok(c.exec(
                "UPDATE terminals SET status = ?2, exit_code = ?3, error = ?4, ended_at = ?5
                 WHERE id = ?1 AND status = 'running'",
                params![id, status, exit_code, error, at],
            )? > 0)
        })
        .await
    }
}
