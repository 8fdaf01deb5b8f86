//! The server side of the handshake: challenge, `connect`, authenticate, `hello-ok` or a
//! typed refusal (an `error` frame, then close 1008).
//!
//! Owns: the challenge nonce, the checks on a `connect` frame (role, protocol range, nonce,
//! key fingerprint, signature, token), enrollment redemption and the node token it issues.
//! A `connect` without a token goes on to `pairing`.
//! Must not touch: the registry or the session (the caller registers an admitted node), SQL
//! other than through `store::Store`, and anything under `node::` (the client side of this
//! exchange is `node::handshake`).

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::pairing;
use super::session::{Sink, Stream};
use crate::clock::now_ms;
use crate::crypto;
use crate::gateway::App;
use crate::protocol::codec::{self, CodecError, Incoming};
use crate::protocol::{
    close, negotiate, signing_payload, Connect, ErrorCode, Frame, HelloOk, Role,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use crate::store::{EnrollRefusal, NodeRecord};

/// Time a client has to answer the challenge.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub const ENROLLMENT_PREFIX: &str = "vbr_enr_";
pub const NODE_TOKEN_PREFIX: &str = "vbr_node_";

/// A node that passed the handshake and was told `hello-ok`.
pub(super) struct Admitted {
    pub node: NodeRecord,
    /// What the node said about itself.
    pub connect: Connect,
}

/// Runs the handshake on a fresh socket. `None` when the connection ended during it or was
/// refused (the refusal has been sent and the socket closed).
///
/// `place` (the connection's place among those in their handshake) is given up when the
/// node turns out to ask for pairing: its wait for an operator is limited apart.
pub(super) async fn admit(
    app: &App,
    sink: &mut Sink,
    stream: &mut Stream,
    peer: IpAddr,
    place: OwnedSemaphorePermit,
) -> Option<Admitted> {
    let nonce = crypto::b64(&crypto::random_bytes(32));
    let challenge = Frame::Challenge {
        nonce: nonce.clone(),
        protocol: PROTOCOL_VERSION,
        server_version: crate::VERSION.to_string(),
    };
    codec::write(sink, &challenge).await.ok()?;
    let connect = read_connect(app, sink, stream).await?;
    let outcome = match check_signed(&connect, &nonce) {
        Err(refusal) => Err(refusal),
        Ok(()) if connect.token.is_empty() => {
            drop(place);
            pairing::pair(app, sink, stream, &connect, peer).await?
        }
        Ok(()) => authenticate(app, &connect).await,
    };
    let (node, issued_token) = match outcome {
        Ok(ok) => ok,
        Err((code, message)) => {
            refuse(sink, code, message).await;
            return None;
        }
    };
    // `authenticate` checked that there is one.
    let protocol =
        negotiate(connect.min_protocol, connect.max_protocol).unwrap_or(PROTOCOL_VERSION);
    let hello = Frame::HelloOk(HelloOk {
        protocol,
        server_version: crate::VERSION.to_string(),
        node_id: node.id.clone(),
        heartbeat_interval_ms: app.config.heartbeat_interval.as_millis() as u64,
        node_token: issued_token,
    });
    codec::write(sink, &hello).await.ok()?;
    Some(Admitted { node, connect })
}

/// Waits for the `connect` frame; refuses anything else.
async fn read_connect(app: &App, sink: &mut Sink, stream: &mut Stream) -> Option<Connect> {
    let first = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, codec::read(stream)) => r,
        _ = app.shutdown.cancelled() => {
            codec::close(sink, close::GOING_AWAY, "gateway shutting down").await;
            return None;
        }
    };
    let (code, message) = match first {
        Err(_) => (
            ErrorCode::HandshakeTimeout,
            format!("no connect frame within {} s", HANDSHAKE_TIMEOUT.as_secs()),
        ),
        Ok(Err(CodecError::Closed(_) | CodecError::Transport(_))) => return None,
        Ok(Err(CodecError::TooBig)) => {
            tracing::warn!("oversized frame before handshake");
            codec::close_too_big(sink).await;
            return None;
        }
        Ok(Ok(Incoming::Control) | Err(CodecError::Binary)) => (
            ErrorCode::NotAuthenticated,
            "expected a connect frame".into(),
        ),
        Ok(Err(CodecError::Decode(e))) => (e.code(), e.to_string()),
        Ok(Ok(Incoming::Frame(Frame::Connect(c)))) => return Some(c),
        Ok(Ok(Incoming::Frame(other))) => (
            ErrorCode::NotAuthenticated,
            format!(
                "expected a connect frame, got {:?} before the handshake",
                other.type_name()
            ),
        ),
    };
    refuse(sink, code, message).await;
    None
}

/// Sends a typed refusal and closes with 1008.
async fn refuse(sink: &mut Sink, code: ErrorCode, message: String) {
    tracing::warn!(?code, %message, "node refused");
    let _ = codec::write(sink, &Frame::error(code, message.clone())).await;
    codec::close(sink, close::POLICY, &message).await;
}

pub(super) type Refusal = (ErrorCode, String);
/// An admitted node and, when it was just enrolled or paired, the node token issued to it.
pub(super) type Granted = (NodeRecord, Option<String>);

/// Authenticates a signed `connect` frame by its token.
async fn authenticate(app: &App, c: &Connect) -> Result<Granted, Refusal> {
    if c.token.starts_with(ENROLLMENT_PREFIX) {
        let (node, token) = enroll(app, c).await?;
        Ok((node, Some(token)))
    } else {
        Ok((known_node(app, c).await?, None))
    }
}

/// What can be checked without the store: role, protocol range, and that the frame answers
/// this challenge, signed by the key whose fingerprint is the node id.
fn check_signed(c: &Connect, nonce: &str) -> Result<(), Refusal> {
    if c.role != Role::Node {
        return Err((
            ErrorCode::UnsupportedRole,
            "only the node role may connect to /ws".into(),
        ));
    }
    if negotiate(c.min_protocol, c.max_protocol).is_none() {
        return Err((
            ErrorCode::ProtocolMismatch,
            format!(
                "gateway speaks protocol {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}, node supports {}..={}; upgrade the older side",
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
    Ok(())
}

pub(super) fn internal(e: anyhow::Error) -> Refusal {
    tracing::error!(error = format!("{e:#}"), "authenticating node");
    (ErrorCode::Internal, "gateway storage error".to_string())
}

/// Redeems an enrollment token: records the node and returns it with its new node token.
async fn enroll(app: &App, c: &Connect) -> Result<(NodeRecord, String), Refusal> {
    let token_hash = crypto::sha256_hex(c.token.as_bytes());
    let node_token = crypto::new_token(NODE_TOKEN_PREFIX);
    let record = new_node(c, &node_token);
    match app
        .store
        .redeem_enrollment(token_hash, record, now_ms())
        .await
        .map_err(internal)?
    {
        Ok(node) => {
            tracing::info!(node = %node.id, name = %node.name, "node enrolled");
            Ok((node, node_token))
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
    }
}

/// The node `c` describes, holding `node_token` (its name is the store's to decide).
pub(super) fn new_node(c: &Connect, node_token: &str) -> NodeRecord {
    NodeRecord {
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
    }
}

/// Checks a node token against the enrolled node it claims to be.
async fn known_node(app: &App, c: &Connect) -> Result<NodeRecord, Refusal> {
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
    let token_hash = crypto::sha256_hex(c.token.as_bytes());
    if !ct_eq(node.token_hash.as_bytes(), token_hash.as_bytes()) {
        return Err((ErrorCode::BadToken, "invalid node token".into()));
    }
    Ok(node)
}

/// Constant-time equality for hashes.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
