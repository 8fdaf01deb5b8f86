//! Ingest's unit tests: a hub with its writer on a fresh store, driven frame by frame.

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

    /// Stops the writer; the directory goes when the harness is dropped.
    async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Also when a test fails before `stop`: no directory left behind in the temp dir.
impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
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
    // The watcher's end comes just after the commit that stores it: wait for it.
    let mut seen = Vec::new();
    let watched = async {
        while let Ok(event) = watcher.recv().await {
            match event {
                Live::Chunk(seq, _) => seen.push(seq),
                Live::End => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), watched)
        .await
        .expect("the watcher sees the end");
    assert_eq!(seen, [1]);
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

/// A chunk whose `type` is spelled with JSON escapes is read for what it is: its approval
/// request is an urgent write and an event, and it is stored and relayed written plainly,
/// so that readers which look for a type in a chunk's text before parsing it find it.
#[tokio::test]
async fn a_type_spelled_with_escapes_is_read_and_written_plainly() {
    let h = Harness::start(Quotas::default());
    h.task("t1").await;
    let mut events = h.hub.events.subscribe();
    let started = Frame::TaskStarted {
        task_id: "t1".into(),
        seq: 0,
    };
    assert!(h.ingest(started).await.is_none());
    let mut watcher = h.hub.subscribe("t1").expect("live").rx;
    let escaped = r#"{"type":"tool-approval\u002drequest","approvalId":"a1","toolCallId":"c1"}"#;
    let raw = |text: &str| serde_json::value::RawValue::from_string(text.into()).unwrap();
    // Escapes elsewhere, as in a terminal's colours, are kept as the node wrote them.
    let coloured = r#"{"type":"text-delta","delta":"\u001b[1m"}"#;
    let batch = Frame::TaskStreamChunks {
        task_id: "t1".into(),
        seq: 1,
        chunks: vec![raw(escaped), raw(coloured)],
    };
    assert!(h.ingest(batch).await.is_none());
    let plain = r#"{"type":"tool-approval-request","approvalId":"a1","toolCallId":"c1"}"#;
    match watcher.recv().await.unwrap() {
        Live::Chunk(1, text) => assert_eq!(&*text, plain),
        _ => panic!("not the first chunk"),
    }
    let event = events.try_recv().expect("an approval event");
    assert_eq!(event.kind, "task.approval");
    assert!(
        event.json.contains(r#""approvalId":"a1""#),
        "{}",
        event.json
    );
    assert!(h.ingest(completed("t1", 3)).await.is_none());
    assert_eq!(stored_when_ended(&h, "t1").await, [1, 2]);
    let stored = h.store.chunks_after("t1".into(), -1, 10).await.unwrap();
    assert_eq!((&*stored[0].1, &*stored[1].1), (plain, coloured));
    let approvals = h.store.approval_chunks("t1".into()).await.unwrap();
    assert_eq!(approvals, [(1, plain.to_string())]);
    h.stop().await;
}

/// A chunk whose type is spelled with escapes must parse as JSON to be written again; one
/// that does not (a lone surrogate: a frame checks its chunks' escapes loosely) ends its
/// task, rather than being relayed with a type only a browser reads. A `type` given twice
/// counts as its last one for every reader, stored or not.
#[tokio::test]
async fn chunks_the_gateway_cannot_read_plainly_are_refused_and_repeated_keys_agree() {
    let h = Harness::start(Quotas::default());
    for id in ["t1", "t2"] {
        h.task(id).await;
    }
    let mut events = h.hub.events.subscribe();
    let raw = |text: &str| serde_json::value::RawValue::from_string(text.into()).unwrap();
    let batch = |task: &str, chunks| Frame::TaskStreamChunks {
        task_id: task.into(),
        seq: 0,
        chunks,
    };
    let twice = r#"{"type":"text-delta","type":"tool-approval-request","approvalId":"a2","toolCallId":"c2"}"#;
    assert!(h.ingest(batch("t1", vec![raw(twice)])).await.is_none());
    let event = events.try_recv().expect("an approval event");
    assert!(
        event.json.contains(r#""approvalId":"a2""#),
        "{}",
        event.json
    );
    let hostile =
        r#"{"type":"tool-approval\u002drequest","approvalId":"a3","toolCallId":"c3","x":"\ud800"}"#;
    let stop = h.ingest(batch("t2", vec![raw(hostile)])).await;
    assert!(matches!(stop, Some(Frame::TaskStop { task_id }) if task_id == "t2"));
    let t2 = h.store.task("t2".into()).await.unwrap().unwrap();
    assert!(t2.state.is_terminal());
    let why = t2.error.unwrap_or_default();
    assert!(
        why.contains("chunk 0 refused") && why.contains("not valid JSON"),
        "{why}"
    );
    assert_no_approval_event(&mut events);
    assert!(h.ingest(completed("t1", 1)).await.is_none());
    assert_eq!(stored_when_ended(&h, "t1").await, [0]);
    let approvals = h.store.approval_chunks("t1".into()).await.unwrap();
    assert_eq!(approvals, [(0, twice.to_string())]);
    h.stop().await;
}

/// An approval request over a quota is refused, and the board hears nothing of it.
#[tokio::test]
async fn an_approval_request_over_a_quota_is_not_announced() {
    let h = Harness::start(Quotas {
        task_chunks: 1,
        ..Quotas::default()
    });
    h.task("t1").await;
    let mut events = h.hub.events.subscribe();
    let first = Frame::chunk("t1", 0, &json!({"type": "text-delta", "delta": "x"}));
    assert!(h.ingest(first).await.is_none());
    let request = json!({"type": "tool-approval-request", "approvalId": "a1", "toolCallId": "c1"});
    let stop = h.ingest(Frame::chunk("t1", 1, &request)).await;
    assert!(matches!(stop, Some(Frame::TaskStop { .. })), "{stop:?}");
    assert_no_approval_event(&mut events);
    h.stop().await;
}

/// Nothing published so far announces an approval request.
fn assert_no_approval_event(
    events: &mut tokio::sync::broadcast::Receiver<Arc<crate::gateway::events::Published>>,
) {
    while let Ok(event) = events.try_recv() {
        assert_ne!(event.kind, "task.approval", "{}", event.json);
    }
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
