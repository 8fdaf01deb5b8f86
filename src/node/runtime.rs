//! The node's task runtime: accepts tasks from the gateway, runs them with an executor,
//! applies stop and follow-up messages, and queues every output frame in the [`Outbox`]
//! until the gateway acknowledges it. Tasks keep running while the gateway is away.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::environments::SetupMemory;
use super::executor::{self, Run, RunOutcome};
use super::outbox::{Outbox, SendCursor, MEMORY_CAP};
use crate::protocol::ui::{FinishReason, UiChunk};
use crate::protocol::{BindingState, ErrorCode, Frame, InjectionMode, NodeStatus, TaskSubmit};
use crate::secrets::Redactor;

const STOPPED_BY_OPERATOR: &str = "stopped by operator";

/// An operator's answer to an approval request: (approved, reason).
pub type ApprovalAnswer = (bool, Option<String>);

/// Node-local HMAC key file (mode 0600).
const STATE_KEY_FILE: &str = "state.key";
const SETUP_MEMORY_FILE: &str = ".viber-setup.json";
/// Best-effort frames kept while the gateway is away.
const EVENT_QUEUE_CAP: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Default grace period between stop signals.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    data_dir: PathBuf,
    /// Gateway base URL, for pulling config.
    gateway: String,
    sessions_dir: PathBuf,
    workspace_dir: PathBuf,
    /// Best-effort frames (environment status and logs, config acks), sent in order.
    events: Mutex<VecDeque<Frame>>,
    /// The last state of every binding this node prepared, sent again after a reconnect.
    bindings: Mutex<HashMap<String, BindingState>>,
    binding_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    setup_memory: Mutex<SetupMemory>,
    /// Node-local key for MACs of setup inputs (never leaves the node).
    mac_key: ring::hmac::Key,
    /// Tool calls waiting for an operator, by approval id.
    approvals: Mutex<HashMap<String, tokio::sync::oneshot::Sender<ApprovalAnswer>>>,
    outbox: Mutex<Outbox>,
    outbox_changed: Notify,
    running: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    tracker: TaskTracker,
    started: Instant,
}

/// What the gateway asks of a running task.
#[derive(Debug)]
enum Control {
    /// Stop the task; the reason ends up in its error.
    Stop(&'static str),
    Message(String, InjectionMode),
}

/// Hands an executor's chunks to the outbox of one task, redacting the task's secrets.
pub struct Emitter {
    inner: Arc<Inner>,
    task_id: String,
    /// None when the task has no secrets.
    redactor: Option<Redactor>,
    /// Streaming redactors of the open text and reasoning parts, by part id.
    parts: Mutex<HashMap<String, Redactor>>,
}

impl Emitter {
    fn new(inner: Arc<Inner>, task_id: String, secrets: &[String]) -> Emitter {
        let r = Redactor::new(secrets);
        Emitter {
            inner,
            task_id,
            redactor: (!r.is_empty()).then_some(r),
            parts: Mutex::new(HashMap::new()),
        }
    }

    pub fn chunk(&self, chunk: UiChunk) {
        let Some(template) = &self.redactor else {
            return self.send_chunk(chunk.to_value());
        };
        let mut parts = self.parts.lock().unwrap_or_else(|p| p.into_inner());
        match chunk {
            UiChunk::TextDelta { id, delta } => {
                let safe = parts
                    .entry(id.clone())
                    .or_insert_with(|| template.clone())
                    .push(&delta);
                drop(parts);
                self.send_delta(UiChunk::TextDelta { id, delta: safe });
            }
            UiChunk::ReasoningDelta { id, delta } => {
                let safe = parts
                    .entry(id.clone())
                    .or_insert_with(|| template.clone())
                    .push(&delta);
                drop(parts);
                self.send_delta(UiChunk::ReasoningDelta { id, delta: safe });
            }
            UiChunk::TextEnd { ref id } | UiChunk::ReasoningEnd { ref id } => {
                let rest = parts.remove(id).map(|mut r| r.finish()).unwrap_or_default();
                drop(parts);
                self.send_delta(match &chunk {
                    UiChunk::TextEnd { id } => UiChunk::text_delta(id, rest),
                    _ => UiChunk::ReasoningDelta {
                        id: id.clone(),
                        delta: rest,
                    },
                });
                self.send_chunk(chunk.to_value());
            }
            other => {
                drop(parts);
                let mut v = other.to_value();
                redact_value(template, &mut v);
                self.send_chunk(v);
            }
        }
    }

    /// Sends a text or reasoning delta unless the redactor held all of it back.
    fn send_delta(&self, delta: UiChunk) {
        if let UiChunk::TextDelta { delta: d, .. } | UiChunk::ReasoningDelta { delta: d, .. } =
            &delta
        {
            if d.is_empty() {
                return;
            }
        }
        self.send_chunk(delta.to_value());
    }

    /// Registers an approval request; the receiver gets (approved, reason) from the operator.
    pub fn await_approval(
        &self,
        approval_id: &str,
    ) -> tokio::sync::oneshot::Receiver<(bool, Option<String>)> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.inner.approvals).insert(approval_id.to_string(), tx);
        rx
    }

    /// Records a conversation message in the task's session log.
    pub fn record(&self, message: &serde_json::Value) {
        let r = self
            .inner
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(&self.task_id, message);
        if let Err(e) = r {
            tracing::error!(task = %self.task_id, error = %e, "writing session log");
        }
    }

    /// Forgets an approval that timed out or was interrupted.
    pub fn drop_approval(&self, approval_id: &str) {
        lock(&self.inner.approvals).remove(approval_id);
    }

    /// Redacts the task's secrets from a complete string (e.g. tool output for the model).
    pub fn redact(&self, s: &str) -> String {
        match &self.redactor {
            Some(r) => r.redact_str(s),
            None => s.to_string(),
        }
    }

    fn send_chunk(&self, value: serde_json::Value) {
        let task_id = self.task_id.clone();
        self.reliable(false, move |seq| Frame::TaskStreamChunk {
            task_id,
            seq,
            chunk: value,
        });
    }

    fn reliable(&self, last: bool, build: impl FnOnce(u64) -> Frame) {
        let pushed = self
            .inner
            .outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&self.task_id, last, build);
        if let Err(e) = pushed {
            tracing::error!(task = %self.task_id, error = %e, "writing session log");
        }
        self.inner.outbox_changed.notify_one();
    }
}

impl Runtime {
    pub fn new(node_id: String, data_dir: &Path, gateway: &str) -> anyhow::Result<Runtime> {
        let sessions_dir = data_dir.join("agents").join(&node_id).join("sessions");
        let workspace_dir = data_dir.join("workspace");
        std::fs::create_dir_all(&sessions_dir)?;
        std::fs::create_dir_all(&workspace_dir)?;
        let key_path = data_dir.join(STATE_KEY_FILE);
        let key_bytes = match std::fs::read(&key_path) {
            Ok(b) if b.len() == 32 => b,
            _ => {
                let b = crate::crypto::random_bytes(32);
                crate::crypto::write_private_file(&key_path, &b)?;
                b
            }
        };
        let setup_memory = SetupMemory::load(&workspace_dir.join(SETUP_MEMORY_FILE));
        Ok(Runtime {
            inner: Arc::new(Inner {
                node_id,
                data_dir: data_dir.to_path_buf(),
                gateway: gateway.to_string(),
                sessions_dir,
                workspace_dir,
                events: Mutex::new(VecDeque::new()),
                bindings: Mutex::new(HashMap::new()),
                binding_locks: Mutex::new(HashMap::new()),
                setup_memory: Mutex::new(setup_memory),
                mac_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
                approvals: Mutex::new(HashMap::new()),
                outbox: Mutex::new(Outbox::new(MEMORY_CAP)),
                outbox_changed: Notify::new(),
                running: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                started: Instant::now(),
            }),
        })
    }

    pub fn capabilities(&self) -> Vec<String> {
        executor::available()
    }

    pub fn new_send_cursor(&self) -> SendCursor {
        SendCursor::default()
    }

    /// Frames not yet sent on this connection: queued best-effort frames, then (on a new
    /// connection) the state of every binding, then unacknowledged task frames.
    pub fn unsent(&self, cursor: &mut SendCursor) -> Vec<Frame> {
        let mut frames: Vec<Frame> = lock(&self.inner.events).drain(..).collect();
        if !cursor.synced {
            cursor.synced = true;
            let bindings: Vec<BindingState> =
                lock(&self.inner.bindings).values().cloned().collect();
            frames.push(Frame::EnvironmentSync { bindings });
        }
        let (task_frames, more) = self.outbox().unsent(cursor);
        frames.extend(task_frames);
        if more {
            self.inner.outbox_changed.notify_one();
        }
        frames
    }

    /// Queues a best-effort frame (kept across a reconnect, oldest dropped past a cap).
    pub fn send_event(&self, frame: Frame) {
        let mut q = lock(&self.inner.events);
        if q.len() >= EVENT_QUEUE_CAP {
            q.pop_front();
        }
        q.push_back(frame);
        drop(q);
        self.inner.outbox_changed.notify_one();
    }

    pub(super) fn set_binding_state(&self, state: BindingState) {
        lock(&self.inner.bindings).insert(state.binding_id.clone(), state.clone());
        self.send_event(Frame::EnvironmentStatus(state));
    }

    pub(super) fn binding_lock(&self, binding: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.binding_locks)
            .entry(binding.to_string())
            .or_default()
            .clone()
    }

    pub(super) fn workspace_dir(&self) -> &Path {
        &self.inner.workspace_dir
    }

    pub(super) fn mac(&self, data: &[u8]) -> String {
        crate::crypto::hex(ring::hmac::sign(&self.inner.mac_key, data).as_ref())
    }

    pub(super) fn setup_memory(&self) -> std::sync::MutexGuard<'_, SetupMemory> {
        lock(&self.inner.setup_memory)
    }

    pub(super) fn setup_memory_path(&self) -> PathBuf {
        self.inner.workspace_dir.join(SETUP_MEMORY_FILE)
    }

    pub(super) fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub(super) fn gateway(&self) -> &str {
        &self.inner.gateway
    }

    pub(super) fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Resolves when new frames were queued.
    pub async fn outbox_changed(&self) {
        self.inner.outbox_changed.notified().await
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.inner.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Control>>> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tasks this node is running or still has unacknowledged output of.
    pub fn known_tasks(&self) -> Vec<String> {
        let mut ids = self.outbox().task_ids();
        for id in self.running().keys() {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids
    }

    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            running_tasks: self.known_tasks(),
            load: load_average(),
            memory_rss_bytes: rss_bytes(),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            version: crate::VERSION.to_string(),
        }
    }

    /// Handles a frame from the gateway; returns a frame to answer with, if any.
    pub async fn handle(&self, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::TaskSubmit(submit) => {
                self.submit(submit);
                None
            }
            Frame::TaskAck { task_id, seq } => {
                self.outbox().ack(&task_id, seq);
                None
            }
            Frame::TaskStop { task_id } => {
                if let Some(tx) = self.running().get(&task_id) {
                    let _ = tx.send(Control::Stop(STOPPED_BY_OPERATOR));
                }
                None
            }
            Frame::TaskMessage {
                task_id,
                message,
                injection_mode,
            } => match self.running().get(&task_id) {
                Some(tx) => {
                    let _ = tx.send(Control::Message(message, injection_mode));
                    None
                }
                None => Some(Frame::error(
                    ErrorCode::UnknownTask,
                    format!("task {task_id} is not running on this node"),
                )),
            },
            Frame::TaskApproval {
                task_id,
                approval_id,
                approved,
                reason,
            } => match lock(&self.inner.approvals).remove(&approval_id) {
                Some(tx) => {
                    let _ = tx.send((approved, reason));
                    None
                }
                None => Some(Frame::error(
                    ErrorCode::UnknownTask,
                    format!("no pending approval {approval_id} for task {task_id}"),
                )),
            },
            Frame::EnvironmentPrepare(p) => {
                self.prepare_environment(p);
                None
            }
            Frame::EnvironmentValidate(req) => {
                let rt = self.clone();
                tokio::spawn(async move {
                    let report = super::environments::validate(req).await;
                    rt.send_event(Frame::EnvironmentValidated(report));
                });
                None
            }
            Frame::ConfigPush {} => {
                let rt = self.clone();
                tokio::spawn(async move {
                    let ack = super::config::check(&rt).await;
                    rt.send_event(Frame::ConfigAck(ack));
                });
                None
            }
            other => Some(Frame::error(
                ErrorCode::InvalidFrame,
                format!("{:?} frames are not accepted by a node", other.type_name()),
            )),
        }
    }

    fn submit(&self, submit: TaskSubmit) {
        let id = submit.task_id.clone();
        if self.running().contains_key(&id) || self.outbox().contains(&id) {
            tracing::debug!(task = %id, "duplicate task:submit ignored");
            return;
        }
        if !valid_task_id(&id) {
            tracing::warn!(task = %id, "refusing task with an unsafe id");
            return;
        }
        let log_path = self.inner.sessions_dir.join(format!("{id}.jsonl"));
        let resumed_after_restart = log_path.exists();
        if let Err(e) = self.outbox().open(&id, &log_path) {
            tracing::error!(task = %id, error = %e, "cannot open session log");
            return;
        }
        let secret_values: Vec<String> = submit.secrets.iter().map(|s| s.value.clone()).collect();
        let emitter = Emitter::new(self.inner.clone(), id.clone(), &secret_values);
        if resumed_after_restart {
            // A previous process of this node started the task and died with it.
            finish_with_error(
                &emitter,
                "the node restarted while this task ran",
                None,
                false,
            );
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.running().insert(id.clone(), tx);
        let runtime = self.clone();
        self.inner.tracker.spawn(async move {
            run_task(&runtime, submit, emitter, rx).await;
            runtime.running().remove(&id);
        });
    }

    /// Stops every running task (node shutdown) and waits up to `limit` for them to end.
    pub async fn stop_all(&self, limit: Duration) {
        for tx in self.running().values() {
            let _ = tx.send(Control::Stop("stopped: the node is shutting down"));
        }
        self.inner.tracker.close();
        let _ = tokio::time::timeout(limit, self.inner.tracker.wait()).await;
    }

    /// Waits up to `limit` for the gateway to acknowledge every queued frame.
    pub async fn drained(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.outbox().task_ids().is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// Task ids become file names: allow only a conservative alphabet.
fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Redacts a task's secrets from every string inside a JSON value.
pub fn redact_value_with(emit: &Emitter, v: &mut serde_json::Value) {
    if let Some(r) = &emit.redactor {
        redact_value(r, v);
    }
}

/// Redacts every string inside a JSON value.
pub fn redact_value(r: &Redactor, v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = r.redact_str(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_value(r, x)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| redact_value(r, x)),
        _ => {}
    }
}

fn finish_with_error(emit: &Emitter, error: &str, exit_code: Option<i32>, stopped: bool) {
    let task_id = emit.task_id.clone();
    let error = error.to_string();
    emit.reliable(true, move |seq| Frame::TaskError {
        task_id,
        seq,
        error,
        exit_code,
        stopped,
    });
}

async fn run_task(
    runtime: &Runtime,
    submit: TaskSubmit,
    emit: Emitter,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let task_id = submit.task_id.clone();
    emit.reliable(false, |seq| Frame::TaskStarted {
        task_id: task_id.clone(),
        seq,
    });
    tracing::info!(task = %task_id, executor = %submit.executor, "task started");

    let Some(exec) = executor::by_name(submit.executor.as_str()) else {
        let msg = format!("this node has no {:?} executor", submit.executor.as_str());
        emit.chunk(UiChunk::Error {
            error_text: msg.clone(),
        });
        finish_with_error(&emit, &msg, None, false);
        return;
    };
    let cwd = submit
        .options
        .cwd
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| runtime.inner.workspace_dir.clone());
    if !cwd.is_dir() {
        let msg = format!(
            "working directory {} does not exist on this node",
            cwd.display()
        );
        emit.chunk(UiChunk::Error {
            error_text: msg.clone(),
        });
        finish_with_error(&emit, &msg, None, false);
        return;
    }
    let mut env: BTreeMap<String, String> = submit.options.env.clone();
    for s in &submit.secrets {
        env.insert(s.name.clone(), s.value.clone());
    }
    env.insert("VIBER_TASK_ID".into(), task_id.clone());
    env.insert("VIBER_NODE_ID".into(), runtime.inner.node_id.clone());
    let grace = submit
        .options
        .stop_grace_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_STOP_GRACE);

    emit.chunk(UiChunk::Start {
        message_id: Some(task_id.clone()),
        message_metadata: None,
    });

    let memory = tokio::sync::Mutex::new(Vec::new());
    let mut queue: VecDeque<String> = VecDeque::from([submit.goal.clone()]);
    let mut collected: Vec<String> = Vec::new();
    let mut stopped: Option<&'static str> = None;
    let mut last = RunOutcome::Exited(0);
    let mut run_no = 0u32;
    loop {
        // Messages that arrived while no run was active.
        while let Ok(ctrl) = control.try_recv() {
            match ctrl {
                Control::Stop(why) => stopped = Some(why),
                Control::Message(m, InjectionMode::Collect) => collected.push(m),
                Control::Message(m, InjectionMode::Steer) => queue.push_front(m),
                Control::Message(m, InjectionMode::Followup) => queue.push_back(m),
            }
        }
        if stopped.is_some() {
            break;
        }
        if queue.is_empty() && !collected.is_empty() {
            queue.push_back(collected.join("\n"));
            collected.clear();
        }
        let Some(input) = queue.pop_front() else {
            break;
        };
        run_no += 1;
        let abort = CancellationToken::new();
        let mut steer: Option<String> = None;
        let run = exec.run(Run {
            input: &input,
            cwd: &cwd,
            env: &env,
            emit: &emit,
            part_id: format!("run-{run_no}"),
            abort: abort.clone(),
            stop_grace: grace,
            memory: &memory,
            options: &submit.options,
        });
        tokio::pin!(run);
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                Some(ctrl) = control.recv() => match ctrl {
                    Control::Stop(why) => {
                        stopped = Some(why);
                        abort.cancel();
                    }
                    Control::Message(m, InjectionMode::Steer) => {
                        // Several steers before the run yields: the latest wins, the others
                        // still run after it.
                        if let Some(prev) = steer.replace(m) {
                            queue.push_front(prev);
                        }
                        abort.cancel();
                    }
                    Control::Message(m, InjectionMode::Followup) => queue.push_back(m),
                    Control::Message(m, InjectionMode::Collect) => collected.push(m),
                }
            }
        };
        if let RunOutcome::Failed(msg) = &outcome {
            emit.chunk(UiChunk::Error {
                error_text: msg.clone(),
            });
        }
        if let Some(m) = steer.take() {
            if stopped.is_none() {
                queue.push_front(m);
            }
        }
        last = outcome;
        if !collected.is_empty() {
            queue.push_back(collected.join("\n"));
            collected.clear();
        }
    }

    let task_id = task_id.clone();
    if let Some(why) = stopped {
        emit.chunk(UiChunk::Abort {
            reason: Some(why.into()),
        });
        finish_with_error(&emit, why, None, true);
        tracing::info!(task = %task_id, reason = why, "task stopped");
        return;
    }
    match last {
        RunOutcome::Exited(0) => {
            emit.chunk(UiChunk::Finish {
                finish_reason: Some(FinishReason::Stop),
                message_metadata: None,
            });
            emit.reliable(true, |seq| Frame::TaskCompleted {
                task_id: task_id.clone(),
                seq,
                exit_code: Some(0),
                result: None,
            });
            tracing::info!(task = %task_id, "task completed");
        }
        RunOutcome::Exited(code) => {
            let msg = format!("exited with status {code}");
            emit.chunk(UiChunk::Error {
                error_text: msg.clone(),
            });
            emit.chunk(UiChunk::Finish {
                finish_reason: Some(FinishReason::Error),
                message_metadata: None,
            });
            finish_with_error(&emit, &msg, Some(code), false);
            tracing::info!(task = %task_id, code, "task failed");
        }
        RunOutcome::Failed(msg) => {
            emit.chunk(UiChunk::Finish {
                finish_reason: Some(FinishReason::Error),
                message_metadata: None,
            });
            finish_with_error(&emit, &msg, None, false);
        }
        RunOutcome::Interrupted => {
            // Only a stop ends a task on an interrupted run; this is unreachable in practice.
            emit.chunk(UiChunk::Finish {
                finish_reason: Some(FinishReason::Interrupted),
                message_metadata: None,
            });
            finish_with_error(&emit, "interrupted", None, true);
        }
    }
}

fn load_average() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
