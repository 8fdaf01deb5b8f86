//! Ingest: a node's reliable task frames, ordered by (task, seq) under the task's lock,
//! counted against the output quotas, fanned out to watchers and queued for the writer; and
//! what the gateway reads from a chunk on its way (approval requests, usage reports).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::{Live, LiveInner, LiveTask, TaskHub, WriteOp};
use crate::clock::now_ms;
use crate::protocol::events::Event;
use crate::protocol::{ErrorCode, Frame, TaskOutcome};
use crate::store::{AgentReport, Store, TaskFinish};

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
    /// End the task over a quota with this reason and tell the node to stop it.
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
            let (text, seen) = self.chunk_seen(task_id, &chunk);
            if let Err(why) = self.charge(live, st, text.len() as u64) {
                refused = Some(why);
                break;
            }
            st.last_seq = s;
            self.metrics.chunk(text.len());
            st.pending.push_back((seq, text.clone()));
            let _ = st.tx.send(Live::Chunk(seq, text.clone()));
            approval |= seen.approval;
            rows.push((seq, text, seen.usage));
        }
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

    /// Ends a task over a quota as an error and tells its node to stop it; its later frames
    /// are acknowledged and dropped. The ending runs on its own task: a connection dropped
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
                tracing::error!(error = format!("{e:#}"), "ending a task over its quota");
            }
        });
        let _ = end.await;
        live.lock().stop_requested = true;
        Some(Frame::TaskStop {
            task_id: live.id.to_string(),
        })
    }

    /// What the gateway reads from a chunk as it passes: approval requests (an event for the
    /// board) and token usage (stored with the task). Returns the chunk's text.
    fn chunk_seen(&self, task_id: &str, raw: &serde_json::value::RawValue) -> (Arc<str>, Seen) {
        let text = raw.get();
        // Most chunks are text and tool output: parsed only when they may be one of the two
        // kinds the gateway reads.
        if !text.contains("tool-approval-request") && !text.contains("message-metadata") {
            return (text.into(), Seen::default());
        }
        let chunk: Value = serde_json::from_str(text).unwrap_or_default();
        let approval = chunk["type"] == "tool-approval-request";
        if approval {
            let field = |k: &str| chunk[k].as_str().unwrap_or_default().to_string();
            self.events.publish(Event::TaskApproval {
                task_id: task_id.to_string(),
                status: "awaiting approval".into(),
                approval_id: field("approvalId"),
                tool_call_id: field("toolCallId"),
            });
        }
        let usage = agent_report(task_id, &chunk);
        (text.into(), Seen { usage, approval })
    }
}

/// What [`TaskHub::chunk_seen`] read from a chunk.
#[derive(Default)]
struct Seen {
    usage: Option<AgentReport>,
    /// It asks for an approval.
    approval: bool,
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
mod tests {
    use super::*;
    use crate::gateway::tasks::{Quotas, WRITER_QUEUE};
    use crate::protocol::ExecutorKind;
    use crate::store::NewTask;
    use futures_util::FutureExt;
    use serde_json::json;
    use std::time::Duration;

    /// A hub with its writer on a fresh store in a temporary directory.
    struct Harness {
        dir: std::path::PathBuf,
        store: Store,
        hub: Arc<TaskHub>,
        stop: tokio_util::sync::CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    }

    impl Harness {
        fn start(quotas: Quotas) -> Harness {
            let dir =
                std::env::temp_dir().join(format!("viber-ingest-{}", crate::crypto::random_u64()));
            std::fs::create_dir_all(&dir).unwrap();
            let store = Store::open(&dir.join("viber.db")).unwrap();
            let (stop, tracker) = (
                tokio_util::sync::CancellationToken::new(),
                tokio_util::task::TaskTracker::new(),
            );
            let hub = TaskHub::start(
                store.clone(),
                Default::default(),
                quotas,
                dir.clone(),
                Default::default(),
                stop.clone(),
                &tracker,
            );
            Harness {
                dir,
                store,
                hub,
                stop,
                tracker,
            }
        }

        /// A pending task of node `n1`.
        async fn task(&self, id: &str) {
            let t = NewTask {
                id: id.into(),
                node_id: "n1".into(),
                goal: "echo".into(),
                executor: ExecutorKind::Shell,
                options: "{}".into(),
                created_at: now_ms(),
                environment_id: None,
                thread_id: None,
                binding_id: None,
            };
            self.store.insert_task(t).await.unwrap();
        }

        async fn ingest(&self, frame: Frame) -> Option<Frame> {
            self.hub.ingest(&self.store, "n1", frame).await
        }

        async fn stop(self) {
            self.stop.cancel();
            self.tracker.close();
            self.tracker.wait().await;
            std::fs::remove_dir_all(self.dir).unwrap();
        }
    }

    fn completed(task: &str, seq: u64) -> Frame {
        Frame::TaskCompleted {
            task_id: task.into(),
            seq,
            exit_code: Some(0),
            result: None,
        }
    }

    /// The node's quota counts the output of all its running tasks together; a task that
    /// ends gives its share back.
    #[tokio::test]
    async fn a_nodes_quota_counts_its_running_tasks_together() {
        let h = Harness::start(Quotas {
            node_bytes: 1000,
            ..Quotas::default()
        });
        // 300 bytes of chunk JSON each.
        let delta = json!({"type": "text-delta", "delta": "x".repeat(268)});
        assert_eq!(delta.to_string().len(), 300);
        let chunk = |task: &str, seq| Frame::chunk(task, seq, &delta);
        for id in ["t1", "t2", "t3"] {
            h.task(id).await;
        }
        for f in [chunk("t1", 0), chunk("t1", 1), chunk("t2", 0)] {
            assert!(h.ingest(f).await.is_none());
        }
        // 1,200 bytes: t2 is stopped, t1 goes on.
        let stop = h.ingest(chunk("t2", 1)).await;
        assert!(matches!(stop, Some(Frame::TaskStop { task_id }) if task_id == "t2"));
        assert!(h.ingest(completed("t1", 2)).await.is_none());
        // Once t1's end is stored, its 600 bytes are given back (and t2's 300 were when it
        // was refused): t3 may write 900. A task's live entry takes no new watchers once it
        // has ended and given its share back.
        let ended = async {
            while h.hub.subscribe("t1").is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("t1 ends");
        for seq in 0..3 {
            assert!(h.ingest(chunk("t3", seq)).await.is_none(), "chunk {seq}");
        }
        let stop = h.ingest(chunk("t3", 3)).await;
        assert!(matches!(stop, Some(Frame::TaskStop { .. })), "{stop:?}");
        h.stop().await;
    }

    /// A connection dropped while its task is being ended over a quota (its node replaced
    /// it) still ends the task here: no new watchers, and its output given back to the
    /// node's quota.
    #[tokio::test]
    async fn a_refusal_completes_when_its_connection_is_dropped() {
        let h = Harness::start(Quotas {
            node_bytes: 500,
            ..Quotas::default()
        });
        h.task("t1").await;
        let delta = json!({"type": "text-delta", "delta": "x".repeat(268)});
        assert!(h.ingest(Frame::chunk("t1", 0, &delta)).await.is_none());
        let live = h.hub.live(&h.store, "t1").await.unwrap().expect("live");
        // Polled once: it orders the chunk, finds the quota crossed and waits on the store
        // to end the task; then the connection is gone.
        let refused = h.ingest(Frame::chunk("t1", 1, &delta)).now_or_never();
        assert!(
            refused.is_none(),
            "dropped while it ends the task: {refused:?}"
        );
        let released = async {
            while h.hub.subscribe("t1").is_some() || live.node_output.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), released)
            .await
            .expect("the task ends and gives its output back");
        let task = h.store.task("t1".into()).await.unwrap().unwrap();
        assert!(task.error.unwrap_or_default().contains("output quota"));
        h.stop().await;
    }

    /// A node connection that goes away while it waits for room in a full writer queue (its
    /// ingest is dropped) leaves the task as it was: the chunk it carried is taken when the
    /// node sends it again, and stored. Had it been ordered first, the resend would have
    /// been dropped as a repeat and the chunk never stored.
    #[tokio::test]
    async fn an_ingest_dropped_while_it_waits_for_room_changes_nothing() {
        let h = Harness::start(Quotas::default());
        h.task("t1").await;
        let hub = &h.hub;
        let chunk = |seq| Frame::chunk("t1", seq, &json!({"type": "text-delta", "delta": seq}));
        let started = Frame::TaskStarted {
            task_id: "t1".into(),
            seq: 0,
        };
        assert!(h.ingest(started).await.is_none());
        // The queue is full (a disk that cannot keep up): the connection waits, then is gone.
        let full = hub.room.acquire_many(WRITER_QUEUE as u32).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(100), h.ingest(chunk(1))).await;
        assert!(waited.is_err(), "the ingest waits for room");
        drop(full);
        // The node reconnects and sends what was not acknowledged, then the rest.
        for frame in [chunk(1), chunk(2), completed("t1", 3)] {
            assert!(h.ingest(frame).await.is_none());
        }
        assert_eq!(stored_when_ended(&h, "t1").await, [1, 2]);
        h.stop().await;
    }

    /// The stored chunks' seqs of a task once its end is stored.
    async fn stored_when_ended(h: &Harness, task: &str) -> Vec<u64> {
        let ended = async {
            while !h
                .store
                .task(task.into())
                .await
                .unwrap()
                .unwrap()
                .state
                .is_terminal()
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ended)
            .await
            .expect("the task ends");
        h.store
            .chunks_after(task.into(), -1, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect()
    }

    /// A node sends nothing after a task's final frame; what one sends anyway, before or
    /// after that end is stored, is not stored and not shown to watchers.
    #[tokio::test]
    async fn nothing_after_a_tasks_final_frame_is_taken() {
        let h = Harness::start(Quotas::default());
        h.task("t1").await;
        let chunk = |seq| Frame::chunk("t1", seq, &json!({"type": "text-delta", "delta": seq}));
        let started = Frame::TaskStarted {
            task_id: "t1".into(),
            seq: 0,
        };
        assert!(h.ingest(started).await.is_none());
        let mut watcher = h.hub.subscribe("t1").expect("live").rx;
        assert!(h.ingest(chunk(1)).await.is_none());
        // The end is queued, most likely not yet stored, when the stray frames come; once
        // it is stored they are answered with a stop (the task is over).
        let batch = Frame::TaskStreamChunks {
            task_id: "t1".into(),
            seq: 5,
            chunks: vec![serde_json::value::to_raw_value(&json!({"type": "x"})).unwrap()],
        };
        assert!(h.ingest(completed("t1", 2)).await.is_none());
        for frame in [chunk(3), completed("t1", 4), batch] {
            h.ingest(frame).await;
        }
        assert_eq!(stored_when_ended(&h, "t1").await, [1]);
        let mut seen = Vec::new();
        while let Ok(event) = watcher.try_recv() {
            seen.push(match event {
                Live::Chunk(seq, _) => seq as i64,
                Live::End => -1,
            });
        }
        assert_eq!(seen, [1, -1]);
        assert_eq!(
            h.store.task("t1".into()).await.unwrap().unwrap().last_seq,
            2
        );
        h.stop().await;
    }

    /// An approval request is written at once, like a task's start or end, rather than
    /// gathered with more output for up to 24 ms: a gateway that restarts knows of a request
    /// only once it is stored.
    #[tokio::test]
    async fn an_approval_request_is_an_urgent_write() {
        let h = Harness::start(Quotas::default());
        h.task("t1").await;
        let live = h.hub.live(&h.store, "t1").await.unwrap().expect("live");
        let urgent = |seq, chunk: Value| {
            let raw = serde_json::value::to_raw_value(&chunk).unwrap();
            let mut st = live.lock();
            match h.hub.sequence_chunks(&live, &mut st, "n1", seq, [raw]) {
                Sequenced::Write(op) => op.urgent(),
                _ => panic!("chunk {seq} not taken"),
            }
        };
        assert!(!urgent(
            0,
            json!({"type": "text-delta", "delta": "tool-approval-request"})
        ));
        assert!(urgent(
            1,
            json!({"type": "tool-approval-request", "approvalId": "a1", "toolCallId": "c1"})
        ));
        h.stop().await;
    }

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
