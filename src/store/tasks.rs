//! Tasks, their state and usage, and follow-up messages. Their output, stored as chunk
//! runs, is `chunks.rs`.

use std::sync::Arc;

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};
use crate::protocol::{ExecutorKind, InjectionMode, TaskOutcome, TaskState};

#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: String,
    pub node_id: String,
    pub goal: String,
    pub executor: ExecutorKind,
    /// JSON object.
    pub options: String,
    pub created_at: i64,
    pub environment_id: Option<String>,
    pub thread_id: Option<String>,
    /// The binding whose working directory the task runs in; the task waits (pending)
    /// until that binding is ready.
    pub binding_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TaskRecord {
    pub id: String,
    pub node_id: Option<String>,
    pub goal: String,
    pub executor: ExecutorKind,
    pub options: String,
    pub state: TaskState,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub result: Option<String>,
    pub last_seq: i64,
    pub environment_id: Option<String>,
    pub thread_id: Option<String>,
    pub binding_id: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub model: Option<String>,
    /// What its agent reported it cost, in US dollars.
    pub cost_usd: f64,
    /// When retention deleted the task's output (its row and summary stay).
    pub output_pruned_at: Option<i64>,
}

const TASK_COLUMNS: &str = "id, node_id, goal, executor, options, state, created_at, started_at, \
                            finished_at, exit_code, error, result, last_seq, environment_id, \
                            thread_id, binding_id, input_tokens, output_tokens, model, \
                            output_pruned_at, cost_usd";

fn task_from_row(r: &Row) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        id: r.get(0)?,
        node_id: r.get(1)?,
        goal: r.get(2)?,
        executor: r.get(3)?,
        options: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        exit_code: r.get(9)?,
        error: r.get(10)?,
        result: r.get(11)?,
        last_seq: r.get(12)?,
        environment_id: r.get(13)?,
        thread_id: r.get(14)?,
        binding_id: r.get(15)?,
        input_tokens: tokens(r, 16)?,
        output_tokens: tokens(r, 17)?,
        model: r.get(18)?,
        output_pruned_at: r.get(19)?,
        cost_usd: cost(r, 20)?,
    })
}

/// Most tokens one task's usage counts; reports past it saturate here.
pub const MAX_TASK_TOKENS: i64 = 1_000_000_000_000_000;

/// Most cost one task counts, in US dollars; reports past it saturate here.
pub const MAX_TASK_COST_USD: f64 = 1.0e9;

/// A token count, read tolerantly: a REAL left by an older build (whose sums could overflow
/// into floats) or a sum is read saturated instead of failing every query that reads it.
fn tokens(r: &Row, i: usize) -> rusqlite::Result<i64> {
    match r.get_ref(i)? {
        rusqlite::types::ValueRef::Integer(n) => Ok(n.clamp(0, MAX_TASK_TOKENS)),
        rusqlite::types::ValueRef::Real(f) if f.is_finite() => Ok(f.clamp(0.0, 9.0e18) as i64),
        _ => Ok(0),
    }
}

/// A cost, read tolerantly like a token count.
fn cost(r: &Row, i: usize) -> rusqlite::Result<f64> {
    match r.get_ref(i)? {
        rusqlite::types::ValueRef::Real(f) if f.is_finite() => Ok(f.max(0.0)),
        rusqlite::types::ValueRef::Integer(n) => Ok(n.max(0) as f64),
        _ => Ok(0.0),
    }
}

/// One UTC day's usage of one (node, environment, model).
#[derive(Debug, Clone)]
pub struct UsageFact {
    /// Days since the epoch (UTC).
    pub day: i64,
    pub node_id: Option<String>,
    pub environment_id: Option<String>,
    pub model: Option<String>,
    pub tasks: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// What the agents reported.
    pub reported_cost_usd: f64,
    /// Tokens of the tasks whose agent reported no cost.
    pub unreported_input_tokens: i64,
    pub unreported_output_tokens: i64,
}

/// How a task ended, and when.
#[derive(Debug, Clone)]
pub struct TaskFinish {
    pub outcome: TaskOutcome,
    pub at: i64,
}

impl TaskFinish {
    /// An end decided now (by the gateway, or as the node's final frame arrives).
    pub fn now(outcome: TaskOutcome) -> TaskFinish {
        TaskFinish {
            outcome,
            at: crate::clock::now_ms(),
        }
    }
}

/// One chunk to store: (task, seq, chunk JSON).
pub type BatchChunk = (Arc<str>, u64, Arc<str>);

/// Reliable task frames received from nodes, written in one transaction. Sequence numbers
/// are already deduplicated by the caller; chunks at or below what is stored are skipped
/// anyway, so applying a batch again is harmless.
#[derive(Debug, Default)]
pub struct ChunkBatch {
    pub chunks: Vec<BatchChunk>,
    /// (task, started at)
    pub started: Vec<(String, i64)>,
    /// (task, how it ended)
    pub finished: Vec<(String, TaskFinish)>,
    /// (task, highest seq now stored)
    pub last_seq: Vec<(String, u64)>,
    /// What agents reported, to add to their tasks' usage
    pub usage: Vec<AgentReport>,
}

/// What an agent's `message-metadata` chunk reports for its task: tokens and cost to add,
/// the model, and the CLI session a later task of its thread can continue.
#[derive(Debug, Clone)]
pub struct AgentReport {
    pub task: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub model: Option<String>,
    pub session: Option<String>,
}

impl ChunkBatch {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
            && self.started.is_empty()
            && self.finished.is_empty()
            && self.last_seq.is_empty()
            && self.usage.is_empty()
    }
}

impl Store {
    /// How many tasks this store has inserted since it opened, counted once each insert has
    /// returned. A task is given its node when it is inserted and never moved, so a node whose
    /// unfinished tasks were read as none, when this count was N (read before the read), has
    /// none for as long as the count stays N.
    pub fn tasks_inserted(&self) -> u64 {
        self.tasks_inserted
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub async fn insert_task(&self, t: NewTask) -> anyhow::Result<()> {
        let inserted = self.tasks_inserted.clone();
        let r = self
            .write(move |c| {
                c.exec(
                    "INSERT INTO tasks (id, node_id, goal, executor, options, state, created_at,
                                    environment_id, thread_id, binding_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9)",
                    params![
                        t.id,
                        t.node_id,
                        t.goal,
                        t.executor,
                        t.options,
                        t.created_at,
                        t.environment_id,
                        t.thread_id,
                        t.binding_id
                    ],
                )?;
                Ok(())
            })
            .await;
        // Counted after, whether it failed or not: a count read before the insert was
        // committed is older than it.
        inserted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        r
    }

    pub async fn task(&self, id: String) -> anyhow::Result<Option<TaskRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1"),
                params![id],
                task_from_row,
            )
            .optional()
        })
        .await
    }

    /// Newest first, optionally filtered by node and state.
    pub async fn list_tasks(
        &self,
        node_id: Option<String>,
        state: Option<TaskState>,
        limit: u32,
    ) -> anyhow::Result<Vec<TaskRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE (?1 IS NULL OR node_id = ?1) AND (?2 IS NULL OR state = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![node_id, state, limit], task_from_row)?;
            rows.collect()
        })
        .await
    }

    /// Tasks of a node that are not finished, oldest first.
    pub async fn unfinished_tasks_of(&self, node_id: String) -> anyhow::Result<Vec<TaskRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks
                 WHERE node_id = ?1 AND state IN ('pending', 'running')
                 ORDER BY created_at, id"
            ))?;
            let rows = st.query_map(params![node_id], task_from_row)?;
            rows.collect()
        })
        .await
    }

    /// Every unfinished task (used at start to find tasks whose node never came back).
    pub async fn unfinished_tasks(&self) -> anyhow::Result<Vec<TaskRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE state IN ('pending', 'running')
                 ORDER BY created_at, id"
            ))?;
            let rows = st.query_map([], task_from_row)?;
            rows.collect()
        })
        .await
    }

    /// Writes a batch of chunks and state changes in one transaction: all of it or, on an
    /// error, none of it (so the same batch can be applied again).
    pub async fn apply_chunk_batch(&self, batch: Arc<ChunkBatch>) -> anyhow::Result<()> {
        self.write(move |c| {
            let tx = c.transaction()?;
            {
                super::chunks::insert_runs(&tx, &batch.chunks)?;
                let mut started = tx.prepare_cached(
                    "UPDATE tasks SET state = 'running', started_at = coalesce(started_at, ?2)
                     WHERE id = ?1 AND state = 'pending'",
                )?;
                for (task, at) in &batch.started {
                    started.execute(params![task, at])?;
                }
                let mut seqs = tx.prepare_cached(
                    "UPDATE tasks SET last_seq = max(last_seq, ?2) WHERE id = ?1",
                )?;
                for (task, seq) in &batch.last_seq {
                    seqs.execute(params![task, *seq as i64])?;
                }
                let mut usage = tx.prepare_cached(
                    "UPDATE tasks SET input_tokens = min(input_tokens + ?2, ?5),
                                      output_tokens = min(output_tokens + ?3, ?5),
                                      model = coalesce(?4, model),
                                      cost_usd = min(cost_usd + ?6, ?7),
                                      agent_session = coalesce(?8, agent_session) WHERE id = ?1",
                )?;
                for r in &batch.usage {
                    usage.execute(params![
                        r.task,
                        r.input_tokens,
                        r.output_tokens,
                        r.model,
                        MAX_TASK_TOKENS,
                        r.cost_usd,
                        MAX_TASK_COST_USD,
                        r.session
                    ])?;
                }
            }
            for (task, fin) in &batch.finished {
                finish_task_tx(&tx, task, fin)?;
            }
            tx.commit()
        })
        .await
    }

    /// Moves an unfinished task to a terminal state. Returns false when it had already ended.
    pub async fn finish_task(&self, id: String, fin: TaskFinish) -> anyhow::Result<bool> {
        self.write(move |c| finish_task_tx(c, &id, &fin)).await
    }

    /// How many tasks there are in each state, by executor: (state, executor, count).
    pub async fn task_counts(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT state, executor, count(*) FROM tasks GROUP BY state, executor",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    /// Token usage of tasks created in [from, to), grouped by `key` (node_id, environment_id
    /// or model): (key, tasks, input tokens, output tokens, cost in US dollars).
    pub async fn usage_by(
        &self,
        key: &'static str,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Vec<(Option<String>, i64, i64, i64, f64)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {key}, count(*), total(input_tokens), total(output_tokens), total(cost_usd)
                 FROM tasks WHERE created_at >= ?1 AND created_at < ?2
                   AND (input_tokens > 0 OR output_tokens > 0 OR cost_usd > 0)
                 GROUP BY {key} ORDER BY total(input_tokens) + total(output_tokens) DESC"
            ))?;
            // total() is a float that cannot overflow; the sums are read back saturated.
            let rows = st.query_map(params![from, to], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    tokens(r, 2)?,
                    tokens(r, 3)?,
                    cost(r, 4)?,
                ))
            })?;
            rows.collect()
        })
        .await
    }

    /// Token usage of tasks created in [from, to) by UTC day, node, environment and model:
    /// the sums, and the tokens of the tasks whose agent reported no cost (for a price table
    /// to price).
    pub async fn usage_daily(&self, from: i64, to: i64) -> anyhow::Result<Vec<UsageFact>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT created_at / 86400000, node_id, environment_id, model, count(*),
                        total(input_tokens), total(output_tokens), total(cost_usd),
                        total(CASE WHEN cost_usd > 0 THEN 0 ELSE input_tokens END),
                        total(CASE WHEN cost_usd > 0 THEN 0 ELSE output_tokens END)
                 FROM tasks WHERE created_at >= ?1 AND created_at < ?2
                   AND (input_tokens > 0 OR output_tokens > 0 OR cost_usd > 0)
                 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
                 LIMIT 100000",
            )?;
            let rows = st.query_map(params![from, to], |r| {
                Ok(UsageFact {
                    day: r.get(0)?,
                    node_id: r.get(1)?,
                    environment_id: r.get(2)?,
                    model: r.get(3)?,
                    tasks: r.get(4)?,
                    input_tokens: tokens(r, 5)?,
                    output_tokens: tokens(r, 6)?,
                    reported_cost_usd: cost(r, 7)?,
                    unreported_input_tokens: tokens(r, 8)?,
                    unreported_output_tokens: tokens(r, 9)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn set_task_options(&self, id: String, options: String) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE tasks SET options = ?2 WHERE id = ?1",
                params![id, options],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn insert_task_message(
        &self,
        task_id: String,
        message: String,
        mode: InjectionMode,
        now: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "INSERT INTO task_messages (task_id, message, injection_mode, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![task_id, message, mode, now],
            )?;
            Ok(())
        })
        .await
    }
}

fn finish_task_tx(c: &rusqlite::Connection, id: &str, fin: &TaskFinish) -> rusqlite::Result<bool> {
    let n = c.exec(
        "UPDATE tasks SET state = ?2, exit_code = ?3, error = ?4, result = ?5, finished_at = ?6,
                          started_at = coalesce(started_at, ?6)
         WHERE id = ?1 AND state IN ('pending', 'running')",
        params![
            id,
            fin.outcome.state(),
            fin.outcome.exit_code(),
            fin.outcome.error(),
            fin.outcome.result(),
            fin.at
        ],
    )?;
    Ok(n == 1)
}

impl Store {
    /// Pending tasks waiting for a binding to become ready.
    pub async fn pending_tasks_of_binding(
        &self,
        binding_id: String,
    ) -> anyhow::Result<Vec<String>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM tasks WHERE binding_id = ?1 AND state = 'pending' ORDER BY created_at",
            )?;
            let rows = st.query_map(params![binding_id], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }
}
