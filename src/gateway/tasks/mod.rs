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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::Events;
use crate::clock::now_ms;
use crate::protocol::events::Event;
use crate::protocol::{ErrorCode, Frame, TaskOutcome, TaskState};
use crate::store::{AgentReport, Store, TaskFinish, TaskRecord};

mod dispatch;
mod lifecycle;
mod writer;

pub use dispatch::{dispatch, dispatch_waiting, submit_frame};
pub use lifecycle::{on_node_connected, reconcile, sweep_lost_nodes};
use writer::writer;

/// Rows (chunks and state changes) queued for the writer before ingest waits: counted in
/// rows, not ops, since one op may carry a batch of up to a thousand chunks.
const WRITER_QUEUE: usize = 16 * 1024;
/// Most ops written in one transaction.
const WRITER_BATCH: usize = 8 * 1024;
/// After the first op of a batch, how long the writer gathers more before committing.
const WRITER_LINGER: Duration = Duration::from_millis(3);
/// Most bytes of a node's error or result text kept with a task.
const MAX_OUTCOME_TEXT: usize = 16 * 1024;
/// Live events buffered per task for slow watchers before they fall back to SQLite.
const LIVE_BUFFER: usize = 4096;

/// How much output the gateway takes before it refuses more (`--task-output-quota-mb` and
/// friends): a task past its quota, or a node past its own, ends as an error and is told to
/// stop; below the free-disk floor, new output is refused the same way instead of filling
/// the disk.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub task_bytes: u64,
    pub task_chunks: u64,
    /// Output bytes of a node's live tasks together.
    pub node_bytes: u64,
    pub min_free_disk_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            task_bytes: 512 << 20,
            task_chunks: 2_000_000,
            node_bytes: 4 << 30,
            min_free_disk_bytes: 256 << 20,
        }
    }
}

/// A live event of one task.
#[derive(Clone, Debug)]
pub enum Live {
    Chunk(u64, Arc<str>),
    /// The final state is stored.
    End,
}

pub struct LiveTask {
    /// Shared with every stored row of the task rather than copied into each.
    pub id: Arc<str>,
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
    /// Output accepted so far (bytes of chunk JSON, chunks), for the quotas.
    bytes: u64,
    chunks: u64,
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

/// Most tokens one usage report may add: far above any model's context, far below what
/// could overflow a sum.
const MAX_REPORTED_TOKENS: i64 = 100_000_000;

/// A node's token count, clamped: a hostile or broken node cannot make the sums overflow.
fn reported_tokens(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_u64().map(|_| i64::MAX))
        .unwrap_or(0)
        .clamp(0, MAX_REPORTED_TOKENS)
}

/// Most cost one report may add, in US dollars.
const MAX_REPORTED_COST_USD: f64 = 1.0e6;

/// A node's cost figure, clamped like its token counts.
fn reported_cost(v: &Value) -> f64 {
    v.as_f64()
        .filter(|f| f.is_finite())
        .unwrap_or(0.0)
        .clamp(0.0, MAX_REPORTED_COST_USD)
}

/// An agent session id as a node reports it: short printable text, or nothing.
fn reported_session(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|s| !s.is_empty() && s.len() <= 200 && s.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
}

/// What an agent's `message-metadata` chunk reports: usage, cost, its CLI session.
fn agent_report(task_id: &str, chunk: &Value) -> Option<AgentReport> {
    if chunk["type"] != "message-metadata" {
        return None;
    }
    let m = &chunk["messageMetadata"];
    let r = AgentReport {
        task: task_id.to_string(),
        input_tokens: reported_tokens(&m["usage"]["inputTokens"]),
        output_tokens: reported_tokens(&m["usage"]["outputTokens"]),
        cost_usd: reported_cost(&m["costUsd"]),
        model: m["model"].as_str().map(str::to_string),
        session: reported_session(&m["agentSession"]),
    };
    let reports = r.input_tokens > 0
        || r.output_tokens > 0
        || r.cost_usd > 0.0
        || r.model.is_some()
        || r.session.is_some();
    reports.then_some(r)
}

/// What to do with one reliable frame after ordering it.
enum Sequenced {
    /// Queue this write.
    Write(WriteOp),
    /// Answer the node with this frame and store nothing.
    Answer(Box<Frame>),
    /// Over a quota: queue the write of what came before, if any, then end the task with
    /// this error and tell the node to stop it.
    Refuse(String, Option<WriteOp>),
    /// A resend or a gap: nothing to store or say.
    Ignore,
}

impl WriteOp {
    /// Rows it writes, as counted against [`WRITER_QUEUE`].
    fn rows(&self) -> usize {
        match self {
            WriteOp::Chunks(_, rows) => rows.len(),
            WriteOp::Started(..) | WriteOp::Finished(..) => 1,
        }
    }
}

enum WriteOp {
    /// Consecutive chunks of one task (in seq order), each with what it reports for the
    /// task's usage.
    Chunks(Arc<LiveTask>, Vec<(u64, Arc<str>, Option<AgentReport>)>),
    Started(Arc<LiveTask>, u64, i64),
    Finished(Arc<LiveTask>, u64, TaskFinish),
}

pub struct TaskHub {
    live: Mutex<HashMap<String, Arc<LiveTask>>>,
    acks: Mutex<HashMap<String, Arc<AckBox>>>,
    writer: mpsc::Sender<WriteOp>,
    /// Room in the writer's queue, in rows ([`WRITER_QUEUE`]); the writer gives it back
    /// once the rows are stored.
    room: Arc<Semaphore>,
    events: Events,
    quotas: Quotas,
    /// Output bytes of each node's live tasks.
    node_bytes: Mutex<HashMap<String, u64>>,
    /// Free bytes on the data dir's disk, refreshed every second.
    free_disk: Arc<AtomicU64>,
    metrics: crate::gateway::metrics::Metrics,
}

impl TaskHub {
    /// Creates the hub and starts its writer on `background`. On `shutdown` the writer
    /// commits what is queued and ends.
    pub fn start(
        store: Store,
        events: Events,
        quotas: Quotas,
        data_dir: std::path::PathBuf,
        metrics: crate::gateway::metrics::Metrics,
        shutdown: CancellationToken,
        background: &TaskTracker,
    ) -> Arc<TaskHub> {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let room = Arc::new(Semaphore::new(WRITER_QUEUE));
        let free_disk = Arc::new(AtomicU64::new(u64::MAX));
        let hub = Arc::new(TaskHub {
            live: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            writer: tx,
            room: room.clone(),
            events,
            quotas,
            node_bytes: Mutex::new(HashMap::new()),
            free_disk: free_disk.clone(),
            metrics: metrics.clone(),
        });
        background.spawn(writer(
            Arc::downgrade(&hub),
            store,
            rx,
            room,
            metrics,
            shutdown.clone(),
        ));
        background.spawn(watch_free_disk(data_dir, free_disk, shutdown));
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

    fn insert_live(&self, rec: &TaskRecord, output: (u64, u64)) -> Arc<LiveTask> {
        let mut map = self.live_map();
        map.entry(rec.id.clone())
            .or_insert_with(|| {
                // What it stored before a restart counts toward its node's quota too (and is
                // given back when it ends, like the rest).
                if output.1 > 0 {
                    let node = rec.node_id.clone().unwrap_or_default();
                    *self.node_bytes().entry(node).or_default() += output.1;
                }
                Arc::new(LiveTask {
                    id: rec.id.as_str().into(),
                    node_id: rec.node_id.clone().unwrap_or_default(),
                    inner: Mutex::new(LiveInner {
                        last_seq: rec.last_seq,
                        committed: rec.last_seq,
                        pending: VecDeque::new(),
                        tx: broadcast::channel(LIVE_BUFFER).0,
                        ended: false,
                        orphan: rec.state.is_terminal(),
                        stop_requested: false,
                        chunks: output.0,
                        bytes: output.1,
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
        let Some(rec) = store.task(task_id.to_string()).await? else {
            return Ok(None);
        };
        // After a gateway restart: what the task already stored counts toward its quota.
        let output = if rec.state.is_terminal() {
            (0, 0)
        } else {
            store.task_output_size(task_id.to_string()).await?
        };
        Ok(Some(self.insert_live(&rec, output)))
    }

    /// Registers a task just created.
    pub fn created(&self, rec: &TaskRecord) {
        self.insert_live(rec, (0, 0));
        self.events.publish(Event::TaskCreated {
            task_id: rec.id.clone(),
            node_id: rec.node_id.clone(),
            state: rec.state,
        });
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
            | Frame::TaskStreamChunks { task_id, seq, .. }
            | Frame::TaskCompleted { task_id, seq, .. }
            | Frame::TaskError { task_id, seq, .. } => (task_id.clone(), *seq),
            _ => return None,
        };
        let live = match self.owned_live(store, node_id, &task_id).await {
            Ok(live) => live,
            Err(reply) => return Some(reply),
        };
        match self.sequence(&live, node_id, seq, frame) {
            Sequenced::Write(op) => self.write(op).await,
            Sequenced::Answer(reply) => return Some(*reply),
            Sequenced::Ignore => {}
            Sequenced::Refuse(why, op) => {
                if let Some(op) = op {
                    self.write(op).await;
                }
                return self.refuse(store, &live, why).await;
            }
        }
        None
    }

    async fn write(&self, op: WriteOp) {
        // A full queue makes the node's connection wait: TCP backpressure, bounded memory.
        match self.room.acquire_many(op.rows() as u32).await {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        if self.writer.send(op).await.is_err() {
            tracing::error!("task writer stopped");
        }
    }

    /// The live entry of a task that `node_id` owns, or the error frame to answer with.
    async fn owned_live(
        &self,
        store: &Store,
        node_id: &str,
        task_id: &str,
    ) -> Result<Arc<LiveTask>, Frame> {
        let live = match self.live(store, task_id).await {
            Ok(Some(l)) => l,
            Ok(None) => {
                tracing::warn!(task = %task_id, "frame for an unknown task");
                return Err(Frame::error(
                    ErrorCode::UnknownTask,
                    format!("no task {task_id}"),
                ));
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "loading task");
                return Err(Frame::error(ErrorCode::Internal, "gateway storage error"));
            }
        };
        if live.node_id != node_id {
            tracing::warn!(task = %task_id, owner = %live.node_id, "refused frames for a task the node does not own");
            return Err(Frame::error(
                ErrorCode::NotOwner,
                format!("task {task_id} does not belong to this node"),
            ));
        }
        Ok(live)
    }

    /// Orders one reliable frame under the task's lock: drops resends and gaps, fans chunks
    /// out to watchers, and returns the write to queue (or what to answer instead).
    fn sequence(&self, live: &Arc<LiveTask>, node_id: &str, seq: u64, frame: Frame) -> Sequenced {
        let task_id = &live.id;
        let mut st = live.lock();
        if st.orphan {
            let last = match &frame {
                Frame::TaskStreamChunks { chunks, .. } => seq + chunks.len() as u64 - 1,
                _ => seq,
            };
            self.ack_box(node_id).set(task_id, last);
            let is_final = TaskOutcome::from_frame(&frame).is_some();
            if !is_final && !st.stop_requested {
                st.stop_requested = true;
                return Sequenced::Answer(Box::new(Frame::TaskStop {
                    task_id: task_id.to_string(),
                }));
            }
            return Sequenced::Ignore;
        }
        let frame = match frame {
            Frame::TaskStreamChunk { chunk, .. } => {
                return self.sequence_chunks(live, &mut st, node_id, seq, [chunk]);
            }
            Frame::TaskStreamChunks { chunks, .. } => {
                return self.sequence_chunks(live, &mut st, node_id, seq, chunks);
            }
            frame => frame,
        };
        let s = seq as i64;
        if s <= st.last_seq {
            self.resent(&st, node_id, task_id);
            return Sequenced::Ignore;
        }
        if s != st.last_seq + 1 {
            tracing::warn!(task = %task_id, seq, expected = st.last_seq + 1, "sequence gap; waiting for a resend");
            return Sequenced::Ignore;
        }
        st.last_seq = s;
        if let Frame::TaskStarted { .. } = frame {
            return Sequenced::Write(WriteOp::Started(live.clone(), seq, now_ms()));
        }
        match TaskOutcome::from_frame(&frame) {
            // A node's error or result text is kept to a readable size.
            Some(outcome) => Sequenced::Write(WriteOp::Finished(
                live.clone(),
                seq,
                TaskFinish::now(outcome.map_text(|t| cut_text(t, MAX_OUTCOME_TEXT))),
            )),
            None => Sequenced::Ignore,
        }
    }

    /// A resend after a reconnect: re-acknowledges what is stored.
    fn resent(&self, st: &LiveInner, node_id: &str, task_id: &str) {
        if st.committed >= 0 {
            self.ack_box(node_id).set(task_id, st.committed as u64);
        }
    }

    /// Orders consecutive chunks starting at `first` (one frame's worth) under the task's
    /// lock held as `st`: those already accepted are resends, a gap drops the rest until
    /// the node sends them again, and each new one is counted, kept until stored and fanned
    /// out to watchers.
    fn sequence_chunks(
        &self,
        live: &Arc<LiveTask>,
        st: &mut LiveInner,
        node_id: &str,
        first: u64,
        chunks: impl IntoIterator<Item = Box<serde_json::value::RawValue>>,
    ) -> Sequenced {
        let task_id = &live.id;
        let mut rows = Vec::new();
        let mut refused = None;
        for (seq, chunk) in (first..).zip(chunks) {
            let s = seq as i64;
            if s <= st.last_seq {
                continue;
            }
            if s != st.last_seq + 1 {
                tracing::warn!(task = %task_id, seq, expected = st.last_seq + 1, "sequence gap; waiting for a resend");
                break;
            }
            let (text, usage) = self.chunk_seen(task_id, &chunk);
            if let Err(why) = self.charge(st, node_id, text.len() as u64) {
                refused = Some(why);
                break;
            }
            st.last_seq = s;
            self.metrics.chunk(text.len());
            st.pending.push_back((seq, text.clone()));
            let _ = st.tx.send(Live::Chunk(seq, text.clone()));
            rows.push((seq, text, usage));
        }
        if (first as i64) <= st.last_seq && rows.first().is_none_or(|r| r.0 != first) {
            self.resent(st, node_id, task_id);
        }
        let op = (!rows.is_empty()).then(|| WriteOp::Chunks(live.clone(), rows));
        match (refused, op) {
            (Some(why), op) => Sequenced::Refuse(why, op),
            (None, Some(op)) => Sequenced::Write(op),
            (None, None) => Sequenced::Ignore,
        }
    }

    /// Counts one more chunk of `len` bytes against the task's and its node's quotas, or
    /// says why it is refused. One lock of the node counts per chunk, and no allocation but
    /// for a node's first chunk: this runs for every chunk the gateway relays.
    fn charge(&self, st: &mut LiveInner, node_id: &str, len: u64) -> Result<(), String> {
        let q = &self.quotas;
        let mib = |b: u64| b >> 20;
        if st.bytes + len > q.task_bytes {
            return Err(format!(
                "output quota exceeded: the task wrote more than {} MiB",
                mib(q.task_bytes)
            ));
        }
        if st.chunks + 1 > q.task_chunks {
            return Err(format!(
                "output quota exceeded: the task sent more than {} chunks",
                q.task_chunks
            ));
        }
        if self.free_disk.load(Ordering::Relaxed) < q.min_free_disk_bytes {
            return Err(format!(
                "output refused: the gateway's disk has less than {} MiB free",
                mib(q.min_free_disk_bytes)
            ));
        }
        let mut nodes = self.node_bytes();
        let node = match nodes.get_mut(node_id) {
            Some(n) => n,
            None => nodes.entry(node_id.to_string()).or_default(),
        };
        if *node + len > q.node_bytes {
            return Err(format!(
                "output quota exceeded: the node's running tasks wrote more than {} MiB",
                mib(q.node_bytes)
            ));
        }
        *node += len;
        st.bytes += len;
        st.chunks += 1;
        Ok(())
    }

    fn node_bytes(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.node_bytes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a task over a quota as an error and tells its node to stop it; its later frames
    /// are acknowledged and dropped.
    async fn refuse(&self, store: &Store, live: &Arc<LiveTask>, why: String) -> Option<Frame> {
        tracing::warn!(task = %live.id, reason = %why, "refusing task output");
        let fin = TaskFinish::now(TaskOutcome::failed(why));
        if let Err(e) = self.end_without_node(store, &live.id, fin).await {
            tracing::error!(error = format!("{e:#}"), "ending a task over its quota");
        }
        live.lock().stop_requested = true;
        Some(Frame::TaskStop {
            task_id: live.id.to_string(),
        })
    }

    /// A task ended: its output no longer counts toward its node's quota.
    fn release(&self, live: &LiveTask) {
        let bytes = std::mem::take(&mut live.lock().bytes);
        let mut nodes = self.node_bytes();
        if let Some(n) = nodes.get_mut(&live.node_id) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                nodes.remove(&live.node_id);
            }
        }
    }

    /// What the gateway reads from a chunk as it passes: approval requests (an event for the
    /// board) and token usage (stored with the task). Returns the chunk's text.
    fn chunk_seen(
        &self,
        task_id: &str,
        raw: &serde_json::value::RawValue,
    ) -> (Arc<str>, Option<AgentReport>) {
        let text = raw.get();
        // Most chunks are text and tool output: parsed only when they may be one of the two
        // kinds the gateway reads.
        if !text.contains("tool-approval-request") && !text.contains("message-metadata") {
            return (text.into(), None);
        }
        let chunk: Value = serde_json::from_str(text).unwrap_or_default();
        if chunk["type"] == "tool-approval-request" {
            let field = |k: &str| chunk[k].as_str().unwrap_or_default().to_string();
            self.events.publish(Event::TaskApproval {
                task_id: task_id.to_string(),
                status: "awaiting approval".into(),
                approval_id: field("approvalId"),
                tool_call_id: field("toolCallId"),
            });
        }
        (text.into(), agent_report(task_id, &chunk))
    }

    /// The node's connection ended: its pending acks go (they are sent again when the node
    /// resends the frames they cover), so the map holds only connected nodes.
    pub fn node_gone(&self, node_id: &str) {
        self.acks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node_id);
    }

    /// Forgets the entries of tasks that ended without their node. They are loaded again
    /// (from SQLite) if that node ever speaks of one of them. Returns how many went.
    pub fn forget_orphans(&self) -> usize {
        let mut map = self.live_map();
        let before = map.len();
        map.retain(|_, l| !l.lock().orphan);
        before - map.len()
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
        let state = fin.outcome.state();
        let changed = store.finish_task(task_id.to_string(), fin).await?;
        if changed {
            let live = self.live_map().get(task_id).cloned();
            if let Some(live) = live {
                self.release(&live);
                let mut st = live.lock();
                st.orphan = true;
                st.ended = true;
                let _ = st.tx.send(Live::End);
            }
            self.events.publish(Event::TaskState {
                task_id: task_id.to_string(),
                state,
            });
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
        self.release(live);
        {
            let mut st = live.lock();
            st.ended = true;
            let _ = st.tx.send(Live::End);
        }
        self.live_map().remove(&*live.id);
        self.events.publish(Event::TaskState {
            task_id: live.id.to_string(),
            state,
        });
    }
}

/// `s` cut to at most `max` bytes on a character boundary, saying so.
fn cut_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}… [cut: {} bytes]", crate::text::head(s, max), s.len())
}

/// Keeps `free` at the free bytes of the disk holding `dir`, checked every second.
async fn watch_free_disk(dir: std::path::PathBuf, free: Arc<AtomicU64>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while crate::clock::next_tick(&mut tick, &stop).await {
        let d = dir.clone();
        let stat = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&d)).await;
        if let Ok(Ok(st)) = stat {
            let bytes = st.blocks_available() * st.fragment_size();
            free.store(bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(m: Value) -> Value {
        json!({"type": "message-metadata", "messageMetadata": m})
    }

    /// What a node reports is clamped and checked: it cannot overflow sums, subtract cost or
    /// hand a thread a session id that is not one.
    #[test]
    fn agent_reports_are_clamped_and_checked() {
        let r = agent_report(
            "t",
            &meta(
                json!({"usage": {"inputTokens": u64::MAX, "outputTokens": -5},
                         "costUsd": -1.0, "agentSession": "ses_1 --rm"}),
            ),
        )
        .unwrap();
        assert_eq!(
            (r.input_tokens, r.output_tokens, r.cost_usd),
            (MAX_REPORTED_TOKENS, 0, 0.0)
        );
        assert_eq!(r.session, None);
        let r = agent_report(
            "t",
            &meta(json!({"costUsd": 1e300, "agentSession": "ses_abc"})),
        )
        .unwrap();
        assert_eq!(r.cost_usd, MAX_REPORTED_COST_USD);
        assert_eq!(r.session.as_deref(), Some("ses_abc"));
        // Nothing to report, or not a metadata chunk: no write.
        assert!(agent_report("t", &meta(json!({"other": 1}))).is_none());
        assert!(agent_report("t", &json!({"type": "text-delta", "costUsd": 5})).is_none());
    }
}
