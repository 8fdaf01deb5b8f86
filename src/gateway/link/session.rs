//! `/ws`: the endpoint nodes dial. Challenge-response handshake, then one loop per
//! connection that reads frames, writes queued frames, pings, and watches liveness.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;

use super::registry::{NodeConn, Outgoing};
use super::App;
use crate::clock::now_ms;
use crate::crypto;
use crate::protocol::{
    close, signing_payload, Connect, ErrorCode, Frame, HelloOk, NodeStatus, Role, ViberInfo,
    MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use crate::store::{EnrollRefusal, NodeRecord};

/// Time a client has to answer the challenge.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one node before senders wait.
const OUTGOING_QUEUE: usize = 1024;

pub const ENROLLMENT_PREFIX: &str = "vbr_enr_";
pub const NODE_TOKEN_PREFIX: &str = "vbr_node_";

pub async fn upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| serve(app, socket, peer))
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;
type Stream = futures_util::stream::SplitStream<WebSocket>;

async fn send(sink: &mut Sink, frame: &Frame) -> Result<(), axum::Error> {
    sink.send(Message::Text(Utf8Bytes::from(frame.encode())))
        .await
}

async fn close_with(sink: &mut Sink, code: u16, reason: &str) {
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.chars().take(120).collect::<String>()),
        })))
        .await;
    let _ = sink.close().await;
}

/// Sends a typed refusal and closes with 1008.
async fn refuse(sink: &mut Sink, peer: SocketAddr, code: ErrorCode, message: String) {
    tracing::warn!(%peer, ?code, %message, "node refused");
    let _ = send(sink, &Frame::error(code, message.clone())).await;
    close_with(sink, close::POLICY, &message).await;
}

/// What one read from the socket produced.
enum Incoming {
    Text(Utf8Bytes),
    /// A message over the size limit.
    TooBig,
    /// Binary data, which the protocol does not use.
    Binary,
    /// Ping/pong at the WebSocket level: proof of life, nothing to do.
    Control,
    Closed,
}

async fn next_incoming(stream: &mut Stream) -> Incoming {
    match stream.next().await {
        None | Some(Ok(Message::Close(_))) => Incoming::Closed,
        Some(Ok(Message::Text(t))) => Incoming::Text(t),
        Some(Ok(Message::Binary(_))) => Incoming::Binary,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
        Some(Err(e)) => {
            let inner = e.into_inner();
            match inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
                Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => Incoming::TooBig,
                _ => Incoming::Closed,
            }
        }
    }
}

async fn serve(app: App, socket: WebSocket, peer: SocketAddr) {
    let _tracked = app.connections.token();
    let (mut sink, mut stream) = socket.split();
    let nonce = crypto::b64(&crypto::random_bytes(32));
    let challenge = Frame::Challenge {
        nonce: nonce.clone(),
        protocol: PROTOCOL_VERSION,
        server_version: crate::VERSION.to_string(),
    };
    if send(&mut sink, &challenge).await.is_err() {
        return;
    }

    let first = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, next_incoming(&mut stream)) => r,
        _ = app.shutdown.cancelled() => return close_with(&mut sink, close::GOING_AWAY, "gateway shutting down").await,
    };
    let connect = match first {
        Err(_) => {
            return refuse(
                &mut sink,
                peer,
                ErrorCode::HandshakeTimeout,
                format!("no connect frame within {} s", HANDSHAKE_TIMEOUT.as_secs()),
            )
            .await
        }
        Ok(Incoming::Closed) => return,
        Ok(Incoming::TooBig) => {
            tracing::warn!(%peer, "oversized frame before handshake");
            return close_with(&mut sink, close::TOO_BIG, "frame too large").await;
        }
        Ok(Incoming::Binary | Incoming::Control) => {
            return refuse(
                &mut sink,
                peer,
                ErrorCode::NotAuthenticated,
                "expected a connect frame".into(),
            )
            .await
        }
        Ok(Incoming::Text(text)) => match Frame::decode(&text) {
            Ok(Frame::Connect(c)) => c,
            Ok(other) => {
                return refuse(
                    &mut sink,
                    peer,
                    ErrorCode::NotAuthenticated,
                    format!(
                        "expected a connect frame, got {:?} before the handshake",
                        other.type_name()
                    ),
                )
                .await
            }
            Err(e) => return refuse(&mut sink, peer, e.code(), e.to_string()).await,
        },
    };

    let (node, issued_token) = match authenticate(&app, &connect, &nonce).await {
        Ok(ok) => ok,
        Err((code, message)) => return refuse(&mut sink, peer, code, message).await,
    };

    let hello = Frame::HelloOk(HelloOk {
        protocol: PROTOCOL_VERSION,
        server_version: crate::VERSION.to_string(),
        node_id: node.id.clone(),
        heartbeat_interval_ms: app.config.heartbeat_interval.as_millis() as u64,
        node_token: issued_token,
    });
    if send(&mut sink, &hello).await.is_err() {
        return;
    }

    let now = now_ms();
    let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
    let conn_id = app.registry.next_conn_id();
    let info = ViberInfo {
        id: node.id.clone(),
        name: node.name.clone(),
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
    });
    if let Some(old) = replaced {
        let _ = old
            .tx
            .send(Outgoing::Close {
                code: close::REPLACED,
                error: Frame::error(
                    ErrorCode::Internal,
                    "replaced by a newer connection of the same node",
                ),
            })
            .await;
    }
    if let Err(e) = app
        .store
        .touch_node(
            node.id.clone(),
            connect.version.clone(),
            connect.platform.clone(),
            connect.capabilities.clone(),
            now,
        )
        .await
    {
        tracing::error!(error = %e, "recording node connection");
    }
    tracing::info!(%peer, node = %node.id, name = %node.name, version = %connect.version, "node connected");
    app.events.publish(
        "node.online",
        serde_json::json!({"nodeId": node.id, "name": node.name}),
    );
    if let Err(e) = super::tasks::on_node_connected(&app, &node.id).await {
        tracing::error!(error = format!("{e:#}"), "dispatching waiting tasks");
    }
    if let Err(e) = super::environments::on_node_connected(&app, &node.id).await {
        tracing::error!(error = format!("{e:#}"), "preparing waiting bindings");
    }

    let reason = run_connection(&app, &node.id, conn_id, &mut sink, &mut stream, rx).await;

    let was_current = app.registry.remove(&node.id, conn_id);
    if was_current {
        app.events.publish(
            "node.offline",
            serde_json::json!({"nodeId": node.id, "name": node.name, "reason": reason}),
        );
        if let Err(e) = app
            .store
            .set_node_last_seen(node.id.clone(), now_ms())
            .await
        {
            tracing::error!(error = %e, "recording node disconnect");
        }
    }
    tracing::info!(%peer, node = %node.id, reason, "node disconnected");
}

/// The authenticated part of a connection. Returns why it ended.
async fn run_connection(
    app: &App,
    node_id: &str,
    conn_id: u64,
    sink: &mut Sink,
    stream: &mut Stream,
    mut rx: mpsc::Receiver<Outgoing>,
) -> &'static str {
    let interval = app.config.heartbeat_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let mut last_heard = Instant::now();
    let acks = app.tasks.ack_box(node_id);
    loop {
        tokio::select! {
            _ = acks.notify.notified() => {
                for ack in acks.take() {
                    if send(sink, &ack).await.is_err() {
                        return "write failed";
                    }
                }
            }
            _ = app.shutdown.cancelled() => {
                close_with(sink, close::GOING_AWAY, "gateway shutting down").await;
                return "gateway shutting down";
            }
            out = rx.recv() => match out {
                Some(Outgoing::Frame(f)) => {
                    if send(sink, &f).await.is_err() {
                        return "write failed";
                    }
                }
                Some(Outgoing::Close { code, error }) => {
                    let _ = send(sink, &error).await;
                    let reason = match &error { Frame::Error(e) => e.message.clone(), _ => String::new() };
                    close_with(sink, code, &reason).await;
                    return if code == close::REVOKED { "revoked" } else { "replaced" };
                }
                None => return "channel closed",
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > interval * 3 {
                    close_with(sink, close::TIMEOUT, "missed heartbeats").await;
                    return "missed heartbeats";
                }
                if send(sink, &Frame::Ping {}).await.is_err() {
                    return "write failed";
                }
            }
            incoming = next_incoming(stream) => {
                last_heard = Instant::now();
                match incoming {
                    Incoming::Closed => return "closed by node",
                    Incoming::TooBig => {
                        tracing::warn!(node = %node_id, "oversized frame; closing with 1009");
                        close_with(sink, close::TOO_BIG, "frame too large").await;
                        return "frame too large";
                    }
                    Incoming::Control => app.registry.touch(node_id, conn_id, now_ms()),
                    Incoming::Binary => {
                        let e = Frame::error(ErrorCode::BadFrame, "binary frames are not supported; send JSON text");
                        if send(sink, &e).await.is_err() { return "write failed"; }
                    }
                    Incoming::Text(text) => {
                        let reply = match Frame::decode(&text) {
                            Ok(frame) => handle_frame(app, node_id, conn_id, frame).await,
                            Err(e) => {
                                tracing::warn!(node = %node_id, error = %e, "bad frame from node");
                                Some(e.to_frame())
                            }
                        };
                        if let Some(reply) = reply {
                            if send(sink, &reply).await.is_err() { return "write failed"; }
                        }
                    }
                }
            }
        }
    }
}

/// Handles one frame from an authenticated node; returns a frame to answer with, if any.
async fn handle_frame(app: &App, node_id: &str, conn_id: u64, frame: Frame) -> Option<Frame> {
    match frame {
        Frame::Heartbeat { status } => {
            let known = status.running_tasks.clone();
            app.registry
                .record_heartbeat(node_id, conn_id, status, now_ms());
            if let Err(e) = super::tasks::reconcile(app, node_id, &known).await {
                tracing::error!(error = format!("{e:#}"), "reconciling node tasks");
            }
            None
        }
        frame @ (Frame::TaskStarted { .. }
        | Frame::TaskStreamChunk { .. }
        | Frame::TaskCompleted { .. }
        | Frame::TaskError { .. }) => app.tasks.ingest(&app.store, node_id, frame).await,
        Frame::EnvironmentStatus(state) => {
            env_result(super::environments::apply_state(app, node_id, state).await)
        }
        Frame::EnvironmentSync { bindings } => {
            // Apply every state; one the gateway cannot take (its environment was deleted,
            // say) must not keep the others from being recorded.
            for state in bindings {
                let id = state.binding_id.clone();
                if let Some(Frame::Error(e)) =
                    env_result(super::environments::apply_state(app, node_id, state).await)
                {
                    tracing::warn!(node = %node_id, binding = %id, message = %e.message, "ignored a synced binding state");
                }
            }
            None
        }
        Frame::EnvironmentLog { binding_id, text } => {
            match app.store.binding(binding_id.clone()).await {
                Ok(Some(b)) if b.node_id == node_id => {
                    match app.store.append_binding_log(binding_id.clone(), text.clone(), now_ms()).await {
                        Ok(seq) => app.events.publish(
                            "binding.log",
                            serde_json::json!({"bindingId": binding_id, "environmentId": b.environment_id, "seq": seq, "text": text}),
                        ),
                        Err(e) => tracing::error!(error = format!("{e:#}"), "storing setup log"),
                    }
                    None
                }
                Ok(_) => Some(Frame::error(
                    ErrorCode::NotOwner,
                    format!("binding {binding_id} does not belong to this node"),
                )),
                Err(e) => env_result(Err(e)),
            }
        }
        Frame::ConfigAck(ack) => {
            let state = serde_json::to_string(&ack).unwrap_or_default();
            if let Err(e) = app
                .store
                .set_node_config_state(node_id.to_string(), state)
                .await
            {
                tracing::error!(error = format!("{e:#}"), "storing config ack");
            }
            app.events.publish(
                "node.config",
                serde_json::json!({"nodeId": node_id, "config": ack}),
            );
            None
        }
        Frame::TaskProgress { task_id, event } => {
            app.events.publish(
                "task.progress",
                serde_json::json!({"taskId": task_id, "nodeId": node_id, "event": event}),
            );
            None
        }
        Frame::Ping {} => Some(Frame::Pong {}),
        Frame::Pong {} => {
            app.registry.touch(node_id, conn_id, now_ms());
            None
        }
        Frame::Error(e) => {
            tracing::warn!(node = %node_id, code = ?e.code, message = %e.message, "node reported an error");
            None
        }
        Frame::Connect(_) => Some(Frame::error(
            ErrorCode::InvalidFrame,
            "already authenticated on this connection",
        )),
        other => Some(Frame::error(
            ErrorCode::InvalidFrame,
            format!(
                "{:?} frames are not accepted from a node",
                other.type_name()
            ),
        )),
    }
}

fn env_result(r: anyhow::Result<Option<Frame>>) -> Option<Frame> {
    r.unwrap_or_else(|e| {
        tracing::error!(error = format!("{e:#}"), "handling environment frame");
        Some(Frame::error(ErrorCode::Internal, "gateway storage error"))
    })
}

type Refusal = (ErrorCode, String);

/// Verifies a `connect` frame against the challenge `nonce`. On success returns the node and,
/// when an enrollment token was redeemed, the node token issued to it.
async fn authenticate(
    app: &App,
    c: &Connect,
    nonce: &str,
) -> Result<(NodeRecord, Option<String>), Refusal> {
    if c.role != Role::Node {
        return Err((
            ErrorCode::UnsupportedRole,
            "only the node role may connect to /ws".into(),
        ));
    }
    if !(c.min_protocol..=c.max_protocol).contains(&PROTOCOL_VERSION) {
        return Err((
            ErrorCode::ProtocolMismatch,
            format!(
                "gateway speaks protocol {PROTOCOL_VERSION}, node supports {}..={}; upgrade the older side",
                c.min_protocol, c.max_protocol
            ),
        ));
    }
    if c.nonce != nonce {
        return Err((
            ErrorCode::BadNonce,
            "connect answers a different challenge (stale or replayed)".into(),
        ));
    }
    let Some(key) = crypto::decode_public_key(&c.public_key) else {
        return Err((
            ErrorCode::BadSignature,
            "public key is not an Ed25519 key".into(),
        ));
    };
    if crypto::node_id_for(&key) != c.node_id {
        return Err((
            ErrorCode::BadSignature,
            "node id is not the fingerprint of the public key".into(),
        ));
    }
    if !crypto::verify_signature(
        &c.public_key,
        &signing_payload(nonce, &c.node_id),
        &c.signature,
    ) {
        return Err((ErrorCode::BadSignature, "signature does not verify".into()));
    }
    let internal = |e: anyhow::Error| {
        tracing::error!(error = format!("{e:#}"), "authenticating node");
        (ErrorCode::Internal, "gateway storage error".to_string())
    };
    let token_hash = crypto::sha256_hex(c.token.as_bytes());

    if c.token.starts_with(ENROLLMENT_PREFIX) {
        let node_token = crypto::new_token(NODE_TOKEN_PREFIX);
        let record = NodeRecord {
            id: c.node_id.clone(),
            name: c.name.clone(),
            public_key: c.public_key.clone(),
            token_hash: crypto::sha256_hex(node_token.as_bytes()),
            version: c.version.clone(),
            platform: c.platform.clone(),
            capabilities: c.capabilities.clone(),
            created_at: now_ms(),
            last_seen_at: None,
            revoked_at: None,
            config_state: None,
        };
        return match app
            .store
            .redeem_enrollment(token_hash, record, now_ms())
            .await
            .map_err(internal)?
        {
            Ok(node) => {
                tracing::info!(node = %node.id, name = %node.name, "node enrolled");
                Ok((node, Some(node_token)))
            }
            Err(EnrollRefusal::Unknown) => {
                Err((ErrorCode::BadToken, "unknown enrollment token".into()))
            }
            Err(EnrollRefusal::Used) => Err((
                ErrorCode::EnrollmentUsed,
                "enrollment token was already used; create a new one with `viber node add`".into(),
            )),
            Err(EnrollRefusal::Expired) => Err((
                ErrorCode::EnrollmentExpired,
                "enrollment token expired; create a new one with `viber node add`".into(),
            )),
        };
    }

    let Some(node) = app.store.node(c.node_id.clone()).await.map_err(internal)? else {
        return Err((
            ErrorCode::BadToken,
            "unknown node; enroll it with a token from `viber node add`".into(),
        ));
    };
    if node.revoked_at.is_some() {
        return Err((
            ErrorCode::Revoked,
            "this node was revoked by an operator".into(),
        ));
    }
    if node.public_key != c.public_key {
        return Err((
            ErrorCode::KeyMismatch,
            "public key differs from the enrolled one".into(),
        ));
    }
    if !ct_eq(node.token_hash.as_bytes(), token_hash.as_bytes()) {
        return Err((ErrorCode::BadToken, "invalid node token".into()));
    }
    Ok((node, None))
}

/// Constant-time equality for hashes.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Disconnects a node's live connection (after revocation).
pub async fn kick(app: &App, node_id: &str, code: u16, error: Frame) {
    if let Some(tx) = app.registry.sender(node_id) {
        let _ = tx.send(Outgoing::Close { code, error }).await;
    }
}
