//! Terminals on the gateway: the relay between viewers (the board, `viber shell`) on
//! `/api/terminals/:id/ws` and the node that runs the terminal, over the node's connection.
//!
//! Each viewer is an attachment on the node with its own cursor (see
//! `protocol::terminal`). The gateway passes a viewer only the output that continues
//! exactly where the viewer is (`expected`); anything else is a stale frame from before a
//! resync and is dropped. A viewer whose queue is full is never waited for: its frames are
//! dropped, and once it has written what it had, it asks the node to send again from where
//! it is. The node skips it forward with a marker if that is gone from the ring. So a slow
//! viewer costs neither the PTY nor the other viewers anything.
//!
//! Owns: the viewers, the terminal records' life cycle from the node's `terminal:list`.
//! Must not touch: the socket of a node (frames go through the registry's queue), PTYs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use crate::clock::now_ms;
use crate::gateway::link::Outgoing;
use crate::gateway::App;
use crate::protocol::api::ViewerEvent;
use crate::protocol::terminal::{Bytes64, TerminalOpen, TerminalState};
use crate::protocol::Frame;
use crate::store::TerminalRecord;

/// Events queued for one viewer before it counts as slow.
const VIEWER_QUEUE: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Viewer {
    terminal_id: String,
    node_id: String,
    tx: mpsc::Sender<ViewerEvent>,
    /// The offset of the next byte this viewer needs.
    expected: u64,
    /// Frames were dropped: waiting to resync from `expected`.
    lagging: bool,
    /// The node connection it was attached on (0: none yet).
    conn: u64,
    /// A resync was asked for and nothing fitted since: frames ahead of the viewer are from
    /// before it.
    resync_sent: bool,
    /// The node said the terminal ended: (code, error), sent once the queue is written.
    exit: Option<(Option<i32>, Option<String>)>,
    wake: Arc<Notify>,
}

/// What a viewer's socket task is told to do besides writing its queue.
pub enum Wake {
    /// Ask the node for the output from this offset (after dropping frames).
    Resync(u64),
    /// The terminal ended; every byte was sent.
    Exit(Option<i32>, Option<String>),
    Nothing,
}

/// Bytes a node sent on a tunnel; None: it closed.
type TunnelTx = mpsc::Sender<Option<Vec<u8>>>;
/// Frames of one tunnel queued before it counts as stuck and is closed.
const TUNNEL_QUEUE: usize = 64;

#[derive(Default)]
pub struct Terminals {
    viewers: Mutex<HashMap<String, Viewer>>,
    /// Open preview tunnels: their node and the queue into the proxy's side.
    tunnels: Mutex<HashMap<String, (String, TunnelTx)>>,
    /// Tunnels dropped for not keeping up, to close on their node.
    closing_tunnels: Mutex<Vec<(String, String)>>,
    /// Listening ports by terminal, as the nodes last reported.
    ports: Mutex<HashMap<String, Vec<u16>>>,
}

/// A viewer's handle: removing it detaches.
pub struct ViewerHandle {
    pub attachment_id: String,
    pub rx: mpsc::Receiver<ViewerEvent>,
    pub wake: Arc<Notify>,
}

impl Terminals {
    /// Registers a viewer of `terminal` on `node` that has everything before `offset`.
    pub fn add_viewer(&self, terminal_id: &str, node_id: &str, offset: u64) -> ViewerHandle {
        let (tx, rx) = mpsc::channel(VIEWER_QUEUE);
        let wake = Arc::new(Notify::new());
        let attachment_id = crate::crypto::new_id("att");
        lock(&self.viewers).insert(
            attachment_id.clone(),
            Viewer {
                terminal_id: terminal_id.to_string(),
                node_id: node_id.to_string(),
                tx,
                expected: offset,
                lagging: false,
                conn: 0,
                resync_sent: false,
                exit: None,
                wake: wake.clone(),
            },
        );
        ViewerHandle {
            attachment_id,
            rx,
            wake,
        }
    }

    pub fn remove_viewer(&self, attachment_id: &str) {
        lock(&self.viewers).remove(attachment_id);
    }

    /// What the viewer should do now that its queue is written.
    pub fn woken(&self, attachment_id: &str) -> Wake {
        let mut viewers = lock(&self.viewers);
        let Some(v) = viewers.get_mut(attachment_id) else {
            return Wake::Nothing;
        };
        if v.lagging {
            v.lagging = false;
            v.resync_sent = true;
            return Wake::Resync(v.expected);
        }
        match v.exit.take() {
            Some((code, error)) => Wake::Exit(code, error),
            None => Wake::Nothing,
        }
    }

    /// A node's `terminal:output`: to its viewer, if it continues where the viewer is.
    pub fn output(
        &self,
        node_id: &str,
        attachment_id: &str,
        offset: u64,
        data: Bytes64,
        skipped_from: Option<u64>,
    ) {
        let mut viewers = lock(&self.viewers);
        let Some(v) = viewers.get_mut(attachment_id) else {
            return;
        };
        if v.node_id != node_id || v.lagging {
            return;
        }
        let (mut offset, mut data) = (offset, data);
        let end = offset.saturating_add(data.0.len() as u64);
        match skipped_from {
            Some(from) if from == v.expected => {}
            // From before a resync, or behind what the viewer has: already handled.
            Some(from) if from < v.expected => return,
            None if offset <= v.expected && v.expected < end => {
                // Overlaps what the viewer has (sent again after a reconnect): the new part.
                data.0.drain(..(v.expected - offset) as usize);
                offset = v.expected;
            }
            None if end <= v.expected => return,
            // Ahead of the viewer: bytes were lost on the way (a frame of an attachment that
            // ended with a link). Ask the node again, once until something fits.
            _ => {
                if !v.resync_sent {
                    v.lagging = true;
                    v.wake.notify_one();
                }
                return;
            }
        }
        v.resync_sent = false;
        let next = offset.saturating_add(data.0.len() as u64);
        let mut events = Vec::with_capacity(2);
        if let Some(from) = skipped_from {
            events.push(ViewerEvent::Skipped { from, to: offset });
        }
        if !data.0.is_empty() {
            events.push(ViewerEvent::Output { offset, data });
        }
        if v.tx.capacity() < events.len() {
            v.lagging = true;
            v.wake.notify_one();
            return;
        }
        for e in events {
            // Capacity was checked under the lock; only this function sends.
            let _ = v.tx.try_send(e);
        }
        v.expected = next;
    }

    /// A node's `terminal:exit` for one viewer: taken when the viewer has everything up to
    /// the offset it was sent at (else the node sends it again after the resync in flight).
    pub fn exit(
        &self,
        node_id: &str,
        attachment_id: &str,
        offset: Option<u64>,
        code: Option<i32>,
        error: Option<String>,
    ) {
        let mut viewers = lock(&self.viewers);
        if let Some(v) = viewers.get_mut(attachment_id) {
            let caught_up = !v.lagging && offset.is_none_or(|o| o == v.expected);
            if v.node_id == node_id && caught_up {
                v.exit = Some((code, error));
                v.wake.notify_one();
            }
        }
    }

    /// Ends every viewer of a terminal that is gone (their sockets get the error).
    pub fn end_viewers(&self, terminal_id: &str, why: &str) {
        for v in lock(&self.viewers)
            .values_mut()
            .filter(|v| v.terminal_id == terminal_id)
        {
            v.exit = Some((None, Some(why.to_string())));
            v.wake.notify_one();
        }
    }

    /// (attachment, terminal, expected offset) of every viewer of `node_id`'s terminals not
    /// attached on its connection `conn` yet; they count as attached on it from now on.
    fn unattached(&self, node_id: &str, conn: u64) -> Vec<(String, String, u64)> {
        lock(&self.viewers)
            .iter_mut()
            .filter(|(_, v)| v.node_id == node_id && v.conn != conn)
            .map(|(a, v)| {
                v.conn = conn;
                (a.clone(), v.terminal_id.clone(), v.expected)
            })
            .collect()
    }

    /// Marks a viewer attached on connection `conn`; false if it already was.
    pub fn attached_on(&self, attachment_id: &str, conn: u64) -> bool {
        let mut viewers = lock(&self.viewers);
        match viewers.get_mut(attachment_id) {
            Some(v) if v.conn != conn => {
                v.conn = conn;
                true
            }
            _ => false,
        }
    }

    pub fn ports(&self, terminal_id: &str) -> Vec<u16> {
        lock(&self.ports)
            .get(terminal_id)
            .cloned()
            .unwrap_or_default()
    }
}

impl Terminals {
    /// A node's `tunnel:data`: to the proxy's side of the tunnel. A proxy that does not keep
    /// up loses its tunnel rather than holding up the node's connection.
    pub fn tunnel_data(&self, node_id: &str, tunnel_id: &str, data: Bytes64) {
        let mut tunnels = lock(&self.tunnels);
        let Some((node, tx)) = tunnels.get(tunnel_id) else {
            return;
        };
        if node != node_id {
            return;
        }
        if tx.try_send(Some(data.0)).is_err() {
            // The proxy's side does not keep up: the tunnel ends on both sides.
            tunnels.remove(tunnel_id);
            self.closing_tunnels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((node_id.to_string(), tunnel_id.to_string()));
        }
    }

    /// A node's connection ended: its tunnels end (their preview requests fail instead of
    /// waiting for it).
    pub fn node_gone(&self, node_id: &str) {
        lock(&self.tunnels).retain(|_, (n, _)| n != node_id);
    }

    /// Tunnels the gateway dropped, whose node must be told: (node, tunnel).
    pub fn take_closing_tunnels(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *lock(&self.closing_tunnels))
    }

    /// A node's `tunnel:close`.
    pub fn tunnel_closed(&self, node_id: &str, tunnel_id: &str) {
        let mut tunnels = lock(&self.tunnels);
        if tunnels.get(tunnel_id).is_some_and(|(n, _)| n == node_id) {
            if let Some((_, tx)) = tunnels.remove(tunnel_id) {
                let _ = tx.try_send(None);
            }
        }
    }
}

/// Opens a tunnel to `port` on `node_id` for a terminal of `binding_id`: one end of an
/// in-memory pipe whose other end is pumped through `tunnel:*` frames.
pub async fn open_tunnel(
    app: &App,
    node_id: &str,
    binding_id: &str,
    port: u16,
) -> Option<tokio::io::DuplexStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let tunnel_id = crate::crypto::new_id("tun");
    let (tx, mut rx) = mpsc::channel(TUNNEL_QUEUE);
    lock(&app.terminals.tunnels).insert(tunnel_id.clone(), (node_id.to_string(), tx));
    let open = Frame::TunnelOpen {
        tunnel_id: tunnel_id.clone(),
        binding_id: binding_id.to_string(),
        port,
    };
    if !send(app, node_id, open).await {
        lock(&app.terminals.tunnels).remove(&tunnel_id);
        return None;
    }
    let (app, node_id) = (app.clone(), node_id.to_string());
    tokio::spawn(async move {
        let (mut read, mut write) = tokio::io::split(ours);
        let mut buf = vec![0u8; crate::protocol::terminal::MAX_OUTPUT_CHUNK];
        let node_closed = loop {
            tokio::select! {
                n = read.read(&mut buf) => match n {
                    Ok(n) if n > 0 => {
                        let frame = Frame::TunnelData {
                            tunnel_id: tunnel_id.clone(),
                            data: Bytes64(buf[..n].to_vec()),
                        };
                        if !send(&app, &node_id, frame).await {
                            break true;
                        }
                    }
                    _ => break false,
                },
                data = rx.recv() => match data {
                    Some(Some(bytes)) => {
                        if write.write_all(&bytes).await.is_err() {
                            break false;
                        }
                    }
                    Some(None) | None => break true,
                },
            }
        };
        let _ = write.shutdown().await;
        lock(&app.terminals.tunnels).remove(&tunnel_id);
        if !node_closed {
            let frame = Frame::TunnelClose {
                tunnel_id,
                error: None,
            };
            send(&app, &node_id, frame).await;
        }
    });
    Some(theirs)
}

/// Sends a frame to a node if it is online; false when it is not.
pub async fn send(app: &App, node_id: &str, frame: Frame) -> bool {
    match app.registry.sender(node_id) {
        Some(tx) => tx.send(Outgoing::frame(frame)).await.is_ok(),
        None => false,
    }
}

/// The `terminal:open` for a terminal record: the binding's working dir and environment,
/// with the environment's runtime secrets (unsealed only here).
pub async fn open_frame(
    app: &App,
    rec: &TerminalRecord,
    cols: u16,
    rows: u16,
    echo: bool,
) -> crate::gateway::error::ApiResult<Frame> {
    let env = app
        .store
        .environment(rec.environment_id.clone())
        .await?
        .ok_or_else(|| crate::gateway::error::ApiError::not_found("the environment is gone"))?;
    let binding = app
        .store
        .binding(rec.binding_id.clone())
        .await?
        .ok_or_else(|| crate::gateway::error::ApiError::not_found("the binding is gone"))?;
    let options =
        crate::gateway::envs::run_options(app, &env, &binding, rec.thread_id.as_deref()).await?;
    let secrets = crate::gateway::envs::unseal_secrets(app, &env.id, true).await?;
    Ok(Frame::TerminalOpen(Box::new(TerminalOpen {
        terminal_id: rec.id.clone(),
        binding_id: Some(rec.binding_id.clone()),
        thread_id: rec.thread_id.clone(),
        command: rec.command.clone(),
        cols,
        rows,
        persistent: rec.persistent,
        echo,
        options,
        secrets,
    })))
}

/// A node's `terminal:list`: records the ends it reports, ends what the gateway no longer
/// knows, opens again (with secrets) what it adopted after a restart, and attaches the
/// viewers that wait for it.
pub async fn listed(
    app: &App,
    node_id: &str,
    conn_id: u64,
    terminals: Vec<TerminalState>,
) -> anyhow::Result<()> {
    let now = now_ms();
    let reported: HashMap<&str, &TerminalState> = terminals
        .iter()
        .map(|t| (t.terminal_id.as_str(), t))
        .collect();
    // What the gateway has as running on this node but the node does not hold is lost.
    for rec in app
        .store
        .running_terminals_of_node(node_id.to_string())
        .await?
    {
        if !reported.contains_key(rec.id.as_str()) {
            app.store
                .end_terminal(
                    rec.id.clone(),
                    "lost",
                    None,
                    Some("the node no longer has it".into()),
                    now,
                )
                .await?;
            lock(&app.terminals.ports).remove(&rec.id);
            app.terminals
                .end_viewers(&rec.id, "the node no longer has this terminal");
        }
    }
    for t in &terminals {
        let rec = app.store.terminal(t.terminal_id.clone()).await?;
        match rec {
            Some(rec) if rec.node_id == node_id && rec.status == "running" => {
                if !t.running {
                    lock(&app.terminals.ports).remove(&rec.id);
                    app.store
                        .end_terminal(rec.id.clone(), "exited", t.exit_code, t.error.clone(), now)
                        .await?;
                    continue;
                }
                lock(&app.terminals.ports).insert(rec.id.clone(), t.ports.clone());
                if t.adopted {
                    // Its environment or binding may be gone since: then it ends.
                    match open_frame(app, &rec, 80, 24, true).await {
                        Ok(frame) => {
                            send(app, node_id, frame).await;
                        }
                        Err(e) => {
                            tracing::warn!(terminal = %rec.id, error = %e.message, "ending an adopted terminal");
                            app.store
                                .end_terminal(rec.id.clone(), "exited", None, Some(e.message), now)
                                .await?;
                            let close = Frame::TerminalClose {
                                terminal_id: rec.id.clone(),
                            };
                            send(app, node_id, close).await;
                        }
                    }
                }
            }
            // Closed while the node was away, deleted, or never ours: end it there.
            _ if t.running => {
                send(
                    app,
                    node_id,
                    Frame::TerminalClose {
                        terminal_id: t.terminal_id.clone(),
                    },
                )
                .await;
            }
            _ => {}
        }
    }
    // Viewers that waited for the node (it reconnected, or the gateway restarted).
    for (attachment_id, terminal_id, offset) in app.terminals.unattached(node_id, conn_id) {
        if reported.contains_key(terminal_id.as_str()) {
            send(
                app,
                node_id,
                Frame::TerminalAttach {
                    terminal_id,
                    attachment_id,
                    offset,
                },
            )
            .await;
        }
    }
    Ok(())
}

/// Ends a running terminal: its node closes it (and its tmux session); viewers get the exit
/// from the node, or now when the node is away (it closes the terminal when it reports it).
pub async fn close(app: &App, rec: &TerminalRecord, why: &str) -> anyhow::Result<()> {
    if rec.status != "running" {
        return Ok(());
    }
    let frame = Frame::TerminalClose {
        terminal_id: rec.id.clone(),
    };
    if !send(app, &rec.node_id, frame).await {
        app.terminals.end_viewers(&rec.id, why);
    }
    app.store
        .end_terminal(rec.id.clone(), "exited", None, Some(why.into()), now_ms())
        .await?;
    lock(&app.terminals.ports).remove(&rec.id);
    Ok(())
}

/// Closes a thread's terminals (it was archived).
pub async fn close_thread(app: &App, thread_id: &str) -> anyhow::Result<()> {
    for rec in app
        .store
        .list_terminals(None, Some(thread_id.to_string()), false)
        .await?
    {
        close(app, &rec, "the thread was archived").await?;
    }
    Ok(())
}

/// The capability of nodes whose terminals live in tmux.
pub const TMUX_CAPABILITY: &str = "terminal:tmux";

/// The terminal a thread's `shell` and `llm` tasks type their scripts into: the thread's
/// running shell on the task's binding, opened now when there is none. None when the
/// environment turned it off (`metadata.terminalMode: "off"`), limits the network or runs in
/// a container, or the node has no tmux.
pub async fn thread_shell(
    app: &App,
    env: &crate::store::EnvironmentRecord,
    binding: &crate::store::BindingRecord,
    thread_id: &str,
) -> anyhow::Result<Option<String>> {
    let mode = serde_json::from_str::<serde_json::Value>(&env.metadata)
        .ok()
        .and_then(|m| m["terminalMode"].as_str().map(str::to_string));
    if mode.as_deref().is_some_and(|m| m != "tmux") {
        return Ok(None);
    }
    // A terminal cannot ask the operator about a host (allowlist) and does not run in a
    // container: such tasks run apart, as before.
    if env.network_access != crate::protocol::NetworkAccess::On
        || crate::gateway::envs::input::container_of(env, &binding.id).is_some()
    {
        return Ok(None);
    }
    let has_tmux = app
        .registry
        .presence(&binding.node_id)
        .is_some_and(|p| p.info.capabilities.iter().any(|c| c == TMUX_CAPABILITY));
    if !has_tmux {
        return Ok(None);
    }
    let running = app
        .store
        .list_terminals(Some(binding.id.clone()), Some(thread_id.to_string()), false)
        .await?;
    if let Some(t) = running
        .iter()
        .find(|t| t.command.is_empty() && t.persistent && t.node_id == binding.node_id)
    {
        return Ok(Some(t.id.clone()));
    }
    let rec = TerminalRecord {
        id: crate::crypto::new_id("term"),
        node_id: binding.node_id.clone(),
        environment_id: env.id.clone(),
        binding_id: binding.id.clone(),
        thread_id: Some(thread_id.to_string()),
        command: Vec::new(),
        persistent: true,
        status: "running".into(),
        exit_code: None,
        error: None,
        created_at: now_ms(),
        ended_at: None,
    };
    let frame = open_frame(app, &rec, 120, 32, true)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    app.store.insert_terminal(rec.clone()).await?;
    if !send(app, &rec.node_id, frame).await {
        return Ok(None);
    }
    Ok(Some(rec.id))
}
