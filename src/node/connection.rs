//! The node's link to its gateway: dial out, answer the challenge, heartbeat, hand gateway
//! frames to the runtime, send the runtime's frames, and reconnect with backoff forever.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::identity::Credentials;
use super::runtime::Runtime;
use super::NodeConfig;
use crate::crypto::NodeKey;
use crate::protocol::{
    close, signing_payload, Connect, ErrorCode, Frame, Role, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Exponential backoff with full jitter between `base` and a ceiling that doubles per
/// attempt up to `cap`.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let span = ceiling.saturating_sub(self.base).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            crate::crypto::random_u64() % (span + 1)
        };
        self.base + Duration::from_millis(jitter)
    }
}

/// How a session ended.
enum SessionEnd {
    Shutdown,
    /// The connection failed or dropped; try again.
    Lost(String),
    /// The gateway refused us.
    Refused(ErrorCode, String),
}

/// Converts `http://host:port` (or `ws://...`) into the node endpoint URL `ws://host:port/ws`.
pub fn ws_url(gateway: &str) -> String {
    let g = gateway.trim().trim_end_matches('/');
    let g = if let Some(rest) = g.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = g.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if g.starts_with("ws://") || g.starts_with("wss://") {
        g.to_string()
    } else {
        format!("ws://{g}")
    };
    if g.ends_with("/ws") {
        g
    } else {
        format!("{g}/ws")
    }
}

/// Runs until `shutdown` is cancelled or the gateway refuses this node for good.
pub async fn run(
    config: NodeConfig,
    key: NodeKey,
    runtime: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let url = ws_url(&config.gateway);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut enrollment = config.token.clone();
    loop {
        let saved = Credentials::load_for(&config.data_dir, &config.gateway)?;
        let (token, from_saved) = match (&saved, &enrollment) {
            (Some(c), _) => (c.node_token.clone(), true),
            (None, Some(t)) => (t.clone(), false),
            (None, None) => anyhow::bail!(
                "this node is not enrolled with {}: run `viber node add NAME` on the gateway and pass --token",
                config.gateway
            ),
        };
        let started = Instant::now();
        let end = session(&config, &url, &key, &token, &runtime, &shutdown).await;
        match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost(reason) => {
                tracing::warn!(gateway = %url, %reason, "connection to gateway lost");
                if started.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            SessionEnd::Refused(code, message) => {
                tracing::error!(gateway = %url, ?code, %message, "gateway refused this node");
                // Saved credentials the gateway no longer knows (its database was reset):
                // fall back to an enrollment token if we were given one.
                if from_saved && code == ErrorCode::BadToken && enrollment.is_some() {
                    let _ = std::fs::remove_file(Credentials::path(&config.data_dir));
                    continue;
                }
                if code.is_fatal_refusal() {
                    anyhow::bail!("gateway refused this node ({code:?}): {message}");
                }
            }
        }
        if !from_saved {
            // An enrollment token is spent once the gateway accepted it.
            if Credentials::load_for(&config.data_dir, &config.gateway)?.is_some() {
                enrollment = None;
            }
        }
        let delay = backoff.next_delay();
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "reconnecting to gateway"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_frame(ws: &mut futures_util::stream::SplitStream<Ws>) -> Result<Frame, String> {
    loop {
        match ws.next().await {
            None => return Err("connection closed".into()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Message::Text(t))) => {
                return Frame::decode(&t).map_err(|e| format!("bad frame from gateway: {e}"))
            }
            Some(Ok(Message::Close(c))) => {
                return Err(match c {
                    Some(c) => format!("closed by gateway ({}: {})", u16::from(c.code), c.reason),
                    None => "closed by gateway".into(),
                })
            }
            Some(Ok(_)) => continue,
        }
    }
}

async fn session(
    config: &NodeConfig,
    url: &str,
    key: &NodeKey,
    token: &str,
    runtime: &Runtime,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let connecting = tokio_tungstenite::connect_async_with_config(url, Some(ws_config), true);
    let ws = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting) => match r {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return SessionEnd::Lost(format!("cannot connect: {e}")),
            Err(_) => return SessionEnd::Lost("connect timed out".into()),
        },
        _ = shutdown.cancelled() => return SessionEnd::Shutdown,
    };
    let (mut sink, mut stream) = ws.split();

    // Handshake: challenge -> connect -> hello-ok.
    let handshake = async {
        let nonce = match next_frame(&mut stream).await? {
            Frame::Challenge { nonce, .. } => nonce,
            other => return Err(format!("expected challenge, got {}", other.type_name())),
        };
        let node_id = key.node_id();
        let connect = Frame::Connect(Connect {
            min_protocol: PROTOCOL_VERSION,
            max_protocol: PROTOCOL_VERSION,
            role: Role::Node,
            node_id: node_id.clone(),
            name: config.name.clone(),
            version: crate::VERSION.to_string(),
            platform: super::platform(),
            capabilities: runtime.capabilities(),
            token: token.to_string(),
            public_key: key.public_key_b64(),
            signature: key.sign_b64(&signing_payload(&nonce, &node_id)),
            nonce,
        });
        sink.send(Message::text(connect.encode()))
            .await
            .map_err(|e| e.to_string())?;
        next_frame(&mut stream).await
    };
    let reply = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match r {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => return SessionEnd::Lost(e),
            Err(_) => return SessionEnd::Lost("handshake timed out".into()),
        },
        _ = shutdown.cancelled() => return SessionEnd::Shutdown,
    };
    let hello = match reply {
        Frame::HelloOk(h) => h,
        Frame::Error(e) => return SessionEnd::Refused(e.code, e.message),
        other => return SessionEnd::Lost(format!("expected hello-ok, got {}", other.type_name())),
    };
    if let Some(node_token) = &hello.node_token {
        let creds = Credentials {
            gateway: config.gateway.clone(),
            node_id: hello.node_id.clone(),
            node_token: node_token.clone(),
        };
        if let Err(e) = creds.save(&config.data_dir) {
            tracing::error!(error = %e, "saving node credentials");
        }
        tracing::info!(node = %hello.node_id, "enrolled with gateway");
    }
    let interval = Duration::from_millis(hello.heartbeat_interval_ms.max(100));
    tracing::info!(gateway = %url, node = %hello.node_id, heartbeat_ms = interval.as_millis() as u64, "connected to gateway");

    let mut heartbeat = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    let mut cursor = runtime.new_send_cursor();
    let send = |frame: Frame| Message::text(frame.encode());
    loop {
        // Everything the runtime has not sent on this connection yet (all unacknowledged
        // frames on a fresh connection).
        let unsent = runtime.unsent(&mut cursor);
        if !unsent.is_empty() {
            for frame in unsent {
                if let Err(e) = sink.feed(send(frame)).await {
                    return SessionEnd::Lost(e.to_string());
                }
            }
            if let Err(e) = sink.flush().await {
                return SessionEnd::Lost(e.to_string());
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = sink.send(Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: close::GOING_AWAY.into(),
                    reason: "node shutting down".into(),
                }))).await;
                let _ = sink.close().await;
                return SessionEnd::Shutdown;
            }
            _ = runtime.outbox_changed() => {}
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > interval * 3 {
                    return SessionEnd::Lost("gateway silent for three heartbeat intervals".into());
                }
                let hb = Frame::Heartbeat { status: runtime.status() };
                if let Err(e) = sink.send(send(hb)).await {
                    return SessionEnd::Lost(e.to_string());
                }
            }
            frame = next_frame(&mut stream) => {
                last_heard = Instant::now();
                match frame {
                    Err(e) => return SessionEnd::Lost(e),
                    Ok(Frame::Ping {}) => {
                        if let Err(e) = sink.send(send(Frame::Pong {})).await {
                            return SessionEnd::Lost(e.to_string());
                        }
                    }
                    Ok(Frame::Pong {}) => {}
                    Ok(Frame::Error(e)) if e.code == ErrorCode::Revoked => {
                        return SessionEnd::Refused(e.code, e.message);
                    }
                    Ok(Frame::Error(e)) => {
                        tracing::warn!(code = ?e.code, message = %e.message, "gateway reported an error");
                    }
                    Ok(frame) => {
                        if let Some(reply) = runtime.handle(frame).await {
                            if let Err(e) = sink.send(send(reply)).await {
                                return SessionEnd::Lost(e.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for attempt in 0..12u32 {
            let d = b.next_delay();
            let ceiling = Duration::from_secs(1u64 << attempt).min(Duration::from_secs(30));
            assert!(
                d >= Duration::from_secs(1) && d <= ceiling,
                "attempt {attempt}: {d:?}"
            );
        }
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn gateway_urls_become_ws_endpoints() {
        assert_eq!(ws_url("http://127.0.0.1:7391"), "ws://127.0.0.1:7391/ws");
        assert_eq!(ws_url("https://gw.example/"), "wss://gw.example/ws");
        assert_eq!(ws_url("ws://h:1/ws"), "ws://h:1/ws");
        assert_eq!(ws_url("h:1"), "ws://h:1/ws");
    }
}
