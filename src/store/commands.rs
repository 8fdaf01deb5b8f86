//! Gateway -> node commands waiting for the node's `command:ack`.

use super::{Cached, Store};

/// A stored command: its id, the task it is about (none for the node itself), and the frame
/// as sent (JSON).
#[derive(Debug, Clone)]
pub struct CommandRecord {
    pub id: String,
    pub task_id: Option<String>,
    pub frame: String,
}

impl Store {
    /// Stores a command before it is sent, so it survives a gateway restart.
    pub async fn insert_command(
        &self,
        id: String,
        node_id: String,
        task_id: Option<String>,
        frame: String,
        now: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "INSERT INTO commands (id, node_id, task_id, frame, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![id, node_id, task_id, frame, now],
            )?;
            Ok(())
        })
        .await
    }

    /// The node acknowledged the command (or it became moot). Only the node it was sent to
    /// may acknowledge it; returns whether a command was removed.
    pub async fn delete_command(&self, id: String, node_id: String) -> anyhow::Result<bool> {
        self.write(move |c| {
            let n = c.exec(
                "DELETE FROM commands WHERE id = ?1 AND node_id = ?2",
                rusqlite::params![id, node_id],
            )?;
            Ok(n > 0)
        })
        .await
    }

    /// Unacknowledged commands of a node, oldest first.
    pub async fn commands_of(&self, node_id: String) -> anyhow::Result<Vec<CommandRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, task_id, frame FROM commands WHERE node_id = ?1
                 ORDER BY created_at, rowid",
            )?;
            let rows = st.query_map([node_id], |r| {
                Ok(CommandRecord {
                    id: r.get(0)?,
                    task_id: r.get(1)?,
                    frame: r.get(2)?,
                })
            })?;
            rows.collect()
        })
        .await
    }
}
