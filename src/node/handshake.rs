//! The client side of the handshake: dial the gateway's `/ws`, read the challenge, answer
//! with a signed `connect`, and get `hello-ok` or a typed refusal (or, without a token,
//! `pairing:pending` and later the operator's answer).
//!
//! Used by the node's connection loop, the integration tests and the benchmarks, so that
//! there is one implementation of the exchange. Owns: dialing with the protocol's size limit
//! and TCP_NODELAY, building and signing `connect`. Must not touch: what happens after
//! `hello-ok` (the node's `connection`), credentials on disk, timeouts and retries (callers
//! decide; the node wraps each step in its own). Needs nothing else from `node::`, so tests
//! and tools can use it on its own.

use std::fmt;
use std::time::Duration;

use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::crypto::NodeKey;
use crate::protocol::codec::{self, CodecError};
use crate::protocol::{
    signing_payload, Connect, ErrorFrame, Frame, HelloOk, PairingPending, Role,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};

/// A client WebSocket to a gateway.
pub type WsStream = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// What a node says about itself in `connect`, besides its key and token.
#[derive(Debug, Clone)]
pub struct NodeHello {
    pub name: String,
    pub version: String,
    pub platform: String,
    pub capabilities: Vec<String>,
    /// The machine's host name (shown when an operator approves a pairing).
    pub hostname: Option<String>,
}

/// Why a handshake did not end in `hello-ok`.
#[derive(Debug)]
pub enum HandshakeError {
    /// No WebSocket: the TCP connection, TLS or the HTTP upgrade failed.
    Dial(String),
    /// The socket closed or failed mid-handshake, or sent something that is not a frame.
    Codec(CodecError),
    /// The gateway refused this node, with a typed reason.
    Refused(ErrorFrame),
    /// A frame other than the one this step expects.
    Unexpected {
        expected: &'static str,
        frame: Box<Frame>,
    },
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Dial(e) => write!(f, "cannot connect: {e}"),
            HandshakeError::Codec(e) => write!(f, "{e}"),
            HandshakeError::Refused(e) => write!(f, "refused ({:?}): {}", e.code, e.message),
            HandshakeError::Unexpected { expected, frame } => {
                write!(f, "expected {expected}, got {}", frame.type_name())
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<CodecError> for HandshakeError {
    fn from(e: CodecError) -> Self {
        HandshakeError::Codec(e)
    }
}

/// Opens a WebSocket to `url` (`ws://host:port/ws`) with the protocol's size limit and
/// TCP_NODELAY.
pub async fn dial(url: &str) -> Result<WsStream, HandshakeError> {
    tokio_tungstenite::connect_async_with_config(url, Some(codec::client_config()), true)
        .await
        .map(|(ws, _response)| ws)
        .map_err(|e| HandshakeError::Dial(e.to_string()))
}

/// Reads the gateway's challenge; returns its nonce.
pub async fn read_challenge(ws: &mut WsStream) -> Result<String, HandshakeError> {
    match codec::read_frame(ws).await? {
        Frame::Challenge { nonce, .. } => Ok(nonce),
        other => Err(HandshakeError::Unexpected {
            expected: "challenge",
            frame: Box::new(other),
        }),
    }
}

/// A `connect` frame answering `nonce`, signed with `key`.
pub fn connect_frame(key: &NodeKey, nonce: &str, token: &str, hello: &NodeHello) -> Connect {
    let node_id = key.node_id();
    Connect {
        min_protocol: MIN_PROTOCOL_VERSION,
        max_protocol: PROTOCOL_VERSION,
        role: Role::Node,
        signature: key.sign_b64(&signing_payload(nonce, &node_id)),
        node_id,
        name: hello.name.clone(),
        version: hello.version.clone(),
        platform: hello.platform.clone(),
        capabilities: hello.capabilities.clone(),
        token: token.to_string(),
        hostname: hello.hostname.clone(),
        public_key: key.public_key_b64(),
        nonce: nonce.to_string(),
    }
}

/// The gateway's answer to `connect`.
#[derive(Debug)]
pub enum Reply {
    Hello(HelloOk),
    /// Only to a `connect` without a token: the node waits for an operator's approval
    /// ([`await_approval`]).
    Pending(PairingPending),
}

/// Reads the gateway's answer to `connect`: `hello-ok`, `pairing:pending`, or its typed
/// refusal.
pub async fn read_answer(ws: &mut WsStream) -> Result<Reply, HandshakeError> {
    match codec::read_frame(ws).await? {
        Frame::HelloOk(hello) => Ok(Reply::Hello(hello)),
        Frame::PairingPending(p) => Ok(Reply::Pending(p)),
        Frame::Error(e) => Err(HandshakeError::Refused(e)),
        other => Err(HandshakeError::Unexpected {
            expected: "hello-ok",
            frame: Box::new(other),
        }),
    }
}

/// Reads the gateway's answer to `connect`: `hello-ok`, or its typed refusal.
pub async fn read_reply(ws: &mut WsStream) -> Result<HelloOk, HandshakeError> {
    read_answer(ws).await?.hello()
}

impl Reply {
    /// The `hello-ok`, for a caller that did not ask to pair.
    pub fn hello(self) -> Result<HelloOk, HandshakeError> {
        match self {
            Reply::Hello(hello) => Ok(hello),
            Reply::Pending(p) => Err(HandshakeError::Unexpected {
                expected: "hello-ok",
                frame: Box::new(Frame::PairingPending(p)),
            }),
        }
    }
}

/// After `pairing:pending`: waits for the operator's answer (`hello-ok` with the node
/// token, or a refusal), for as long as the gateway keeps pinging within three of the
/// intervals it announced.
pub async fn await_approval(
    ws: &mut WsStream,
    pending: &PairingPending,
) -> Result<HelloOk, HandshakeError> {
    let silent = Duration::from_millis(pending.ping_interval_ms.max(100)) * 3;
    loop {
        match tokio::time::timeout(silent, codec::read_frame(ws)).await {
            Err(_) => {
                return Err(HandshakeError::Codec(CodecError::Transport(
                    "the gateway went silent while this node waited for approval".into(),
                )))
            }
            Ok(Ok(Frame::Ping {})) => continue,
            Ok(Ok(Frame::HelloOk(hello))) => return Ok(hello),
            Ok(Ok(Frame::Error(e))) => return Err(HandshakeError::Refused(e)),
            Ok(Ok(other)) => {
                return Err(HandshakeError::Unexpected {
                    expected: "hello-ok",
                    frame: Box::new(other),
                })
            }
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// Challenge, then the signed `connect`; returns the gateway's answer.
pub async fn begin(
    ws: &mut WsStream,
    key: &NodeKey,
    token: &str,
    hello: &NodeHello,
) -> Result<Reply, HandshakeError> {
    let nonce = read_challenge(ws).await?;
    let connect = Frame::Connect(connect_frame(key, &nonce, token, hello));
    codec::write(ws, &connect).await?;
    read_answer(ws).await
}

/// The whole exchange on an open socket: challenge, signed `connect`, `hello-ok`.
pub async fn handshake(
    ws: &mut WsStream,
    key: &NodeKey,
    token: &str,
    hello: &NodeHello,
) -> Result<HelloOk, HandshakeError> {
    begin(ws, key, token, hello).await?.hello()
}

/// [`dial`], then [`handshake`].
pub async fn connect(
    url: &str,
    key: &NodeKey,
    token: &str,
    hello: &NodeHello,
) -> Result<(WsStream, HelloOk), HandshakeError> {
    let mut ws = dial(url).await?;
    let ok = handshake(&mut ws, key, token, hello).await?;
    Ok((ws, ok))
}
