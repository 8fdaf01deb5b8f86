//! The task hub's writer: drains queued writes in batches, one SQLite transaction each,
//! then acknowledges the highest stored seq per task to its node and publishes state changes.
//!
//! A batch that fails to commit (a full disk, an I/O error) is kept and tried again with
//! backoff: its frames were accepted and shown to watchers, and the nodes will not send them
//! again once a later batch acknowledges past them, so dropping it would lose them. While it
//! retries nothing drains the queue, so `ingest` waits and the nodes' sockets are not read
//! (backpressure) until the store can write again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    LiveTask, TaskHub, WriteOp, WRITER_BATCH, WRITER_ENOUGH_ROWS, WRITER_LINGER, WRITER_LINGER_MAX,
};
use crate::protocol::events::Event;
use crate::protocol::TaskState;
use crate::store::{ChunkBatch, Store};

/// First wait after a failed commit; doubled on each failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One batch, ready to commit, with what to do once it is stored.
#[derive(Default)]
struct Batch {
    rows: ChunkBatch,
    /// Highest seq per task in the batch: acknowledged once it is stored.
    max_seq: HashMap<String, (Arc<LiveTask>, u64)>,
    started: Vec<String>,
    finished: Vec<(Arc<LiveTask>, TaskState)>,
}

/// Drains write ops in batches, one transaction each, then acks and publishes. On shutdown,
/// commits what is queued and returns.
pub(super) async fn writer(
    hub: std::sync::Weak<TaskHub>,
    store: Store,
    mut rx: mpsc::UnboundedReceiver<WriteOp>,
    room: Arc<tokio::sync::Semaphore>,
    urgent_queued: Arc<tokio::sync::Notify>,
    metrics: crate::gateway::metrics::Metrics,
    shutdown: CancellationToken,
) {
    // However the writer ends, ingest waiting for room must not wait for ever: closing the
    // room fails its wait, as a closed queue fails a send.
    let _close = CloseOnDrop(room.clone());
    let mut ops = Vec::with_capacity(WRITER_BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut ops, WRITER_BATCH) => n,
            _ = shutdown.cancelled() => {
                while ops.len() < WRITER_BATCH && rx.try_recv().map(|op| ops.push(op)).is_ok() {}
                ops.len()
            }
        };
        if n == 0 {
            return;
        }
        if !shutdown.is_cancelled() {
            linger(&mut rx, &mut ops, &urgent_queued).await;
        }
        let rows: usize = ops.iter().map(WriteOp::rows).sum();
        let batch = build(ops.drain(..));
        let started = std::time::Instant::now();
        if !commit(&store, Arc::new(batch.rows), &shutdown).await {
            return;
        }
        metrics.batch(rows, started.elapsed().as_secs_f64());
        room.add_permits(rows);
        let Some(hub) = hub.upgrade() else { return };
        publish(&hub, batch.max_seq, batch.started, batch.finished);
    }
}

struct CloseOnDrop(Arc<tokio::sync::Semaphore>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Fewer, larger transactions: gathers for [`WRITER_LINGER`] after the first op, then takes
/// what queued meanwhile. A small batch (output trickling in) then waits once more, to
/// [`WRITER_LINGER_MAX`] after its first op, or until an urgent write ([`WriteOp::urgent`])
/// is queued (`urgent_queued`): acks and state changes wait for the commit, watchers do not.
/// Two timers per batch, and no wakeup per op while it waits (waiting in `recv` would be
/// woken by every send).
async fn linger(
    rx: &mut mpsc::UnboundedReceiver<WriteOp>,
    ops: &mut Vec<WriteOp>,
    urgent_queued: &tokio::sync::Notify,
) {
    if ops.len() >= WRITER_BATCH {
        return;
    }
    let since = tokio::time::Instant::now();
    // Listening from here on. A signal already given is spent first: its urgent write is
    // in `ops` (this batch or an earlier one took it without waiting for the signal) or
    // still queued, where `take_queued` finds it; kept, it would cut the wait of a later
    // batch with nothing urgent in it short.
    let urgent = urgent_queued.notified();
    tokio::pin!(urgent);
    if urgent.as_mut().enable() {
        urgent.set(urgent_queued.notified());
        urgent.as_mut().enable();
    }
    tokio::time::sleep_until(since + WRITER_LINGER).await;
    if take_queued(rx, ops) {
        return;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(since + WRITER_LINGER_MAX) => {}
        _ = urgent => {}
    }
    take_queued(rx, ops);
}

/// Takes what is queued, up to a full batch. Returns whether the batch is to be committed
/// now: it is full, holds [`WRITER_ENOUGH_ROWS`], or holds an urgent write.
fn take_queued(rx: &mut mpsc::UnboundedReceiver<WriteOp>, ops: &mut Vec<WriteOp>) -> bool {
    while ops.len() < WRITER_BATCH {
        match rx.try_recv() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    let rows: usize = ops.iter().map(WriteOp::rows).sum();
    ops.len() >= WRITER_BATCH || rows >= WRITER_ENOUGH_ROWS || ops.iter().any(WriteOp::urgent)
}

fn build(ops: impl Iterator<Item = WriteOp>) -> Batch {
    let mut b = Batch::default();
    for op in ops {
        let (live, seq) = match op {
            WriteOp::Chunks { live, rows, .. } => {
                let Some(last) = rows.last().map(|r| r.0) else {
                    continue;
                };
                for (seq, text, usage) in rows {
                    b.rows.chunks.push((live.id.clone(), seq, text));
                    if let Some(u) = usage {
                        b.rows.usage.push(u);
                    }
                }
                (live, last)
            }
            WriteOp::Started(live, seq, at) => {
                b.rows.started.push((live.id.to_string(), at));
                b.started.push(live.id.to_string());
                (live, seq)
            }
            WriteOp::Finished(live, seq, fin) => {
                b.finished.push((live.clone(), fin.outcome.state()));
                b.rows.finished.push((live.id.to_string(), fin));
                (live, seq)
            }
        };
        match b.max_seq.get_mut(&*live.id) {
            Some(e) => e.1 = e.1.max(seq),
            None => {
                b.max_seq.insert(live.id.to_string(), (live, seq));
            }
        }
    }
    for (task, (_, seq)) in &b.max_seq {
        b.rows.last_seq.push((task.clone(), *seq));
    }
    b
}

/// Commits a batch, trying again with backoff until it is stored. Returns false only when
/// the gateway shuts down first (the nodes keep the unacknowledged frames and send them to
/// the next gateway).
async fn commit(store: &Store, rows: Arc<ChunkBatch>, shutdown: &CancellationToken) -> bool {
    let mut delay = RETRY_FIRST;
    let mut failures: u32 = 0;
    loop {
        match store.apply_chunk_batch(rows.clone()).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::warn!(failures, "task writes resumed; the held batch is stored");
                }
                return true;
            }
            Err(e) => {
                failures += 1;
                // Every failure while the disk stays full would flood the log.
                if failures.is_power_of_two() {
                    tracing::error!(
                        error = format!("{e:#}"),
                        failures,
                        "writing task output failed; holding the batch and reading no more \
                         from nodes until it is stored"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return false,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// After a commit: acks to the nodes, then state events.
fn publish(
    hub: &TaskHub,
    max_seq: HashMap<String, (Arc<LiveTask>, u64)>,
    started: Vec<String>,
    finished: Vec<(Arc<LiveTask>, TaskState)>,
) {
    for (live, seq) in max_seq.values() {
        hub.committed(live, *seq);
        hub.ack_box(&live.node_id).set(&live.id, *seq);
    }
    for id in started {
        hub.events.publish(Event::TaskState {
            task_id: id,
            state: TaskState::Running,
        });
    }
    for (live, state) in finished {
        hub.ended(&live, state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::tasks::{LiveInner, WRITER_LINGER, WRITER_LINGER_MAX};
    use std::sync::atomic::AtomicU64;
    use tokio::sync::{broadcast, Notify};
    use tokio::time::Instant;

    fn live() -> Arc<LiveTask> {
        Arc::new(LiveTask {
            id: "t1".into(),
            node_id: "n1".into(),
            node_output: Arc::new(AtomicU64::new(0)),
            inner: std::sync::Mutex::new(LiveInner {
                last_seq: 0,
                committed: 0,
                pending: Default::default(),
                tx: broadcast::channel(1).0,
                ended: false,
                final_ordered: false,
                orphan: false,
                stop_requested: false,
                bytes: 0,
                chunks: 0,
            }),
        })
    }

    /// How long `linger` holds a batch that starts with `op` (signalled as urgent when
    /// it is, as ingest does).
    async fn held(
        tx: &mpsc::UnboundedSender<WriteOp>,
        rx: &mut mpsc::UnboundedReceiver<WriteOp>,
        urgent: &Notify,
        op: WriteOp,
    ) -> std::time::Duration {
        let signal = op.urgent();
        tx.send(op).unwrap();
        if signal {
            urgent.notify_one();
        }
        let mut ops = Vec::new();
        rx.recv_many(&mut ops, WRITER_BATCH).await;
        let started = Instant::now();
        linger(rx, &mut ops, urgent).await;
        started.elapsed()
    }

    /// A task's start is committed after the short linger; the trickle after it gathers
    /// for the full wait: the start's signal, spent, does not cut that wait short.
    #[tokio::test(start_paused = true)]
    async fn an_urgent_writes_signal_is_spent_by_its_batch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let urgent = Notify::new();
        let live = live();
        let start = WriteOp::Started(live.clone(), 0, 0);
        assert_eq!(held(&tx, &mut rx, &urgent, start).await, WRITER_LINGER);
        let trickle = |seq| WriteOp::Chunks {
            live: live.clone(),
            rows: vec![(seq, "{}".into(), None)],
            approval: false,
        };
        assert_eq!(
            held(&tx, &mut rx, &urgent, trickle(1)).await,
            WRITER_LINGER_MAX
        );
        // An approval request queued while a trickle waits ends the wait.
        let approval = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let rows = vec![(3, "{}".into(), None)];
            let op = WriteOp::Chunks {
                live: live.clone(),
                rows,
                approval: true,
            };
            tx.send(op).unwrap();
            urgent.notify_one();
        };
        let (waited, ()) = tokio::join!(held(&tx, &mut rx, &urgent, trickle(2)), approval);
        assert_eq!(waited, Duration::from_millis(10));
    }
}
