//! One node connection from upgrade to goodbye: the handshake, registration, the loop that
//! reads frames, writes queued frames, pings and watches liveness, and the cleanup.
//!
//! Owns: the socket of one connection (nobody else writes to it; others queue
//! [`Outgoing`] through the registry) and its tracing span (`node`, `peer`), so log lines
//! inside need not repeat the node id. Must not touch: SQL other than through
//! `store::Store`, and anything under `node::`. The loop is the relay hot path: no per-frame
//! spans, and writes go out as they come (the listener sets TCP_NODELAY).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::gateway::error::ApiError;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::dispatch::handle_frame;
use super::handshake::{self, Admitted};
use super::registry::{NodeConn, Outgoing};
use crate::clock::now_ms;
use crate::gateway::{commands, envs, tasks, App};
use crate::protocol::codec::{self, CodecError, Incoming};
use crate::protocol::events::Event;
use crate::protocol::{close, ErrorCode, Frame, NodeStatus, ViberInfo};

/// Frames queued for one node before senders wait.
const OUTGOING_QUEUE: usize = 1024;
/// The gateway pings a node every this many heartbeat intervals.
const PING_EVERY: u32 = 2;
/// A node silent for this many heartbeat intervals is gone.
const SILENT_FOR: u32 = 3;

pub(super) type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
pub(super) type Stream = futures_util::stream::SplitStream<WebSocket>;

/// `GET /ws`: upgrades to a WebSocket with the protocol's size limit and serves it.
/// A request that is not a WebSocket upgrade gets a 4xx in the API's error shape.
#[utoipa::path(
    get,
    path = "/ws",
    operation_id = "nodeLink",
    tag = "system",
    security(()),
    description = "The node link: a WebSocket upgrade, then the control protocol (`challenge`, \
        `connect` with the node's token, ...). Nodes authenticate in the handshake.",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = crate::protocol::api::ErrorBody),
        (status = 503, description = "Too many connections are authenticating", body = crate::protocol::api::ErrorBody),
        crate::gateway::http::Errors,
    )
)]
pub async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rej) => {
            let code = match rej.status() {
                StatusCode::UPGRADE_REQUIRED => "upgrade_required",
                StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
                _ => "bad_request",
            };
            return ApiError::new(rej.status(), code, rej.body_text()).into_response();
        }
    };
    // Unauthenticated connections hold a place only until their handshake ends.
    let Some(place) = app.limits.handshake() else {
        tracing::warn!(%peer, "refused a WebSocket: too many handshakes in progress");
        return ApiError::unavailable("too many connections are authenticating; retry shortly")
            .into_response();
    };
    codec::limit_upgrade(ws).on_upgrade(move |socket| {
        let span = tracing::info_span!("node_link", %peer, node = tracing::field::Empty);
        serve(app, socket, peer.ip(), place).instrument(span)
    })
}

/// One connection, in the span of its peer (and of its node once admitted).
async fn serve(
    app: App,
    socket: WebSocket,
    peer: std::net::IpAddr,
    place: tokio::sync::OwnedSemaphorePermit,
) {
    let _tracked = app.connections.token();
    let (mut sink, mut stream) = socket.split();
    let admitted = handshake::admit(&app, &mut sink, &mut stream, peer, place).await;
    let Some(Admitted { node, connect }) = admitted else {
        return;
    };
    tracing::Span::current().record("node", tracing::field::display(&node.id));
    let (conn_id, rx) = register(&app, &node.id, &node.name, connect).await;
    let reason = run_connection(&app, &node.id, conn_id, &mut sink, &mut stream, rx).await;
    unregister(&app, &node.id, &node.name, conn_id, reason).await;
}

/// Puts an admitted node in the registry (closing the connection it replaces), records the
/// connection, and hands it the work that waited for it. Returns the connection id and the
/// queue its frames arrive on.
async fn register(
    app: &App,
    node_id: &str,
    name: &str,
    connect: crate::protocol::Connect,
) -> (u64, mpsc::Receiver<Outgoing>) {
    let now = now_ms();
    let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
    let conn_id = app.registry.next_conn_id();
    let info = ViberInfo {
        id: node_id.to_string(),
        name: name.to_string(),
        version: connect.version.clone(),
        platform: connect.platform.clone(),
        capabilities: connect.capabilities.clone(),
        running_tasks: Vec::new(),
    };
    let replaced = app.registry.insert(NodeConn {
        conn_id,
        tx,
        info,
        status: NodeStatus {
            version: connect.version.clone(),
            ..NodeStatus::default()
        },
        connected_at: now,
        last_seen: now,
        beats_unchecked: 0,
        clean_at: None,
    });
    if let Some(old) = replaced {
        let error = Frame::error(
            ErrorCode::Internal,
            "replaced by a newer connection of the same node",
        );
        let _ = old
            .tx
            .send(Outgoing::Close {
                code: close::REPLACED,
                error: Box::new(error),
            })
            .await;
    }
    let version = connect.version.clone();
    if let Err(e) = app
        .store
        .touch_node(
            node_id.to_string(),
            connect.version,
            connect.platform,
            connect.capabilities,
            now,
        )
        .await
    {
        tracing::error!(error = %e, "recording node connection");
    }
    tracing::info!(%name, %version, "node connected");
    app.events.publish_presence(Event::NodeOnline {
        node_id: node_id.to_string(),
        name: name.to_string(),
    });
    hand_over_waiting_work(app, node_id);
    (conn_id, rx)
}

/// Queues the tasks, prepares and commands that waited for the node, alongside its connection loop:
/// they go through the connection's bounded queue, which only the loop drains, so awaiting
/// them here first would stall (and time out) a node that has more waiting than the queue
/// holds. Tracked, so shutdown waits for it.
fn hand_over_waiting_work(app: &App, node_id: &str) {
    let (app, node_id) = (app.clone(), node_id.to_string());
    let tracked = app.connections.token();
    let work = async move {
        let _tracked = tracked;
        if let Err(e) = tasks::on_node_connected(&app, &node_id).await {
            tracing::error!(error = format!("{e:#}"), "dispatching waiting tasks");
        }
        if let Err(e) = envs::on_node_connected(&app, &node_id).await {
            tracing::error!(error = format!("{e:#}"), "preparing waiting bindings");
        }
        if let Err(e) = commands::on_node_connected(&app, &node_id).await {
            tracing::error!(
                error = format!("{e:#}"),
                "resending unacknowledged commands"
            );
        }
    };
    tokio::spawn(work.instrument(tracing::Span::current()));
}

/// Takes the connection out of the registry (unless a newer one replaced it) and records
/// when the node was last seen.
async fn unregister(app: &App, node_id: &str, name: &str, conn_id: u64, reason: &str) {
    let was_current = app.registry.remove(node_id, conn_id);
    if was_current {
        app.tasks.node_gone(node_id);
        app.terminals.node_gone(node_id);
        app.events.publish_presence(Event::NodeOffline {
            node_id: node_id.to_string(),
            name: name.to_string(),
            reason: reason.to_string(),
        });
        if let Err(e) = app
            .store
            .set_node_last_seen(node_id.to_string(), now_ms())
            .await
        {
            tracing::error!(error = %e, "recording node disconnect");
        }
    }
    tracing::info!(reason, "node disconnected");
}

/// Why a connection ended, as logged and published.
type End = &'static str;

/// The authenticated part of a connection. Returns why it ended.
async fn run_connection(
    app: &App,
    node_id: &str,
    conn_id: u64,
    sink: &mut Sink,
    stream: &mut Stream,
    mut rx: mpsc::Receiver<Outgoing>,
) -> End {
    let interval = app.config.heartbeat_interval;
    // The node hears from the gateway at least every two intervals (it gives up after three);
    // its own heartbeats say it is alive, so a ping every interval would only double the
    // traffic of an idle fleet.
    let every = interval * PING_EVERY;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut last_heard = Instant::now();
    // Re-armed only when it fires, not on every frame: the relay path stays free of timer work.
    let silence = tokio::time::sleep(interval * SILENT_FOR);
    tokio::pin!(silence);
    let acks = app.tasks.ack_box(node_id);
    // Made once and renewed only when they fire: each new one would take a lock to register
    // and another to unregister on every frame.
    let acked = acks.notify.notified();
    let shutdown = app.shutdown.cancelled();
    tokio::pin!(acked, shutdown);
    loop {
        let end = tokio::select! {
            _ = &mut acked => {
                acked.set(acks.notify.notified());
                send_all(sink, acks.take()).await
            }
            _ = &mut shutdown => {
                codec::close(sink, close::GOING_AWAY, "gateway shutting down").await;
                Some("gateway shutting down")
            }
            out = rx.recv() => on_outgoing(sink, out).await,
            _ = ping.tick() => send(sink, &Frame::Ping {}).await,
            _ = &mut silence => {
                let deadline = last_heard + interval * SILENT_FOR;
                if deadline <= Instant::now() {
                    codec::close(sink, close::TIMEOUT, "missed heartbeats").await;
                    Some("missed heartbeats")
                } else {
                    silence.as_mut().reset(deadline.into());
                    None
                }
            }
            incoming = codec::read(stream) => {
                last_heard = Instant::now();
                on_incoming(app, node_id, conn_id, sink, incoming).await
            }
        };
        if let Some(end) = end {
            return end;
        }
    }
}

async fn send(sink: &mut Sink, frame: &Frame) -> Option<End> {
    match codec::write(sink, frame).await {
        Ok(()) => None,
        Err(_) => Some("write failed"),
    }
}

async fn send_all(sink: &mut Sink, frames: Vec<Frame>) -> Option<End> {
    for frame in frames {
        if let Some(end) = send(sink, &frame).await {
            return Some(end);
        }
    }
    None
}

/// Something another part of the gateway queued for this node.
async fn on_outgoing(sink: &mut Sink, out: Option<Outgoing>) -> Option<End> {
    match out {
        Some(Outgoing::Frame(f)) => send(sink, &f).await,
        Some(Outgoing::Close { code, error }) => {
            let _ = codec::write(sink, &error).await;
            let reason = match &*error {
                Frame::Error(e) => e.message.clone(),
                _ => String::new(),
            };
            codec::close(sink, code, &reason).await;
            Some(if code == close::REVOKED {
                "revoked"
            } else {
                "replaced"
            })
        }
        None => Some("channel closed"),
    }
}

/// One read from the node: a frame to dispatch (and maybe answer), proof of life, or the end.
async fn on_incoming(
    app: &App,
    node_id: &str,
    conn_id: u64,
    sink: &mut Sink,
    incoming: Result<Incoming, CodecError>,
) -> Option<End> {
    let reply = match incoming {
        Ok(Incoming::Frame(frame)) => {
            app.metrics.frame(frame.type_name());
            handle_frame(app, node_id, conn_id, frame).await
        }
        Ok(Incoming::Control) => {
            app.registry.touch(node_id, conn_id, now_ms());
            None
        }
        Err(CodecError::Decode(e)) => {
            tracing::warn!(error = %e, "bad frame from node");
            Some(e.to_frame())
        }
        Err(CodecError::Binary) => Some(Frame::error(
            ErrorCode::BadFrame,
            "binary frames are not supported; send JSON text",
        )),
        Err(CodecError::TooBig) => {
            tracing::warn!("oversized frame; closing with 1009");
            codec::close_too_big(sink).await;
            return Some("frame too large");
        }
        Err(CodecError::Closed(_) | CodecError::Transport(_)) => return Some("closed by node"),
    };
    match reply {
        Some(reply) => send(sink, &reply).await,
        None => None,
    }
}
