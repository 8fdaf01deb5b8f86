//! The node's link to its gateway: dial out, answer the challenge, heartbeat, hand gateway
//! frames to the runtime, send the runtime's frames, and reconnect with backoff forever.
//!
//! Owns: the connection loop, backoff, saving the node token issued at enrollment. The
//! exchange itself is `handshake` (shared with the tests and benchmarks) and the framing is
//! `protocol::codec`. Must not touch: what a frame means for tasks or environments (the
//! runtime decides); it never imports `gateway::`. All of it runs in one tracing span
//! (`node`, `gateway`) so log lines need not repeat them.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::handshake::{self, HandshakeError, NodeHello, Reply, WsStream};
use super::identity::Credentials;
use super::runtime::Runtime;
use super::NodeConfig;
use crate::crypto::NodeKey;
use crate::protocol::codec::{self, CodecError};
use crate::protocol::{self, close, ErrorCode, Frame, HelloOk};

/// A connection that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The gateway is gone after this many heartbeat intervals without a frame from it (it
/// pings an idle node every two).
const GATEWAY_SILENT_FOR: u32 = 5;

/// Exponential backoff with jitter: each delay is drawn between half of `base` and a ceiling
/// that starts at `base` and doubles per attempt up to `cap`. The first retry is drawn too:
/// nodes that lost their gateway at the same moment (it crashed or restarted) come back
/// spread over half a second rather than all at once.
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
        let floor = self.base / 2;
        let span = ceiling.saturating_sub(floor).as_millis() as u64;
        floor + Duration::from_millis(crate::crypto::random_u64() % (span + 1))
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
    let span = tracing::info_span!("gateway_link", node = %key.node_id(), gateway = %url);
    reconnect(config, url, key, runtime, shutdown)
        .instrument(span)
        .await
}

/// One connection after another, with backoff between them.
async fn reconnect(
    config: NodeConfig,
    url: String,
    key: NodeKey,
    runtime: Runtime,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut enrollment = config.token.clone();
    loop {
        let saved = Credentials::load_for(&config.data_dir, &config.gateway)?;
        // With neither, the node asks to pair: an empty token, and an operator approves it.
        let (token, from_saved) = match (&saved, &enrollment) {
            (Some(c), _) => (c.node_token.clone(), true),
            (None, Some(t)) => (t.clone(), false),
            (None, None) => (String::new(), false),
        };
        let started = Instant::now();
        let end = session(&config, &url, &key, &token, &runtime, &shutdown).await;
        match end {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost(reason) => {
                tracing::warn!(%reason, "connection to gateway lost");
                if started.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            SessionEnd::Refused(code, message) => {
                tracing::error!(?code, %message, "gateway refused this node");
                // Saved credentials the gateway no longer knows (its database was reset):
                // fall back to an enrollment token if we were given one, else ask to pair.
                if from_saved && code == ErrorCode::BadToken {
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

type Sink = futures_util::stream::SplitSink<WsStream, Message>;
type Stream = futures_util::stream::SplitStream<WsStream>;

/// One connection: dial, handshake, then the loop until it ends.
async fn session(
    config: &NodeConfig,
    url: &str,
    key: &NodeKey,
    token: &str,
    runtime: &Runtime,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let (ws, hello) = match open(config, url, key, token, runtime, shutdown).await {
        Ok(open) => open,
        Err(end) => return end,
    };
    if let Some(node_token) = &hello.node_token {
        save_credentials(config, &hello.node_id, node_token);
    }
    let interval = Duration::from_millis(hello.heartbeat_interval_ms.max(100));
    tracing::info!(
        heartbeat_ms = interval.as_millis() as u64,
        "connected to gateway"
    );
    let (mut sink, mut stream) = ws.split();
    let batch = hello.protocol >= protocol::BATCH_PROTOCOL;
    let end = pump(runtime, shutdown, &mut sink, &mut stream, interval, batch).await;
    runtime.terminals().disconnected();
    end
}

/// Dials the gateway and runs the handshake (challenge -> signed connect -> hello-ok), each
/// step within [`HANDSHAKE_TIMEOUT`] and abandoned at shutdown.
async fn open(
    config: &NodeConfig,
    url: &str,
    key: &NodeKey,
    token: &str,
    runtime: &Runtime,
    shutdown: &CancellationToken,
) -> Result<(WsStream, HelloOk), SessionEnd> {
    let mut ws = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake::dial(url)) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => return Err(SessionEnd::Lost(e.to_string())),
            Err(_) => return Err(SessionEnd::Lost("connect timed out".into())),
        },
        _ = shutdown.cancelled() => return Err(SessionEnd::Shutdown),
    };
    let about = NodeHello {
        name: config.name.clone(),
        version: crate::VERSION.to_string(),
        platform: super::platform(),
        capabilities: runtime.capabilities(),
        hostname: Some(super::hostname()),
    };
    let exchange = handshake::begin(&mut ws, key, token, &about);
    let reply = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange) => r,
        _ = shutdown.cancelled() => return Err(SessionEnd::Shutdown),
    };
    let reply = match reply {
        Ok(Ok(Reply::Hello(hello))) => Ok(hello),
        Ok(Ok(Reply::Pending(pending))) => {
            tracing::warn!(
                fingerprint = %pending.fingerprint,
                expires_at = %pending.expires_at,
                "waiting for an operator to approve this node: run `viber node approve {}` on the gateway, or approve it in the board",
                pending.fingerprint
            );
            tokio::select! {
                r = handshake::await_approval(&mut ws, &pending) => r,
                _ = shutdown.cancelled() => return Err(SessionEnd::Shutdown),
            }
        }
        Ok(Err(e)) => Err(e),
        Err(_) => return Err(SessionEnd::Lost("handshake timed out".into())),
    };
    match reply {
        Ok(hello) => Ok((ws, hello)),
        Err(HandshakeError::Refused(e)) => Err(SessionEnd::Refused(e.code, e.message)),
        Err(e) => Err(SessionEnd::Lost(e.to_string())),
    }
}

/// Keeps the node token issued at enrollment for every later connection.
fn save_credentials(config: &NodeConfig, node_id: &str, node_token: &str) {
    let creds = Credentials {
        gateway: config.gateway.clone(),
        node_id: node_id.to_string(),
        node_token: node_token.to_string(),
    };
    if let Err(e) = creds.save(&config.data_dir) {
        tracing::error!(error = %e, "saving node credentials");
    }
    tracing::info!("enrolled with gateway");
}

fn lost(e: CodecError) -> SessionEnd {
    SessionEnd::Lost(e.to_string())
}

/// The authenticated connection: sends what the runtime has not sent yet, heartbeats, and
/// hands the gateway's frames to the runtime, until the connection ends. With `batch` (the
/// gateway speaks [`protocol::BATCH_PROTOCOL`]), runs of one task's chunks that piled up
/// while the last burst was written go as one `task:stream-chunks` frame.
async fn pump(
    runtime: &Runtime,
    shutdown: &CancellationToken,
    sink: &mut Sink,
    stream: &mut Stream,
    interval: Duration,
    batch: bool,
) -> SessionEnd {
    let mut heartbeat = tokio::time::interval(interval);
    let mut last_heard = Instant::now();
    let mut cursor = runtime.new_send_cursor();
    loop {
        // Everything the runtime has not sent on this connection yet (all unacknowledged
        // frames on a fresh connection), as one burst.
        let mut unsent = runtime.unsent(&mut cursor).await;
        if batch && unsent.len() > 1 {
            unsent = protocol::batch_chunks(unsent);
        }
        if !unsent.is_empty() {
            for frame in &unsent {
                if let Err(e) = codec::feed(sink, frame).await {
                    return lost(e);
                }
            }
            if let Err(e) = codec::flush(sink).await {
                return lost(e);
            }
        }
        let step = tokio::select! {
            _ = shutdown.cancelled() => {
                codec::close(sink, close::GOING_AWAY, "node shutting down").await;
                return SessionEnd::Shutdown;
            }
            _ = runtime.outbox_changed() => Ok(()),
            Some(frame) = runtime.terminals().next_frame() => {
                codec::write(sink, &frame).await.map_err(lost)
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > interval * GATEWAY_SILENT_FOR {
                    return SessionEnd::Lost("gateway silent for five heartbeat intervals".into());
                }
                let hb = Frame::Heartbeat { status: runtime.status() };
                codec::write(sink, &hb).await.map_err(lost)
            }
            frame = codec::read_frame(stream) => {
                last_heard = Instant::now();
                match frame {
                    Ok(frame) => on_frame(runtime, sink, frame).await,
                    Err(e) => Err(lost(e)),
                }
            }
        };
        if let Err(end) = step {
            return end;
        }
    }
}

/// One frame from the gateway.
async fn on_frame(runtime: &Runtime, sink: &mut Sink, frame: Frame) -> Result<(), SessionEnd> {
    let reply = match frame {
        Frame::Ping {} => Some(Frame::Pong {}),
        Frame::Pong {} => None,
        Frame::Error(e) if e.code == ErrorCode::Revoked => {
            return Err(SessionEnd::Refused(e.code, e.message));
        }
        Frame::Error(e) => {
            tracing::warn!(code = ?e.code, message = %e.message, "gateway reported an error");
            None
        }
        frame => runtime.handle(frame).await,
    };
    match reply {
        Some(reply) => codec::write(sink, &reply).await.map_err(lost),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let half = Duration::from_millis(500);
        for attempt in 0..12u32 {
            let d = b.next_delay();
            let ceiling = Duration::from_secs(1u64 << attempt).min(Duration::from_secs(30));
            assert!(d >= half && d <= ceiling, "attempt {attempt}: {d:?}");
        }
        // The first retry after a reset is drawn between 0.5 and 1 s, not always 1 s: a
        // fleet that lost its gateway at once does not come back at once. (200 draws all
        // in one half of the range: a chance of 2^-199.)
        let first: Vec<Duration> = (0..200)
            .map(|_| {
                b.reset();
                b.next_delay()
            })
            .collect();
        assert!(first
            .iter()
            .all(|d| *d >= half && *d <= Duration::from_secs(1)));
        let mid = Duration::from_millis(750);
        assert!(first.iter().any(|d| *d < mid) && first.iter().any(|d| *d > mid));
    }

    #[test]
    fn gateway_urls_become_ws_endpoints() {
        assert_eq!(ws_url("http://127.0.0.1:7391"), "ws://127.0.0.1:7391/ws");
        assert_eq!(ws_url("https://gw.example/"), "wss://gw.example/ws");
        assert_eq!(ws_url("ws://h:1/ws"), "ws://h:1/ws");
        assert_eq!(ws_url("h:1"), "ws://h:1/ws");
    }
}
