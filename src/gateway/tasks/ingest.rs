//! Ingest: a node's reliable task frames, ordered by (task, seq) under the task's lock,
//! counted against the output quotas, fanned out to watchers and queued for the writer; and
//! what the gateway reads from a chunk on its way (approval requests, usage reports).

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::{Live, LiveInner, LiveTask, TaskHub, WriteOp};
use crate::clock::now_ms;
use crate::protocol::events::Event;
use crate::protocol::{ErrorCode, Frame, TaskOutcome};
use crate::store::{chunk_type, AgentReport, Store, TaskFinish};

/// Most bytes of a node's error or result text kept with a task.
const MAX_OUTCOME_TEXT: usize = 16 * 1024;

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

/// What is left to do once a frame is ordered and its write queued.
enum Then {
    Nothing,
    Answer(Box<Frame>),
    /// End the task whose output is refused (over a quota, or a chunk the gateway cannot
    /// read) with this reason and tell the node to stop it.
    Refuse(String),
}

impl TaskHub {
    /// Handles a reliable task frame from `node_id`. Returns a frame to answer with.
    pub async fn ingest(
        self: &Arc<Self>,
        store: &Store,
        node_id: &str,
        frame: Frame,
    ) -> Option<Frame> {
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
        // Room for every row the frame may write is taken before it is ordered, so ordering
        // and queueing happen under the task's lock with no wait between them: the writer
        // gets each task's writes in seq order even when two connections of its node race
        // (an old one and the one replacing it), and an ingest dropped while it waits for
        // room has changed nothing. A full queue makes the node's connection wait here (TCP
        // backpressure, bounded memory).
        let most = match &frame {
            Frame::TaskStreamChunks { chunks, .. } => chunks.len(),
            _ => 1,
        };
        match self.room.acquire_many(most as u32).await {
            Ok(permit) => permit.forget(),
            // The writer has stopped: the gateway is shutting down.
            Err(_) => return None,
        }
        match self.sequence(&live, node_id, seq, frame, most) {
            Then::Nothing => None,
            Then::Answer(reply) => Some(*reply),
            Then::Refuse(why) => self.refuse(store, &live, why).await,
        }
    }

    /// Orders one frame under the task's lock and queues its write before letting the lock
    /// go. `room` rows of the writer's queue are held for it; what the write does not use
    /// is given back.
    fn sequence(
        &self,
        live: &Arc<LiveTask>,
        node_id: &str,
        seq: u64,
        frame: Frame,
        room: usize,
    ) -> Then {
        let mut st = live.lock();
        let (op, then) = match self.order(live, &mut st, node_id, seq, frame) {
            Sequenced::Write(op) => (Some(op), Then::Nothing),
            Sequenced::Refuse(why, op) => (op, Then::Refuse(why)),
            Sequenced::Answer(reply) => (None, Then::Answer(reply)),
            Sequenced::Ignore => (None, Then::Nothing),
        };
        let used = op.as_ref().map_or(0, WriteOp::rows);
        let urgent = op.as_ref().is_some_and(WriteOp::urgent);
        if let Some(op) = op {
            if self.writer.send(op).is_err() {
                tracing::error!("task writer stopped");
            }
        }
        drop(st);
        if used < room {
            self.room.add_permits(room - used);
        }
        if urgent {
            self.urgent_queued.notify_one();
        }
        then
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

    /// Orders one reliable frame under the task's lock, held as `st`: drops resends and
    /// gaps, fans chunks out to watchers, and returns the write to queue (or what to answer
    /// instead).
    fn order(
        &self,
        live: &Arc<LiveTask>,
        st: &mut LiveInner,
        node_id: &str,
        seq: u64,
        frame: Frame,
    ) -> Sequenced {
        let task_id = &live.id;
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
                return self.sequence_chunks(live, st, node_id, seq, [chunk]);
            }
            Frame::TaskStreamChunks { chunks, .. } => {
                return self.sequence_chunks(live, st, node_id, seq, chunks);
            }
            frame => frame,
        };
        let s = seq as i64;
        if s <= st.last_seq {
            self.resent(st, node_id, task_id);
            return Sequenced::Ignore;
        }
        if st.final_ordered {
            after_final(task_id, seq);
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
            Some(outcome) => {
                st.final_ordered = true;
                Sequenced::Write(WriteOp::Finished(
                    live.clone(),
                    seq,
                    TaskFinish::now(outcome.map_text(|t| cut_text(t, MAX_OUTCOME_TEXT))),
                ))
            }
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
        let mut approval = false;
        let mut bytes = 0;
        for (seq, chunk) in (first..).zip(chunks) {
            let s = seq as i64;
            if s <= st.last_seq {
                continue;
            }
            if st.final_ordered {
                after_final(task_id, seq);
                break;
            }
            if s != st.last_seq + 1 {
                tracing::warn!(task = %task_id, seq, expected = st.last_seq + 1, "sequence gap; waiting for a resend");
                break;
            }
            let seen = match chunk_seen(task_id, &chunk) {
                Ok(seen) => seen,
                Err(why) => {
                    refused = Some(format!("chunk {seq} refused: {why}"));
                    break;
                }
            };
            if let Err(why) = self.charge(live, st, seen.text.len() as u64) {
                refused = Some(why);
                break;
            }
            st.last_seq = s;
            let text = seen.text;
            bytes += text.len();
            st.pending.push_back((seq, text.clone()));
            let _ = st.tx.send(Live::Chunk(seq, text.clone()));
            if let Some((approval_id, tool_call_id)) = seen.approval {
                approval = true;
                self.events.publish(Event::TaskApproval {
                    task_id: task_id.to_string(),
                    status: "awaiting approval".into(),
                    approval_id,
                    tool_call_id,
                });
            }
            rows.push((seq, text, seen.usage));
        }
        // Counted once a frame: the counters are shared by every task on every core.
        self.metrics.chunks_relayed(rows.len(), bytes);
        if (first as i64) <= st.last_seq && rows.first().is_none_or(|r| r.0 != first) {
            self.resent(st, node_id, task_id);
        }
        let op = (!rows.is_empty()).then(|| WriteOp::Chunks {
            live: live.clone(),
            rows,
            approval,
        });
        match (refused, op) {
            (Some(why), op) => Sequenced::Refuse(why, op),
            (None, Some(op)) => Sequenced::Write(op),
            (None, None) => Sequenced::Ignore,
        }
    }

    /// Counts one more chunk of `len` bytes against the task's and its node's quotas, or
    /// says why it is refused. No lock but the task's (held as `st`) and no allocation:
    /// this runs for every chunk the gateway relays.
    fn charge(&self, live: &LiveTask, st: &mut LiveInner, len: u64) -> Result<(), String> {
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
        // Added only if it fits, in one step: never past the limit, and a chunk that fits is
        // not refused for another's that does not.
        let fits = |n: u64| n.checked_add(len).filter(|&t| t <= q.node_bytes);
        let node = &live.node_output;
        if node
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, fits)
            .is_err()
        {
            return Err(format!(
                "output quota exceeded: the node's running tasks wrote more than {} MiB",
                mib(q.node_bytes)
            ));
        }
        st.bytes += len;
        st.chunks += 1;
        Ok(())
    }

    /// Ends a task whose output is refused as an error and tells its node to stop it; its
    /// later frames are acknowledged and dropped. The ending runs on its own task: a connection dropped
    /// meanwhile (its node replaced it, the gateway stops) must not leave the task stored as
    /// ended but live here, its output still counted against its node.
    async fn refuse(
        self: &Arc<Self>,
        store: &Store,
        live: &Arc<LiveTask>,
        why: String,
    ) -> Option<Frame> {
        tracing::warn!(task = %live.id, reason = %why, "refusing task output");
        let (hub, store, task) = (self.clone(), store.clone(), live.id.clone());
        let end = tokio::spawn(async move {
            let fin = TaskFinish::now(TaskOutcome::failed(why));
            if let Err(e) = hub.end_without_node(&store, &task, fin).await {
                tracing::error!(
                    error = format!("{e:#}"),
                    "ending a task whose output was refused"
                );
            }
        });
        let _ = end.await;
        live.lock().stop_requested = true;
        Some(Frame::TaskStop {
            task_id: live.id.to_string(),
        })
    }
}

/// What the gateway reads from a chunk as it passes: approval requests (an event for the
/// board) and token usage (stored with the task), and the chunk's text: as the node wrote it,
/// or written again when its `type` was spelled with JSON escapes. Refused (a reason) when
/// such a chunk is not valid JSON after all.
fn chunk_seen(task_id: &str, raw: &serde_json::value::RawValue) -> Result<Seen, String> {
    let text = raw.get();
    // Readers here and in the store find a chunk's kind by its `type` in the text before they
    // parse it; one spelled with escapes (`tool-approval\u002drequest`) would pass them all.
    // Only the type is read (no allocation unless it has an escape), and only when the chunk
    // holds a `\u` at all: escapes elsewhere, as a terminal's colours, are kept as written.
    let plain = if text.contains("\\u") && matches!(chunk_type(text), Some(Cow::Owned(_))) {
        // A frame's chunk is checked loosely (an escape's hex, a number's range): written
        // again, it must parse, or a browser would read a type the gateway does not.
        let chunk: Value = serde_json::from_str(text).map_err(|e| {
            format!("its type is spelled with escapes and it is not valid JSON ({e})")
        })?;
        Some(chunk.to_string())
    } else {
        None
    };
    let text = plain.as_deref().unwrap_or(text);
    // Most chunks are text and tool output: parsed only when they may be one of the two kinds
    // the gateway reads.
    if !text.contains("tool-approval-request") && !text.contains("message-metadata") {
        return Ok(Seen::new(text));
    }
    let chunk: Value = serde_json::from_str(text).unwrap_or_default();
    let approval = (chunk["type"] == "tool-approval-request").then(|| {
        let field = |k: &str| chunk[k].as_str().unwrap_or_default().to_string();
        (field("approvalId"), field("toolCallId"))
    });
    Ok(Seen {
        usage: agent_report(task_id, &chunk),
        approval,
        ..Seen::new(text)
    })
}

/// What [`chunk_seen`] read from a chunk.
struct Seen {
    text: Arc<str>,
    usage: Option<AgentReport>,
    /// It asks for an approval: its approval id and tool call id.
    approval: Option<(String, String)>,
}

impl Seen {
    fn new(text: &str) -> Seen {
        Seen {
            text: text.into(),
            usage: None,
            approval: None,
        }
    }
}

/// A frame after the task's final one: dropped.
fn after_final(task_id: &str, seq: u64) {
    tracing::warn!(task = %task_id, seq, "frame after the task's final frame; dropped");
}

/// `s` cut to at most `max` bytes on a character boundary, saying so.
fn cut_text(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}… [cut: {} bytes]", crate::text::head(s, max), s.len())
}

#[cfg(test)]
mod tests;
