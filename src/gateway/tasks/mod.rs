//! The task hub: everything between a node's task frames and the watchers of a task.
//!
//! - **Ingest** (`ingest.rs`): reliable frames from the owning node are deduplicated by
//!   (task, seq), fanned out to live watchers at once, and queued for the writer. A full writer
//!   queue makes the node's connection wait (TCP backpressure), so memory stays bounded.
//! - **Writer** (`writer.rs`): one task drains the queue in batches, writes each batch in one SQLite
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

use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::events::Events;
use crate::protocol::events::Event;
use crate::protocol::{Frame, TaskState};
use crate::store::{AgentReport, Store, TaskFinish, TaskRecord};

mod dispatch;
mod ingest;
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
/// After the first op of a batch, how long the writer gathers more before it looks at what
/// it has: under a flood a batch is large by then and is committed at once.
const WRITER_LINGER: Duration = Duration::from_millis(3);
/// A batch with fewer rows than this after [`WRITER_LINGER`] (output trickling in) gathers
/// until [`WRITER_LINGER_MAX`]: a commit costs nearly the same for a few rows as for
/// hundreds, and nothing a watcher sees waits on it.
const WRITER_ENOUGH_ROWS: usize = 512;
const WRITER_LINGER_MAX: Duration = Duration::from_millis(24);
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
    /// Output bytes of its node's live tasks, shared with their entries (see
    /// [`TaskHub::node_output`]).
    node_output: Arc<AtomicU64>,
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
    /// The node's final frame is ordered. A node sends nothing after it; what one sends
    /// anyway is dropped, not stored, counted or shown to watchers.
    final_ordered: bool,
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

impl WriteOp {
    /// Rows it writes, as counted against [`WRITER_QUEUE`].
    fn rows(&self) -> usize {
        match self {
            WriteOp::Chunks { rows, .. } => rows.len(),
            WriteOp::Started(..) | WriteOp::Finished(..) => 1,
        }
    }

    /// To be stored at once rather than gathered with more: it starts or ends a task (acks
    /// and state changes wait for the commit), or asks for an approval (a gateway that
    /// restarts knows of a request only once it is stored, or when its node sends it again).
    fn urgent(&self) -> bool {
        match self {
            WriteOp::Chunks { approval, .. } => *approval,
            WriteOp::Started(..) | WriteOp::Finished(..) => true,
        }
    }
}

enum WriteOp {
    /// Consecutive chunks of one task (in seq order), each with what it reports for the
    /// task's usage; `approval` when one of them is an approval request.
    Chunks {
        live: Arc<LiveTask>,
        rows: Vec<(u64, Arc<str>, Option<AgentReport>)>,
        approval: bool,
    },
    Started(Arc<LiveTask>, u64, i64),
    Finished(Arc<LiveTask>, u64, TaskFinish),
}

pub struct TaskHub {
    live: Mutex<HashMap<String, Arc<LiveTask>>>,
    acks: Mutex<HashMap<String, Arc<AckBox>>>,
    /// Bounded by `room`, not by the channel: a write is queued under its task's lock,
    /// where nothing may wait.
    writer: mpsc::UnboundedSender<WriteOp>,
    /// Told when an urgent write ([`WriteOp::urgent`]) is queued: the writer commits its
    /// batch then instead of gathering more.
    urgent_queued: Arc<Notify>,
    /// Room in the writer's queue, in rows ([`WRITER_QUEUE`]); the writer gives it back
    /// once the rows are stored.
    room: Arc<Semaphore>,
    events: Events,
    quotas: Quotas,
    /// Output bytes of each node's live tasks: one counter per node, which each live task
    /// of the node holds, so counting a chunk takes no lock shared between tasks.
    node_output: Mutex<HashMap<String, Arc<AtomicU64>>>,
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
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(WRITER_QUEUE));
        let urgent_queued = Arc::new(Notify::new());
        let free_disk = Arc::new(AtomicU64::new(u64::MAX));
        let hub = Arc::new(TaskHub {
            live: Mutex::new(HashMap::new()),
            acks: Mutex::new(HashMap::new()),
            writer: tx,
            urgent_queued: urgent_queued.clone(),
            room: room.clone(),
            events,
            quotas,
            node_output: Mutex::new(HashMap::new()),
            free_disk: free_disk.clone(),
            metrics: metrics.clone(),
        });
        background.spawn(trim_heap_when_quiet(
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
        background.spawn(writer(
            Arc::downgrade(&hub),
            store,
            rx,
            room,
            urgent_queued,
            metrics.clone(),
            shutdown.clone(),
        ));
        background.spawn(watch_free_disk(data_dir, free_disk, shutdown.clone()));
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
                let node_id = rec.node_id.clone().unwrap_or_default();
                let node_output = self
                    .node_outputs()
                    .entry(node_id.clone())
                    .or_default()
                    .clone();
                // What it stored before a restart counts toward its node's quota too (and is
                // given back when it ends, like the rest).
                node_output.fetch_add(output.1, Ordering::Relaxed);
                Arc::new(LiveTask {
                    id: rec.id.as_str().into(),
                    node_id,
                    node_output,
                    inner: Mutex::new(LiveInner {
                        last_seq: rec.last_seq,
                        committed: rec.last_seq,
                        pending: VecDeque::new(),
                        tx: broadcast::channel(LIVE_BUFFER).0,
                        ended: false,
                        final_ordered: false,
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

    /// The newest `last` chunks of a live task that are accepted but not stored yet and
    /// that `keep` accepts, as (seq, chunk), in order. Read them before reading the stored
    /// ones: a commit in between moves chunks from here into SQLite, where the later read
    /// finds them (the caller drops repeats by seq).
    pub fn unstored(
        &self,
        task_id: &str,
        last: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(u64, Arc<str>)> {
        let Some(live) = self.live_map().get(task_id).cloned() else {
            return Vec::new();
        };
        let st = live.lock();
        let mut out: Vec<_> = st
            .pending
            .iter()
            .rev()
            .filter(|(_, chunk)| keep(chunk))
            .take(last)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// A task ended: its output no longer counts toward its node's quota. The node's counter
    /// goes once no live task of the node holds it and it is back to zero.
    fn release(&self, live: &LiveTask) {
        let bytes = std::mem::take(&mut live.lock().bytes);
        let counter = &live.node_output;
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(bytes))
        });
        // Counters are handed out under this lock, so none is being taken meanwhile.
        let mut nodes = self.node_outputs();
        let unused = Arc::strong_count(counter) <= 2 && counter.load(Ordering::Relaxed) == 0;
        if unused
            && nodes
                .get(&live.node_id)
                .is_some_and(|c| Arc::ptr_eq(c, counter))
        {
            nodes.remove(&live.node_id);
        }
    }

    fn node_outputs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AtomicU64>>> {
        self.node_output.lock().unwrap_or_else(|p| p.into_inner())
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
                // Marked before its output is given back: ingest counts nothing against
                // an orphan, so no chunk is charged after the release and never returned.
                {
                    let mut st = live.lock();
                    st.orphan = true;
                    st.ended = true;
                    let _ = st.tx.send(Live::End);
                }
                self.release(&live);
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

/// How often [`trim_heap_when_quiet`] looks.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Gives the heap's free pages back to the system once the gateway is quiet: at the first
/// look ([`TRIM_EVERY`] apart) with no task output since the one before, once after start-up
/// and once after each burst. Memory a flood with many watchers freed does not stay resident
/// in an idle gateway; a busy one's allocator is left alone, and an idle one (ten thousand
/// nodes' heartbeats, say) does not walk its heap again and again. At every quiet look the
/// read connections that concurrent reads opened are closed, but one (replays of stored
/// output count as no output here), and their page caches are trimmed with the heap.
async fn trim_heap_when_quiet(
    store: Store,
    metrics: crate::gateway::metrics::Metrics,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TRIM_EVERY, TRIM_EVERY);
    let mut seen = metrics.chunks();
    let mut trimmed_at = None;
    while crate::clock::next_tick(&mut tick, &stop).await {
        let now = metrics.chunks();
        if now == seen {
            let closed = store.close_spare_readers().await;
            if closed > 0 || trimmed_at != Some(now) {
                // Walking a large heap's free lists takes a moment: not on a worker.
                let _ = tokio::task::spawn_blocking(crate::os::trim_heap).await;
                trimmed_at = Some(now);
            }
        }
        seen = now;
    }
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
