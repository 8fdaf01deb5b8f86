//! The task hub's writer: drains queued writes in batches, one SQLite transaction each,
//! then acknowledges the highest stored seq per task to its node and publishes state changes.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::{LiveTask, TaskHub, WriteOp, WRITER_BATCH, WRITER_LINGER};
use crate::protocol::events::Event;
use crate::protocol::TaskState;
use crate::store::{ChunkBatch, Store};

/// Drains write ops in batches, one transaction each, then acks and publishes.
pub(super) async fn writer(
    hub: std::sync::Weak<TaskHub>,
    store: Store,
    mut rx: mpsc::Receiver<WriteOp>,
) {
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
                    if let Some(u) = usage {
                        batch
                            .usage
                            .push((live.id.clone(), u.input, u.output, u.model));
                    }
                    (live, seq)
                }
                WriteOp::Started(live, seq, at) => {
                    batch.started.push((live.id.clone(), at));
                    started.push(live.id.clone());
                    (live, seq)
                }
                WriteOp::Finished(live, seq, fin) => {
                    finished.push((live.clone(), fin.outcome.state()));
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
            hub.events.publish(Event::TaskState {
                task_id: id,
                state: TaskState::Running,
            });
        }
        for (live, state) in finished {
            hub.ended(&live, state);
        }
    }
}
