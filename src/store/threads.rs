//! Threads and their messages.

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};
use crate::protocol::api::ThreadStatus;
use crate::protocol::{ExecutorKind, InjectionMode, TaskState};

#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub id: String,
    pub environment_id: String,
    pub title: String,
    pub active_node_id: Option<String>,
    pub status: ThreadStatus,
    pub last_message_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The executor its messages run with (set by the first message).
    pub executor: Option<ExecutorKind>,
    /// The thread's latest task and its state (read-only; filled by SELECTs).
    pub last_task: Option<(String, TaskState)>,
}

/// The read-side extra of a thread: its latest task's id and state.
const THREAD_LAST_TASK: &str = "(SELECT id || ' ' || state FROM tasks
     WHERE tasks.thread_id = threads.id ORDER BY created_at DESC, id DESC LIMIT 1)";

const THREAD_COLUMNS: &str = "id, environment_id, title, active_node_id, status, last_message_at, \
                              created_at, updated_at, executor";

fn thread_from_row(r: &Row) -> rusqlite::Result<ThreadRecord> {
    Ok(ThreadRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        title: r.get(2)?,
        active_node_id: r.get(3)?,
        status: r.get(4)?,
        last_message_at: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        executor: r.get(8)?,
        last_task: r.get::<_, Option<String>>(9)?.and_then(|s| {
            let (id, state) = s.split_once(' ')?;
            Some((id.to_string(), state.parse().ok()?))
        }),
    })
}

#[derive(Debug, Clone)]
pub struct ThreadMessage {
    pub id: i64,
    pub message: String,
    pub task_id: String,
    pub injection_mode: Option<InjectionMode>,
    pub created_at: i64,
}

impl Store {
    pub async fn insert_thread(&self, t: ThreadRecord) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                &format!("INSERT INTO threads ({THREAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![t.id, t.environment_id, t.title, t.active_node_id, t.status, t.last_message_at, t.created_at, t.updated_at, t.executor],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn thread(&self, id: String) -> anyhow::Result<Option<ThreadRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {THREAD_COLUMNS}, {THREAD_LAST_TASK} FROM threads WHERE id = ?1"),
                params![id],
                thread_from_row,
            )
            .optional()
        })
        .await
    }

    pub async fn list_threads(&self, env_id: Option<String>) -> anyhow::Result<Vec<ThreadRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {THREAD_COLUMNS}, {THREAD_LAST_TASK} FROM threads
                 WHERE (?1 IS NULL OR environment_id = ?1)
                 ORDER BY coalesce(last_message_at, created_at) DESC, id DESC LIMIT 500"
            ))?;
            let rows = st.query_map(params![env_id], thread_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn update_thread(&self, t: ThreadRecord) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE threads SET title = ?2, status = ?3, active_node_id = ?4,
                    last_message_at = ?5, updated_at = ?6, executor = ?7 WHERE id = ?1",
                params![
                    t.id,
                    t.title,
                    t.status,
                    t.active_node_id,
                    t.last_message_at,
                    t.updated_at,
                    t.executor
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn insert_thread_message(
        &self,
        thread_id: String,
        message: String,
        task_id: String,
        mode: Option<InjectionMode>,
        at: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "INSERT INTO thread_messages (thread_id, message, task_id, injection_mode, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![thread_id, message, task_id, mode, at],
            )?;
            c.exec(
                "UPDATE threads SET last_message_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![thread_id, at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn thread_messages(&self, thread_id: String) -> anyhow::Result<Vec<ThreadMessage>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id, message, task_id, injection_mode, created_at FROM thread_messages
                 WHERE thread_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![thread_id], |r| {
                Ok(ThreadMessage {
                    id: r.get(0)?,
                    message: r.get(1)?,
                    task_id: r.get(2)?,
                    injection_mode: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The agent CLI session the thread's latest `executor` task on `node_id` reported: the
    /// next task there continues it (a session lives in that node's agent home).
    pub async fn thread_agent_session(
        &self,
        thread_id: String,
        executor: ExecutorKind,
        node_id: String,
    ) -> anyhow::Result<Option<String>> {
        self.read(move |c| {
            c.row(
                "SELECT agent_session FROM tasks
                 WHERE thread_id = ?1 AND executor = ?2 AND node_id = ?3
                   AND agent_session IS NOT NULL
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                params![thread_id, executor, node_id],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }
}
