//! Terminals on this node: a shell (or a command) under a PTY, in an environment's working
//! dir and the node's sandbox, its output redacted into a scrollback ring, and every viewer
//! an attachment with its own cursor (see `protocol::terminal`).
//!
//! A persistent terminal lives in tmux (`tmux.rs`) when the node has it: it survives the
//! node's restart, and the node adopts it again at start; its output streams again once the
//! gateway sends its `terminal:open` (with the secrets to redact) again. Without tmux, or for
//! a command, the node holds the PTY itself (`pty.rs`).
//!
//! Output frames do not go through the outbox: they are live, sent through a bounded queue
//! the connection drains ([`Terminals::next_frame`]). A full queue makes an attachment wait,
//! never the PTY: the reader only appends to the ring, and a viewer that fell behind the
//! ring's start skips forward with a marker.
//!
//! This file owns the set of terminals and the frames that reach them. The parts, each in
//! its own file: `run.rs` (one terminal's process, its reader and its end), `attach.rs` (a
//! viewer's cursor), `ring.rs`, `pty.rs`, `tmux.rs`, `ports.rs`, `tunnel.rs` (previews) and
//! `typed.rs` (a thread's scripts typed into its shell).
//!
//! Must not touch: the connection (it only drains the queue and reports a lost link), the
//! gateway's viewers.

mod attach;
mod ports;
mod pty;
mod ring;
mod run;
mod tmux;
mod tunnel;
mod typed;

pub use typed::TypedShell;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::node::sandbox::{Guard, Sandbox};
use crate::protocol::terminal::{
    valid_terminal_id, Bytes64, TerminalOpen, TerminalState, RING_BYTES,
};
use crate::protocol::Frame;
use ring::Ring;

/// Frames waiting for the connection.
const QUEUE: usize = 256;
/// How long an ended terminal's output stays for viewers that are still reading it.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// How often the listening ports of running terminals are looked up.
const PORTS_EVERY: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a terminal's reader is asked to do.
enum Control {
    Input(Vec<u8>),
    Resize(u16, u16),
}

/// How a terminal ended.
#[derive(Debug, Clone, Default)]
struct Exit {
    code: Option<i32>,
    error: Option<String>,
}

struct Term {
    id: String,
    tmux: Option<tmux::Session>,
    ring: Mutex<Ring>,
    /// The ring's end, for attachments to wait on.
    end: watch::Sender<u64>,
    exit: watch::Sender<Option<Exit>>,
    control: mpsc::UnboundedSender<Control>,
    control_rx: Mutex<Option<mpsc::UnboundedReceiver<Control>>>,
    /// Adopted after a restart and not streaming until the gateway opens it again.
    adopted: std::sync::atomic::AtomicBool,
    attachments: Mutex<HashMap<String, Attachment>>,
    ports: Mutex<Vec<u16>>,
    /// The binding it was opened on (sent again with the open after a restart).
    binding: Mutex<Option<String>>,
    /// The process the node started under its own PTY (none for tmux: its pane's).
    pid: std::sync::atomic::AtomicU32,
    /// Cancelled to end it.
    stop: CancellationToken,
    /// The allowlist proxy or container it needs while it runs.
    guard: Mutex<Option<Guard>>,
}

struct Attachment {
    cursor: watch::Sender<u64>,
    cancel: CancellationToken,
}

impl Term {
    fn new(id: &str, tmux: Option<tmux::Session>) -> Arc<Term> {
        let (control, rx) = mpsc::unbounded_channel();
        Arc::new(Term {
            id: id.to_string(),
            tmux,
            ring: Mutex::new(Ring::new(RING_BYTES)),
            end: watch::Sender::new(0),
            exit: watch::Sender::new(None),
            control,
            control_rx: Mutex::new(Some(rx)),
            adopted: false.into(),
            attachments: Mutex::new(HashMap::new()),
            ports: Mutex::new(Vec::new()),
            pid: 0.into(),
            binding: Mutex::new(None),
            stop: CancellationToken::new(),
            guard: Mutex::new(None),
        })
    }

    fn state(&self) -> TerminalState {
        let exit = self.exit.borrow().clone();
        TerminalState {
            terminal_id: self.id.clone(),
            running: exit.is_none(),
            exit_code: exit.as_ref().and_then(|e| e.code),
            error: exit.and_then(|e| e.error),
            tmux: self.tmux.is_some(),
            end_offset: lock(&self.ring).end(),
            ports: lock(&self.ports).clone(),
            adopted: self.adopted.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn append(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = {
            let mut ring = lock(&self.ring);
            ring.push(bytes);
            ring.end()
        };
        self.end.send_replace(end);
    }

    fn ended(&self, exit: Exit) {
        self.exit.send_replace(Some(exit));
    }
}

/// Every terminal of this node.
#[derive(Clone)]
pub struct Terminals {
    inner: Arc<Inner>,
}

struct Inner {
    terms: Mutex<HashMap<String, Arc<Term>>>,
    queue: mpsc::Sender<Frame>,
    queue_rx: tokio::sync::Mutex<mpsc::Receiver<Frame>>,
    /// The list changed since it was last taken for the gateway.
    dirty: std::sync::atomic::AtomicBool,
    /// Wakes the connection to send the list.
    wake: Arc<tokio::sync::Notify>,
    tmux: Option<PathBuf>,
    tmux_dir: PathBuf,
    sandbox: Sandbox,
    workspace_dir: PathBuf,
    node_id: String,
    tunnels: tunnel::Tunnels,
    /// Where a thread's terminal opens.
    worktrees: crate::node::worktree::Worktrees,
}

impl Terminals {
    pub fn new(
        data_dir: &Path,
        workspace_dir: &Path,
        sandbox: Sandbox,
        node_id: &str,
        wake: Arc<tokio::sync::Notify>,
        worktrees: crate::node::worktree::Worktrees,
    ) -> Terminals {
        let (queue, rx) = mpsc::channel(QUEUE);
        Terminals {
            inner: Arc::new(Inner {
                terms: Mutex::new(HashMap::new()),
                queue,
                queue_rx: tokio::sync::Mutex::new(rx),
                dirty: false.into(),
                wake,
                tmux: tmux::binary(),
                tmux_dir: data_dir.join("tmux"),
                sandbox,
                workspace_dir: workspace_dir.to_path_buf(),
                node_id: node_id.to_string(),
                tunnels: tunnel::Tunnels::default(),
                worktrees,
            }),
        }
    }

    /// `terminal:tmux` when terminals can outlive the node's process.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps = vec!["terminal".to_string()];
        if self.inner.tmux.is_some() {
            caps.push("terminal:tmux".into());
        }
        caps
    }

    /// The next output frame for the gateway. Cancel-safe.
    pub async fn next_frame(&self) -> Option<Frame> {
        self.inner.queue_rx.lock().await.recv().await
    }

    /// The connection to the gateway ended: its viewers are gone (they attach again), and
    /// its tunnels.
    pub fn disconnected(&self) {
        self.inner.tunnels.close_all();
        for t in lock(&self.inner.terms).values() {
            for (_, a) in lock(&t.attachments).drain() {
                a.cancel.cancel();
            }
        }
    }

    /// Every terminal, for `terminal:list`.
    pub fn list(&self) -> Frame {
        let mut terminals: Vec<TerminalState> = lock(&self.inner.terms)
            .values()
            .map(|t| t.state())
            .collect();
        terminals.sort_by(|a, b| a.terminal_id.cmp(&b.terminal_id));
        Frame::TerminalList { terminals }
    }

    fn changed(&self) {
        self.inner
            .dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.inner.wake.notify_one();
    }

    /// The list for the gateway when it changed since last taken (or `always`).
    pub fn take_list(&self, always: bool) -> Option<Frame> {
        let dirty = self
            .inner
            .dirty
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        (dirty || always).then(|| self.list())
    }

    fn get(&self, id: &str) -> Option<Arc<Term>> {
        lock(&self.inner.terms).get(id).cloned()
    }

    /// Takes up the tmux sessions a previous run of this node left. Run before the first
    /// connection: the gateway takes a terminal missing from the first list as lost.
    pub async fn adopt(&self) {
        let Some(bin) = &self.inner.tmux else {
            return;
        };
        for s in tmux::Session::existing(bin, &self.inner.tmux_dir).await {
            let id = s.id();
            tracing::info!(terminal = %id, "adopting a terminal from before the restart");
            let t = Term::new(&id, Some(s));
            t.adopted.store(true, std::sync::atomic::Ordering::Relaxed);
            lock(&self.inner.terms).insert(id, t);
        }
    }

    /// Watches the terminals' ports until `stop`; then ends the terminals the node holds
    /// itself (tmux ones stay).
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PORTS_EVERY);
        while crate::clock::next_tick(&mut tick, &stop).await {
            self.look_up_ports().await;
        }
        // Shutdown: terminals the node holds itself end with it; tmux ones stay.
        let terms: Vec<_> = lock(&self.inner.terms).values().cloned().collect();
        for t in terms.iter().filter(|t| t.tmux.is_none()) {
            t.stop.cancel();
        }
    }

    async fn look_up_ports(&self) {
        let terms: Vec<_> = lock(&self.inner.terms)
            .values()
            .filter(|t| t.exit.borrow().is_none())
            .cloned()
            .collect();
        let mut changed = false;
        for t in terms {
            let roots = match &t.tmux {
                Some(s) => s.pane_pids().await,
                None => vec![t.pid.load(std::sync::atomic::Ordering::Relaxed)],
            };
            let ports = tokio::task::spawn_blocking(move || ports::listening(&roots))
                .await
                .unwrap_or_default();
            let mut old = lock(&t.ports);
            if *old != ports {
                *old = ports;
                changed = true;
            }
        }
        if changed {
            self.changed();
        }
    }

    /// `terminal:open`: starts the terminal, or (adopted after a restart) starts streaming
    /// it with the secrets the gateway sent again. A second open of a running one is ignored.
    pub fn open(&self, open: TerminalOpen) -> Option<Frame> {
        if !valid_terminal_id(&open.terminal_id) {
            return Some(Frame::error(
                crate::protocol::ErrorCode::InvalidFrame,
                "terminal ids are 1-64 letters, digits, '_' or '-'",
            ));
        }
        let existing = self.get(&open.terminal_id);
        if let Some(t) = &existing {
            *lock(&t.binding) = open.binding_id.clone();
        }
        let this = self.clone();
        match existing {
            Some(t) if t.adopted.swap(false, std::sync::atomic::Ordering::Relaxed) => {
                tokio::spawn(async move {
                    let redactor = run::redactor_of(&open);
                    this.stream(t, None, redactor, open.cols, open.rows).await;
                });
            }
            Some(_) => {}
            None => {
                let tmux = match (&self.inner.tmux, open.persistent) {
                    (Some(bin), true) => {
                        match tmux::Session::at(
                            bin.clone(),
                            &self.inner.tmux_dir,
                            &open.terminal_id,
                        ) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                tracing::warn!(error = %e, "terminal without tmux");
                                None
                            }
                        }
                    }
                    _ => None,
                };
                let t = Term::new(&open.terminal_id, tmux);
                *lock(&t.binding) = open.binding_id.clone();
                lock(&self.inner.terms).insert(t.id.clone(), t.clone());
                tokio::spawn(async move {
                    if let Err(e) = this.start(&t, &open).await {
                        tracing::warn!(terminal = %t.id, error = %e, "terminal did not start");
                        t.append(format!("viber: {e}\r\n").as_bytes());
                        t.ended(Exit {
                            code: None,
                            error: Some(e),
                        });
                        this.changed();
                    }
                });
            }
        }
        None
    }

    /// `terminal:attach`: starts sending output to a viewer from `offset`, or moves the
    /// cursor of one already attached.
    pub fn attach(&self, terminal_id: String, attachment_id: String, offset: u64) -> Option<Frame> {
        let Some(t) = self.get(&terminal_id) else {
            return Some(Frame::TerminalExit {
                terminal_id,
                attachment_id,
                offset: None,
                code: None,
                error: Some("this node has no such terminal".into()),
            });
        };
        let mut attachments = lock(&t.attachments);
        if let Some(a) = attachments.get(&attachment_id) {
            a.cursor.send_replace(offset);
            return None;
        }
        let cursor = watch::Sender::new(offset);
        let cancel = CancellationToken::new();
        let pump = attach::attachment(
            t.clone(),
            attachment_id.clone(),
            cursor.subscribe(),
            cancel.clone(),
            self.inner.queue.clone(),
        );
        attachments.insert(attachment_id, Attachment { cursor, cancel });
        tokio::spawn(pump);
        None
    }

    pub fn detach(&self, terminal_id: &str, attachment_id: &str) {
        if let Some(t) = self.get(terminal_id) {
            if let Some(a) = lock(&t.attachments).remove(attachment_id) {
                a.cancel.cancel();
            }
        }
    }

    pub fn input(&self, terminal_id: &str, data: Bytes64) {
        if let Some(t) = self.get(terminal_id) {
            let _ = t.control.send(Control::Input(data.0));
        }
    }

    pub fn resize(&self, terminal_id: &str, cols: u16, rows: u16) {
        if let Some(t) = self.get(terminal_id) {
            let _ = t.control.send(Control::Resize(cols, rows));
        }
    }

    /// The shell of terminal `id` to type a thread's scripts into, when it lives in tmux on
    /// this node.
    pub fn typed_shell(&self, id: &str) -> Option<TypedShell> {
        let t = self.get(id)?;
        if t.exit.borrow().is_some() {
            return None;
        }
        Some(TypedShell {
            session: t.tmux.clone()?,
        })
    }

    /// `tunnel:open`: to a port a running terminal of `binding` listens on.
    pub fn tunnel_open(&self, tunnel_id: String, binding: &str, port: u16) -> Option<Frame> {
        let served = lock(&self.inner.terms).values().any(|t| {
            t.exit.borrow().is_none()
                && lock(&t.binding).as_deref() == Some(binding)
                && lock(&t.ports).contains(&port)
        });
        if !served {
            return Some(tunnel::close(
                tunnel_id,
                Some(format!(
                    "no terminal of binding {binding} listens on port {port}"
                )),
            ));
        }
        self.inner
            .tunnels
            .open(tunnel_id, port, self.inner.queue.clone())
    }

    pub fn tunnel_data(&self, tunnel_id: &str, data: Bytes64) {
        self.inner.tunnels.data(tunnel_id, data.0);
    }

    pub fn tunnel_close(&self, tunnel_id: &str) {
        self.inner.tunnels.close(tunnel_id);
    }

    /// `terminal:close`: ends the terminal (and its tmux session); forgets it once ended.
    pub fn close(&self, terminal_id: &str) {
        let Some(t) = self.get(terminal_id) else {
            return;
        };
        t.stop.cancel();
        let this = self.clone();
        tokio::spawn(async move {
            let mut exit = t.exit.subscribe();
            if t.adopted.load(std::sync::atomic::Ordering::Relaxed) {
                // Never streamed since the restart: nothing reads it to see the stop.
                if let Some(s) = &t.tmux {
                    s.kill().await;
                    s.forget();
                }
                t.ended(Exit {
                    code: None,
                    error: Some("closed".into()),
                });
            }
            let _ = exit.wait_for(|e| e.is_some()).await;
            // Viewers get the exit first; then the terminal is forgotten.
            tokio::time::sleep(Duration::from_secs(1)).await;
            this.forget(&t.id);
        });
    }
}
