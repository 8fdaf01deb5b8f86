//! The task hub: everything between a node's task frames and the watchers of a task.
//!
//! - **Ingest**: reliable frames from the owning node are deduplicated by (task, seq),
//!   fanned out to live watchers at once, and queued for the writer. A full writer queue
//!   makes the node's connection wait (TCP backpressure), so memory stays bounded.
//! - **Writer**: one task drains the queue in batches, writes each batch in one SQLite
//!   transaction, then acknowledges the highest stored seq per task to its node. Acks are
//!   coalesced in a per-node mailbox, so the writer never waits on a connection.
//! - **Watchers** subscribe under the same lock that orders ingest and commit, which gives a
//!   consistent cut: rows in SQLite up to `committed`, the uncommitted tail in memory, and
//!   everything after through a broadcast channel. A watcher that falls behind re-reads from
//!   SQLite; nothing is skipped and nothing repeats.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Notify};

use super::events::Events;
use super::registry::Outgoing;
use super::App;
use crate::clock::now_ms;
use crate::protocol::{ErrorCode, Frame, TaskOptions, TaskSubmit};
use crate::store::{ChunkBatch, Store, TaskFinish, TaskRecord, TaskState};

/// Writes queued before ingest waits.
const WRITER_QUEUE: usize = 16 * 1024;
/// Most ops written in one transaction.
const WRITER_BATCH: usize = 8 * 1024;
/// After the first op of a batch, how long the writer gathers more before committing.
const WRITER_LINGER: Duration = Duration::from_millis(3);
/// Live events buffered per task for slow watchers before they fall back to SQLite.
const LIVE_BUFFER: usize = 4096;

/// A live event of one task.
#[derive(Clone, Debug)]
pub enum Live {
    Chunk(u64, Arc<str>),
    /// The final state is stored.
    End,
}

pub struct LiveTask {
    pub id: String,
    pub node_id: String,
    inner: Mutex<LiveInner>,
}

struct LiveInner {
    /// Highest seq accepted from the node.
    last_seq: i64,
    /// Highest seq stored in SQLite.
    committed: i64,
    /// Accepted chunks with seq > committed.
    pending: VecDeque<(u64, Arc<str>)>,
    tx: broadcast::Sender<Live>,
    /// The final state is stored.
    ended: bool,
    /// The task had already ended in SQLite (node lost, or stopped while its node was away)
    /// when its node spoke of it again: acknowledge and stop it, store nothing.
    orphan: bool,
    stop_requested: bool,
}

impl LiveTask {
    fn lock(&self) -> std::sync::MutexGuard<'_, LiveInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What a new watcher starts from.
pub struct Subscription {
    pub rx: broadcast::Receiver<Live>,
    /// Chunks up to here are in SQLite.
    pub committed: i64,
    /// Accepted chunks after `committed`, in order.
    pub pending: Vec<(u64, Arc<str>)>,
}

/// Coalesced acknowledgements for one node.
#[derive(Default)]
pub struct AckBox {
    pending: Mutex<HashMap<String, u64>>,
    pub notify: Notify,
}

impl AckBox {
    fn set(&self, task: &str, seq: u64) {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let e = p.entry(task.to_string()).or_insert(seq);
        *e = (*e).max(seq);
        drop(p);
        self.notify.notify_one();
    }

    /// Ack frames to send now.
    pub fn take(&self) -> Vec<Frame> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        p.drain()
            .map(|(task_id, seq)| Frame::TaskAck { task_id, seq })
            .collect()
    }
}

enum WriteOp {
    /// A chunk, with the token usage it reports (message-metadata from the agent).
    Chunk(
        Arc<LiveTask>,
        u64,
        Arc<str>,
        Option<(i64, i64, Option<String>)>,
    ),
    Started(Arc<LiveTask>, u64, i64),
    Finished(Arc<LiveTask>, u64, TaskFinish),
}

pub struct TaskHub {
    live: Mutex<HashMap<String, Arc<LiveTask>>>,
    acks: Mutex<HashMap<String, Arc<AckBox>>>,
    writer: mpsc::Sender<WriteOp>,
    events: Events,
}

impl TaskHub {
    /// Creates the hub and starts its writer.
    pub fn start(store: Store, events: Events) -> Arc<TaskHub> {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let hub = Arc::new(TaskHub {
            live: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            writer: tx,
            events,
        });
        tokio::spawn(writer(Arc::downgrade(&hub), store, rx));
        hub
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveTask>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ack_box(&self, node_id: &str) -> Arc<AckBox> {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node_id.to_string())
            .or_default()
            .clone()
    }

    fn insert_live(&self, rec: &TaskRecord) -> Arc<LiveTask> {
        let mut map = self.live_map();
        map.entry(rec.id.clone())
            .or_insert_with(|| {
                Arc::new(LiveTask {
                    id: rec.id.clone(),
                    node_id: rec.node_id.clone().unwrap_or_default(),
                    inner: Mutex::new(LiveInner {
                        last_seq: rec.last_seq,
                        committed: rec.last_seq,
                        pending: VecDeque::new(),
                        tx: broadcast::channel(LIVE_BUFFER).0,
                        ended: false,
                        orphan: rec.state.is_terminal(),
                        stop_requested: false,
                    }),
                })
            })
            .clone()
    }

    /// The live entry of a task, loading it from SQLite after a gateway restart.
    pub async fn live(
        &self,
        store: &Store,
        task_id: &str,
    ) -> anyhow::Result<Option<Arc<LiveTask>>> {
        if let Some(l) = self.live_map().get(task_id) {
            return Ok(Some(l.clone()));
        }
        Ok(store
            .task(task_id.to_string())
            .await?
            .map(|rec| self.insert_live(&rec)))
    }

    /// Registers a task just created.
    pub fn created(&self, rec: &TaskRecord) {
        self.insert_live(rec);
        self.events.publish(
            "task.created",
            json!({"taskId": rec.id, "nodeId": rec.node_id, "state": rec.state}),
        );
    }

    /// A watcher's starting point, or None when the task is not live (ended or unknown).
    pub fn subscribe(&self, task_id: &str) -> Option<Subscription> {
        let live = self.live_map().get(task_id)?.clone();
        let st = live.lock();
        if st.ended || st.orphan {
            return None;
        }
        Some(Subscription {
            rx: st.tx.subscribe(),
            committed: st.committed,
            pending: st.pending.iter().cloned().collect(),
        })
    }

    /// Handles a reliable task frame from `node_id`. Returns a frame to answer with.
    pub async fn ingest(&self, store: &Store, node_id: &str, frame: Frame) -> Option<Frame> {
        let (task_id, seq) = match &frame {
            Frame::TaskStarted { task_id, seq }
            | Frame::TaskStreamChunk { task_id, seq, .. }
            | Frame::TaskCompleted { task_id, seq, .. }
            | Frame::TaskError { task_id, seq, .. } => (task_id.clone(), *seq),
            _ => return None,
        };
        let is_final = matches!(frame, Frame::TaskCompleted { .. } | Frame::TaskError { .. });
        let live = match self.live(store, &task_id).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::warn!(node = %node_id, task = %task_id, "frame for an unknown task");
                return Some(Frame::error(
                    ErrorCode::UnknownTask,
                    format!("no task {task_id}"),
                ));
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "loading task");
                return Some(Frame::error(ErrorCode::Internal, "gateway storage error"));
            }
        };
        if live.node_id != node_id {
            tracing::warn!(node = %node_id, task = %task_id, owner = %live.node_id, "refused frames for a task the node does not own");
            return Some(Frame::error(
                ErrorCode::NotOwner,
                format!("task {task_id} does not belong to this node"),
            ));
        }
        let op = {
            let mut st = live.lock();
            if st.orphan {
                self.ack_box(node_id).set(&task_id, seq);
                if !is_final && !st.stop_requested {
                    st.stop_requested = true;
                    return Some(Frame::TaskStop { task_id });
                }
                return None;
            }
            let s = seq as i64;
            if s <= st.last_seq {
                // A resend after reconnect. Re-acknowledge what is stored.
                if st.committed >= 0 {
                    self.ack_box(node_id).set(&task_id, st.committed as u64);
                }
                return None;
            }
            if s != st.last_seq + 1 {
                tracing::warn!(task = %task_id, seq, expected = st.last_seq + 1, "sequence gap; waiting for a resend");
                return None;
            }
            st.last_seq = s;
            match frame {
                Frame::TaskStreamChunk { chunk, .. } => {
                    if chunk["type"] == "tool-approval-request" {
                        self.events.publish(
                            "task.approval",
                            json!({"taskId": task_id, "status": "awaiting approval",
                                   "approvalId": chunk["approvalId"], "toolCallId": chunk["toolCallId"]}),
                        );
                    }
                    let usage = (chunk["type"] == "message-metadata")
                        .then(|| &chunk["messageMetadata"])
                        .filter(|m| m["usage"].is_object())
                        .map(|m| {
                            (
                                m["usage"]["inputTokens"].as_i64().unwrap_or(0),
                                m["usage"]["outputTokens"].as_i64().unwrap_or(0),
                                m["model"].as_str().map(str::to_string),
                            )
                        });
                    let text: Arc<str> = chunk.to_string().into();
                    st.pending.push_back((seq, text.clone()));
                    let _ = st.tx.send(Live::Chunk(seq, text.clone()));
                    WriteOp::Chunk(live.clone(), seq, text, usage)
                }
                Frame::TaskStarted { .. } => WriteOp::Started(live.clone(), seq, now_ms()),
                Frame::TaskCompleted {
                    exit_code, result, ..
                } => WriteOp::Finished(
                    live.clone(),
                    seq,
                    TaskFinish {
                        state: TaskState::Completed,
                        exit_code,
                        error: None,
                        result,
                        at: now_ms(),
                    },
                ),
                Frame::TaskError {
                    error,
                    exit_code,
                    stopped,
                    ..
                } => WriteOp::Finished(
                    live.clone(),
                    seq,
                    TaskFinish {
                        state: if stopped {
                            TaskState::Stopped
                        } else {
                            TaskState::Error
                        },
                        exit_code,
                        error: Some(error),
                        result: None,
                        at: now_ms(),
                    },
                ),
                _ => return None,
            }
        };
        if self.writer.send(op).await.is_err() {
            tracing::error!("task writer stopped");
        }
        None
    }

    /// Remembers that a stop was requested, so it is sent again when the node reconnects.
    pub fn request_stop(&self, task_id: &str) {
        if let Some(l) = self.live_map().get(task_id) {
            l.lock().stop_requested = true;
        }
    }

    fn stop_requested(&self, task_id: &str) -> bool {
        self.live_map()
            .get(task_id)
            .is_some_and(|l| l.lock().stop_requested)
    }

    /// Ends a task without its node (node lost, stopped while away): stores the final state,
    /// ends its watchers, and turns later frames from its node into acks and a stop.
    pub async fn end_without_node(
        &self,
        store: &Store,
        task_id: &str,
        fin: TaskFinish,
    ) -> anyhow::Result<bool> {
        let state = fin.state;
        let changed = store.finish_task(task_id.to_string(), fin).await?;
        if changed {
            let live = self.live_map().get(task_id).cloned();
            if let Some(live) = live {
                let mut st = live.lock();
                st.orphan = true;
                st.ended = true;
                let _ = st.tx.send(Live::End);
            }
            self.events
                .publish("task.state", json!({"taskId": task_id, "state": state}));
        }
        Ok(changed)
    }

    fn committed(&self, live: &LiveTask, seq: u64) {
        let mut st = live.lock();
        st.committed = st.committed.max(seq as i64);
        let c = st.committed;
        while st.pending.front().is_some_and(|(s, _)| (*s as i64) <= c) {
            st.pending.pop_front();
        }
    }

    fn ended(&self, live: &LiveTask, state: TaskState) {
        {
            let mut st = live.lock();
            st.ended = true;
            let _ = st.tx.send(Live::End);
        }
        self.live_map().remove(&live.id);
        self.events
            .publish("task.state", json!({"taskId": live.id, "state": state}));
    }
}

/// Drains write ops in batches, one transaction each, then acks and publishes.
async fn writer(hub: std::sync::Weak<TaskHub>, store: Store, mut rx: mpsc::Receiver<WriteOp>) {
    let mut ops = Vec::with_capacity(WRITER_BATCH);
    while rx.recv_many(&mut ops, WRITER_BATCH).await > 0 {
        // Fewer, larger transactions: gather a little longer unless the batch is full.
        // Watchers are not waiting on this; only acks and the final state are.
        let deadline = tokio::time::Instant::now() + WRITER_LINGER;
        while ops.len() < WRITER_BATCH {
            let room = WRITER_BATCH - ops.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut ops, room)).await {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        let mut batch = ChunkBatch::default();
        let mut max_seq: HashMap<String, (Arc<LiveTask>, u64)> = HashMap::new();
        let mut started = Vec::new();
        let mut finished = Vec::new();
        for op in ops.drain(..) {
            let (live, seq) = match op {
                WriteOp::Chunk(live, seq, text, usage) => {
                    batch.chunks.push((live.id.clone(), seq, text.to_string()));
                    if let Some((input, output, model)) = usage {
                        batch.usage.push((live.id.clone(), input, output, model));
                    }
                    (live, seq)
                }
                WriteOp::Started(live, seq, at) => {
                    batch.started.push((live.id.clone(), at));
                    started.push(live.id.clone());
                    (live, seq)
                }
                WriteOp::Finished(live, seq, fin) => {
                    finished.push((live.clone(), fin.state));
                    batch.finished.push((live.id.clone(), fin));
                    (live, seq)
                }
            };
            let e = max_seq.entry(live.id.clone()).or_insert((live, seq));
            e.1 = e.1.max(seq);
        }
        for (task, (_, seq)) in &max_seq {
            batch.last_seq.push((task.clone(), *seq));
        }
        if let Err(e) = store.apply_chunk_batch(batch).await {
            // Not acknowledged, so the nodes keep these frames and send them again after a
            // reconnect.
            tracing::error!(error = format!("{e:#}"), "writing task batch failed");
            continue;
        }
        let Some(hub) = hub.upgrade() else { return };
        for (live, seq) in max_seq.values() {
            hub.committed(live, *seq);
            hub.ack_box(&live.node_id).set(&live.id, *seq);
        }
        for id in started {
            hub.events
                .publish("task.state", json!({"taskId": id, "state": "running"}));
        }
        for (live, state) in finished {
            hub.ended(&live, state);
        }
    }
}

/// Sends a node the tasks waiting for it: pending ones, and stops that were requested while
/// it was away.
pub async fn on_node_connected(app: &App, node_id: &str) -> anyhow::Result<()> {
    let Some(tx) = app.registry.sender(node_id) else {
        return Ok(());
    };
    for rec in app.store.unfinished_tasks_of(node_id.to_string()).await? {
        // Tasks waiting for a binding start when it is ready (see environments).
        let waiting = match &rec.binding_id {
            None => false,
            Some(b) => match app.store.binding(b.clone()).await? {
                Some(b) => b.status != "ready",
                None => false,
            },
        };
        if rec.state == TaskState::Pending && !waiting {
            let _ = tx
                .send(Outgoing::Frame(submit_frame(app, &rec).await?))
                .await;
        }
        if app.tasks.stop_requested(&rec.id) {
            let _ = tx
                .send(Outgoing::Frame(Frame::TaskStop { task_id: rec.id }))
                .await;
        }
    }
    Ok(())
}

/// A heartbeat lists the tasks a node knows. A task stored as running on that node that the
/// node no longer knows was lost with a node restart. (A node keeps listing a task until its
/// final frame is acknowledged, and acks follow the commit, so this cannot race a normal end.)
pub async fn reconcile(app: &App, node_id: &str, known: &[String]) -> anyhow::Result<()> {
    for rec in app.store.unfinished_tasks_of(node_id.to_string()).await? {
        if rec.state == TaskState::Running && !known.contains(&rec.id) {
            tracing::warn!(node = %node_id, task = %rec.id, "node no longer has a running task");
            app.tasks
                .end_without_node(
                    &app.store,
                    &rec.id,
                    TaskFinish::without_node(
                        TaskState::Error,
                        "the node restarted and lost this task",
                    ),
                )
                .await?;
        }
    }
    Ok(())
}

/// The `task:submit` for a task, with its environment's runtime secrets (unsealed only here,
/// never stored with the task).
pub async fn submit_frame(app: &App, rec: &TaskRecord) -> anyhow::Result<Frame> {
    let options: TaskOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    let secrets = match &rec.environment_id {
        Some(env) => super::environments::unseal_secrets(app, env, true).await?,
        None => Vec::new(),
    };
    Ok(Frame::TaskSubmit(TaskSubmit {
        task_id: rec.id.clone(),
        goal: rec.goal.clone(),
        executor: rec.executor.clone(),
        options,
        secrets,
    }))
}

/// Fails the unfinished tasks of nodes that stayed away longer than the grace period.
pub async fn sweep_lost_nodes(app: App) {
    let started_ms = now_ms();
    let period =
        (app.config.node_grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = app.shutdown.cancelled() => return,
        }
        if let Err(e) = sweep_once(&app, started_ms).await {
            tracing::error!(error = format!("{e:#}"), "sweeping lost nodes");
        }
    }
}

async fn sweep_once(app: &App, started_ms: i64) -> anyhow::Result<()> {
    let now = now_ms();
    let grace = app.config.node_grace.as_millis() as i64;
    let mut verdicts: HashMap<String, Option<String>> = HashMap::new();
    for rec in app.store.unfinished_tasks().await? {
        let node_id = rec.node_id.clone().unwrap_or_default();
        if !verdicts.contains_key(&node_id) {
            let verdict = if app.registry.presence(&node_id).is_some() {
                None
            } else {
                match app.store.node(node_id.clone()).await? {
                    None => Some("the task's node does not exist".to_string()),
                    Some(n) if n.revoked_at.is_some() => Some("the task's node was revoked".into()),
                    Some(n) => {
                        // Offline since it was last seen, but never before this gateway
                        // started: a gateway that was down itself gives nodes a full grace.
                        let since = n.last_seen_at.unwrap_or(0).max(started_ms);
                        (now - since > grace).then(|| {
                            format!(
                                "node lost: {} was offline for more than {} s",
                                n.name,
                                grace / 1000
                            )
                        })
                    }
                }
            };
            verdicts.insert(node_id.clone(), verdict);
        }
        if let Some(Some(reason)) = verdicts.get(&node_id) {
            tracing::warn!(task = %rec.id, node = %node_id, %reason, "failing task");
            app.tasks
                .end_without_node(
                    &app.store,
                    &rec.id,
                    TaskFinish::without_node(TaskState::Error, reason.clone()),
                )
                .await?;
        }
    }
    Ok(())
}

/// Task JSON as the API shows it.
pub fn task_json(t: &TaskRecord) -> Value {
    use crate::clock::iso8601;
    let mut v = json!({
        "id": t.id,
        "nodeId": t.node_id,
        "goal": t.goal,
        "executor": t.executor,
        "options": serde_json::from_str::<Value>(&t.options).unwrap_or(json!({})),
        "state": t.state,
        "createdAt": iso8601(t.created_at),
        "lastSeq": t.last_seq,
    });
    if let Some(x) = t.started_at {
        v["startedAt"] = json!(iso8601(x));
    }
    if let Some(x) = t.finished_at {
        v["finishedAt"] = json!(iso8601(x));
    }
    if let Some(x) = t.exit_code {
        v["exitCode"] = json!(x);
    }
    if let Some(x) = &t.error {
        v["error"] = json!(x);
    }
    if let Some(x) = &t.result {
        v["result"] = json!(x);
    }
    if t.input_tokens > 0 || t.output_tokens > 0 {
        v["usage"] = json!({"inputTokens": t.input_tokens, "outputTokens": t.output_tokens, "model": t.model});
    }
    if let Some(e) = &t.environment_id {
        v["environmentId"] = json!(e);
    }
    if let Some(th) = &t.thread_id {
        v["threadId"] = json!(th);
    }
    v
}
