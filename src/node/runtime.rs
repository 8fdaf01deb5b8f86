//! The node's task runtime: accepts tasks from the gateway, runs them with an executor,
//! applies stop and follow-up messages, and queues every output frame in the [`Outbox`]
//! until the gateway acknowledges it. Tasks keep running while the gateway is away.
//!
//! This file owns the runtime's shared state, the dispatch of gateway frames ([`Runtime::handle`],
//! one `match` over the frames a node accepts, each arm handing off to the part that owns it),
//! the queue of best-effort frames and the node's status. The parts, each in its own file:
//! - `runtime/task.rs`: one task's life, from `task:submit` to its final frame;
//! - `runtime/control.rs`: stop, follow-up and approval routing to a running task;
//! - `runtime/emitter.rs`: a task's chunks on their way to the outbox, secrets redacted;
//! - `runtime/logs.rs`: the thread that writes session logs, and their pruning.
//!
//! Environment preparation lives in `environments.rs`, configuration checks in `config.rs`.
//!
//! Over 600 lines on purpose: what remains is the state every part shares (one `Inner`, its
//! constructor and accessors) and the one frame dispatch, which is meant to be read whole;
//! the tests make up the rest.
//! Must not touch: the connection to the gateway (`connection.rs` only calls [`Runtime::handle`]
//! and [`Runtime::unsent`]), the wire frames themselves (`protocol/`).

mod control;
mod emitter;
mod logs;
mod task;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use logs::{log_writer_thread, prune_old_files, write_logs, LogWriter};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::environments::SetupMemory;
use super::executor;
use super::outbox::{Outbox, SendCursor, MEMORY_CAP};
use super::sandbox::{Mode as SandboxMode, Sandbox};
use super::terminal::Terminals;
use super::worktree::Worktrees;
use crate::protocol::{BindingState, ErrorCode, Frame, NodeStatus};
use control::{Control, STOPPED_BY_OPERATOR};

pub use emitter::Emitter;

/// An operator's answer to an approval request: (approved, reason).
pub type ApprovalAnswer = (bool, Option<String>);

/// Node-local HMAC key file (mode 0600).
const STATE_KEY_FILE: &str = "state.key";
const SETUP_MEMORY_FILE: &str = ".viber-setup.json";
/// Under the workspace: where tasks without a working dir run (not the workspace itself,
/// which holds every environment's checkout).
pub(super) const DEFAULT_TASK_DIR: &str = "default";

/// How the node's sandbox is chosen (from `viber node` flags).
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub mode: SandboxMode,
    pub resolve: HashMap<String, IpAddr>,
    /// More paths the sandbox covers.
    pub hide: Vec<PathBuf>,
}

impl SandboxSpec {
    /// No sandbox (unit tests of the runtime's bookkeeping).
    #[cfg(test)]
    pub fn off() -> SandboxSpec {
        SandboxSpec {
            mode: SandboxMode::Off,
            resolve: HashMap::new(),
            hide: Vec::new(),
        }
    }
}
/// Why a task or prepare ended when the node shut down under it.
pub(super) const STOPPED_BY_SHUTDOWN: &str = "stopped: the node is shutting down";
/// Best-effort frames kept while the gateway is away.
const EVENT_QUEUE_CAP: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

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
    /// What every task process and setup script runs in.
    sandbox: Sandbox,
    /// Best-effort frames (environment status and logs, config acks), sent in order.
    events: Mutex<VecDeque<Frame>>,
    /// The last state of every binding this node prepared, sent again after a reconnect.
    bindings: Mutex<HashMap<String, BindingState>>,
    binding_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    setup_memory: Mutex<SetupMemory>,
    /// Node-local key for MACs of setup inputs (never leaves the node).
    mac_key: ring::hmac::Key,
    /// Commands applied lately, so a resend is acknowledged without applying it twice.
    commands: Mutex<control::AppliedCommands>,
    /// Tool calls waiting for an operator, by approval id.
    approvals: Mutex<HashMap<String, tokio::sync::oneshot::Sender<ApprovalAnswer>>>,
    outbox: Mutex<Outbox>,
    /// Frames may be sent: new ones reached the log, or more spilled ones can be read.
    outbox_changed: Arc<Notify>,
    /// The node's terminals.
    terminals: Terminals,
    /// Threads' git worktrees.
    worktrees: Worktrees,
    /// Writes the outbox's session-log lines on its own thread.
    log_writer: LogWriter,
    running: Mutex<HashMap<String, mpsc::UnboundedSender<Control>>>,
    /// Every task, prepare, validation and config check this runtime started: shutdown
    /// waits for them.
    tracker: TaskTracker,
    /// Cancelled when the node shuts down: prepares stop their git work and setup scripts.
    stopping: CancellationToken,
    started: Instant,
}

impl Runtime {
    pub fn new(
        node_id: String,
        data_dir: &Path,
        gateway: &str,
        sandbox: SandboxSpec,
    ) -> anyhow::Result<Runtime> {
        let sessions_dir = data_dir.join("agents").join(&node_id).join("sessions");
        let workspace_dir = data_dir.join("workspace");
        std::fs::create_dir_all(&sessions_dir)?;
        std::fs::create_dir_all(workspace_dir.join(DEFAULT_TASK_DIR))?;
        let sandbox = Sandbox::detect(
            sandbox.mode,
            data_dir,
            &workspace_dir,
            sandbox.resolve,
            sandbox.hide,
        )?;
        executor::cli::detect();
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
        let outbox_changed = Arc::new(Notify::new());
        let worktrees = Worktrees::new(&workspace_dir, outbox_changed.clone());
        let terminals = Terminals::new(
            data_dir,
            &workspace_dir,
            sandbox.clone(),
            &node_id,
            outbox_changed.clone(),
            worktrees.clone(),
        );
        let rt = Runtime {
            inner: Arc::new(Inner {
                node_id,
                data_dir: data_dir.to_path_buf(),
                gateway: gateway.to_string(),
                sessions_dir,
                workspace_dir,
                sandbox,
                events: Mutex::new(VecDeque::new()),
                bindings: Mutex::new(HashMap::new()),
                binding_locks: Mutex::new(HashMap::new()),
                setup_memory: Mutex::new(setup_memory),
                mac_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
                commands: Mutex::new(control::AppliedCommands::default()),
                approvals: Mutex::new(HashMap::new()),
                outbox: Mutex::new(Outbox::new(MEMORY_CAP)),
                outbox_changed,
                terminals,
                worktrees,
                log_writer: LogWriter::default(),
                running: Mutex::new(HashMap::new()),
                tracker: TaskTracker::new(),
                stopping: CancellationToken::new(),
                started: Instant::now(),
            }),
        };
        let weak = Arc::downgrade(&rt.inner);
        std::thread::Builder::new()
            .name("viber-session-log".into())
            .spawn(move || log_writer_thread(weak))?;
        Ok(rt)
    }

    pub fn capabilities(&self) -> Vec<String> {
        let mut caps = executor::available();
        caps.extend(self.inner.sandbox.capabilities());
        caps.extend(self.inner.terminals.capabilities());
        caps
    }

    pub(super) fn sandbox(&self) -> &Sandbox {
        &self.inner.sandbox
    }

    pub fn new_send_cursor(&self) -> SendCursor {
        SendCursor::default()
    }

    /// Frames not yet sent on this connection: queued best-effort frames, then (on a new
    /// connection) the state of every binding, then unacknowledged task frames. Spilled
    /// frames are read back from the session logs on a blocking thread.
    pub async fn unsent(&self, cursor: &mut SendCursor) -> Vec<Frame> {
        let mut frames: Vec<Frame> = lock(&self.inner.events).drain(..).collect();
        let synced_before = cursor.synced;
        if !cursor.synced {
            cursor.synced = true;
            let bindings: Vec<BindingState> =
                lock(&self.inner.bindings).values().cloned().collect();
            frames.push(Frame::EnvironmentSync { bindings });
        }
        frames.extend(self.inner.terminals.take_list(!synced_before));
        frames.extend(self.inner.worktrees.take_reports());
        let (task_frames, reads) = self.outbox().unsent(cursor);
        frames.extend(task_frames);
        if reads.is_empty() {
            return frames;
        }
        let mut c = std::mem::take(cursor);
        let read = tokio::task::spawn_blocking(move || {
            let (mut spilled, mut more) = (Vec::new(), false);
            for r in reads {
                match r.read(&mut c) {
                    Ok((f, m)) => {
                        spilled.extend(f);
                        more |= m;
                    }
                    Err(e) => tracing::error!(error = %e, "reading spilled frames"),
                }
            }
            (c, spilled, more)
        })
        .await;
        // Should the read fail outright, a fresh cursor sends everything again (the gateway
        // drops what it has).
        let (c, spilled, more) = read.unwrap_or_default();
        *cursor = c;
        frames.extend(spilled);
        if more {
            self.inner.outbox_changed.notify_one();
        }
        frames
    }

    /// Writes the session-log lines queued so far (at shutdown; the log writer does it
    /// otherwise). Blocking.
    pub fn flush_logs(&self) {
        write_logs(&self.inner);
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

    /// Drops the locks of bindings no prepare holds or waits for.
    pub(super) fn forget_idle_binding_locks(&self) {
        lock(&self.inner.binding_locks).retain(|_, l| Arc::strong_count(l) > 1);
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

    /// Cancelled when the node shuts down.
    pub(super) fn stopping(&self) -> CancellationToken {
        self.inner.stopping.child_token()
    }

    /// Runs `work` as part of this runtime: shutdown waits for it.
    pub(super) fn track<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn(work);
    }

    pub(super) fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The node's terminals.
    pub fn terminals(&self) -> &Terminals {
        &self.inner.terminals
    }

    /// The threads' worktrees.
    pub(super) fn worktrees(&self) -> &Worktrees {
        &self.inner.worktrees
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
            worktrees: self.inner.worktrees.list(),
        }
    }

    /// Handles a frame from the gateway; returns a frame to answer with, if any.
    ///
    /// The one place where gateway frames enter the node: one arm per frame a node accepts,
    /// each handing off to the part that owns it. A new frame gets a new arm here.
    pub async fn handle(&self, frame: Frame) -> Option<Frame> {
        match frame {
            Frame::TaskSubmit(submit) => {
                self.submit(submit);
                None
            }
            Frame::GitRequest(req) => {
                let rt = self.clone();
                self.track(async move {
                    let (thread, removal) = (req.thread_id.clone(), req.is_removal());
                    let answer = rt.inner.worktrees.handle(*req).await;
                    if removal && answer.error.is_none() {
                        rt.forget_worktree_setup(&thread);
                    }
                    rt.send_event(Frame::GitResult(Box::new(answer)));
                });
                None
            }
            Frame::TaskAck { task_id, seq } => {
                self.outbox().ack(&task_id, seq);
                None
            }
            Frame::TaskStop { task_id } => {
                self.stop_task(&task_id, STOPPED_BY_OPERATOR);
                None
            }
            Frame::TaskMessage {
                task_id,
                message,
                injection_mode,
                command_id,
            } => self.command(command_id, || {
                self.route_message(task_id, message, injection_mode)
            }),
            Frame::TaskApproval {
                task_id,
                approval_id,
                approved,
                reason,
                command_id,
            } => self.command(command_id, || {
                self.route_approval(task_id, approval_id, approved, reason)
            }),
            Frame::EnvironmentPrepare(p) => {
                self.prepare_environment(p);
                None
            }
            Frame::EnvironmentValidate(req) => {
                let rt = self.clone();
                self.inner.tracker.spawn(async move {
                    let report = super::environments::validate(req).await;
                    rt.send_event(Frame::EnvironmentValidated(report));
                });
                None
            }
            Frame::ConfigPush { command_id } => self.command(command_id, || {
                self.check_config();
                None
            }),
            Frame::TerminalOpen(open) => self.inner.terminals.open(*open),
            Frame::TerminalAttach {
                terminal_id,
                attachment_id,
                offset,
            } => self
                .inner
                .terminals
                .attach(terminal_id, attachment_id, offset),
            Frame::TerminalDetach {
                terminal_id,
                attachment_id,
            } => {
                self.inner.terminals.detach(&terminal_id, &attachment_id);
                None
            }
            Frame::TerminalInput { terminal_id, data } => {
                self.inner.terminals.input(&terminal_id, data);
                None
            }
            Frame::TerminalResize {
                terminal_id,
                cols,
                rows,
            } => {
                self.inner.terminals.resize(&terminal_id, cols, rows);
                None
            }
            Frame::TerminalClose { terminal_id } => {
                self.inner.terminals.close(&terminal_id);
                None
            }
            Frame::TunnelOpen {
                tunnel_id,
                binding_id,
                port,
            } => self
                .inner
                .terminals
                .tunnel_open(tunnel_id, &binding_id, port),
            Frame::TunnelData { tunnel_id, data } => {
                self.inner.terminals.tunnel_data(&tunnel_id, data);
                None
            }
            Frame::TunnelClose { tunnel_id, .. } => {
                self.inner.terminals.tunnel_close(&tunnel_id);
                None
            }
            other => Some(Frame::error(
                ErrorCode::InvalidFrame,
                format!("{:?} frames are not accepted by a node", other.type_name()),
            )),
        }
    }

    /// Checks the node's configuration against the gateway's in the background; the answer
    /// goes out as a `config:ack` event.
    fn check_config(&self) {
        let rt = self.clone();
        self.inner.tracker.spawn(async move {
            let ack = super::config::check(&rt).await;
            rt.send_event(Frame::ConfigAck(ack));
        });
    }

    /// Deletes session logs of tasks that ended more than `keep` ago (by the log's last
    /// write), at start and then every hour until `shutdown`. Logs of tasks this node still
    /// runs or holds unacknowledged frames of stay.
    pub async fn prune_session_logs(self, keep: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        while crate::clock::next_tick(&mut tick, &shutdown).await {
            let open = self.known_tasks();
            let dir = self.inner.sessions_dir.clone();
            let pruned =
                tokio::task::spawn_blocking(move || prune_old_files(&dir, keep, &open)).await;
            match pruned {
                Ok(n) if n > 0 => tracing::info!(logs = n, "deleted old session logs"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "pruning session logs"),
            }
        }
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

/// For the runtime's tests: a task with secrets, and what it queued for the gateway.
#[cfg(test)]
pub(super) mod testing {
    use std::path::PathBuf;

    use super::logs::write_logs;
    use super::{Emitter, Runtime};
    use crate::node::outbox::SendCursor;
    use crate::protocol::Frame;

    /// A runtime in a fresh directory with task `t1` open, and its emitter with `secret`.
    pub fn task_with_secret(secret: &str) -> (PathBuf, Runtime, Emitter) {
        let dir = std::env::temp_dir().join(format!("viber-rt-{}", crate::crypto::random_u64()));
        let rt = Runtime::new(
            "n1".into(),
            &dir,
            "http://127.0.0.1:1",
            super::SandboxSpec::off(),
        )
        .unwrap();
        rt.outbox().open("t1", &dir.join("t1.jsonl")).unwrap();
        let emit = Emitter::new(
            rt.inner.clone(),
            "t1".into(),
            &[secret.to_string()],
            tracing::Span::none(),
        );
        (dir, rt, emit)
    }

    /// The frames queued so far, once the log writer has written them.
    pub fn queued(rt: &Runtime) -> Vec<Frame> {
        write_logs(&rt.inner);
        rt.outbox().unsent(&mut SendCursor::default()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_session_logs_go_and_open_or_recent_ones_stay() {
        let dir = std::env::temp_dir().join(format!("viber-logs-{}", crate::crypto::random_u64()));
        std::fs::create_dir_all(&dir).unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 24 * 3600);
        for name in ["old.jsonl", "open.jsonl", "recent.jsonl", "notes.txt"] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            if name != "recent.jsonl" {
                f.set_modified(long_ago).unwrap();
            }
        }
        let keep = Duration::from_secs(30 * 24 * 3600);
        assert_eq!(prune_old_files(&dir, keep, &["open".to_string()]), 1);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "open.jsonl", "recent.jsonl"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
