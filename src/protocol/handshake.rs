//! Payloads of the handshake and liveness frames: `connect`, `hello-ok`, `error` (with its
//! typed codes), `heartbeat`'s node status, and the bytes a node signs.

use serde::{Deserialize, Serialize};

/// The capability by which a node says how it confines task processes (`sandbox:bwrap`,
/// `sandbox:off`, `sandbox:missing`).
pub const SANDBOX_CAPABILITY: &str = "sandbox:";

/// Roles a WebSocket client may declare in `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Node,
    Operator,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connect {
    pub min_protocol: u32,
    pub max_protocol: u32,
    pub role: Role,
    /// Fingerprint of `public_key` (see [`crate::crypto::node_id_for`]).
    pub node_id: String,
    pub name: String,
    pub version: String,
    pub platform: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// An enrollment token (first connection), the node token issued in `hello-ok`, or empty
    /// to ask for pairing (an operator approves the key; see [`PairingPending`]).
    #[serde(default)]
    pub token: String,
    /// The machine's host name, shown to the operator who approves a pairing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Ed25519 public key, base64url without padding.
    pub public_key: String,
    /// The challenge nonce this frame answers.
    pub nonce: String,
    /// Ed25519 signature over [`signing_payload`], base64url without padding.
    pub signature: String,
}

/// The bytes a node signs to answer a challenge: binds the nonce to the node id. Its `v1`
/// names the signature scheme, not the protocol revision: every revision signs the same.
pub fn signing_payload(nonce: &str, node_id: &str) -> Vec<u8> {
    format!("viber-connect:v1:{nonce}:{node_id}").into_bytes()
}

/// The newest protocol revision both sides speak, if any: the gateway's range is
/// [`super::MIN_PROTOCOL_VERSION`]..=[`super::PROTOCOL_VERSION`].
pub fn negotiate(min_protocol: u32, max_protocol: u32) -> Option<u32> {
    let high = max_protocol.min(super::PROTOCOL_VERSION);
    (high >= min_protocol.max(super::MIN_PROTOCOL_VERSION)).then_some(high)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloOk {
    pub protocol: u32,
    pub server_version: String,
    pub node_id: String,
    /// The node sends a heartbeat this often; the gateway pings this often.
    pub heartbeat_interval_ms: u64,
    /// Issued once, when an enrollment token was redeemed: the node stores it and uses it
    /// for every later connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_token: Option<String>,
}

/// `pairing:pending`: what the node shows its operator while it waits for approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingPending {
    /// The node id: the fingerprint of its key, which the operator approves.
    pub fingerprint: String,
    /// When the request lapses (ISO 8601); the node asks again after that.
    pub expires_at: String,
    /// The gateway sends a `ping` this often while the node waits.
    pub ping_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
}

/// Typed error codes carried by `error` frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or no `type`.
    BadFrame,
    UnknownType,
    InvalidFrame,
    /// A frame other than `connect` before the handshake finished.
    NotAuthenticated,
    ProtocolMismatch,
    UnsupportedRole,
    /// The signature does not verify, or the node id is not the key's fingerprint.
    BadSignature,
    /// The `connect` frame answers another challenge (a replay).
    BadNonce,
    /// The token is not a valid enrollment token or node token.
    BadToken,
    EnrollmentExpired,
    EnrollmentUsed,
    /// The node token belongs to another key or node.
    KeyMismatch,
    Revoked,
    HandshakeTimeout,
    /// An operator rejected this key's pairing request; it is refused from now on.
    PairingRejected,
    /// Nobody approved the pairing request in time; the node may ask again.
    PairingExpired,
    /// Too many pairing requests from this address (or in all); retry later.
    RateLimited,
    FrameTooLarge,
    /// A node reported on a task it does not run.
    NotOwner,
    UnknownTask,
    Internal,
}

impl ErrorCode {
    /// Refusals after which retrying the same credentials cannot succeed.
    pub fn is_fatal_refusal(self) -> bool {
        matches!(
            self,
            ErrorCode::BadToken
                | ErrorCode::EnrollmentExpired
                | ErrorCode::EnrollmentUsed
                | ErrorCode::KeyMismatch
                | ErrorCode::Revoked
                | ErrorCode::ProtocolMismatch
                | ErrorCode::PairingRejected
        )
    }
}

/// What a node tells the gateway about itself (the seed's `ViberInfo`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ViberInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    pub platform: String,
    pub capabilities: Vec<String>,
    pub running_tasks: Vec<String>,
}

impl ViberInfo {
    /// Whether the node can run tasks at all: not one that said it has no sandbox (it
    /// refuses every task until bubblewrap is installed or its sandbox is turned off).
    pub fn runs_tasks(&self) -> bool {
        !self
            .capabilities
            .iter()
            .any(|c| c.strip_prefix(SANDBOX_CAPABILITY) == Some("missing"))
    }

    /// Whether the node advertised `executor` among its capabilities.
    pub fn offers(&self, executor: super::ExecutorKind) -> bool {
        self.capabilities.iter().any(|c| c == executor.as_str())
    }
}

/// Heartbeat payload (the seed's `ViberStatus`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub running_tasks: Vec<String>,
    /// 1, 5 and 15 minute load averages.
    #[serde(default)]
    pub load: [f64; 3],
    #[serde(default)]
    pub memory_rss_bytes: u64,
    #[serde(default)]
    pub uptime_secs: u64,
    pub version: String,
    /// The threads whose worktrees the node holds (absent when it holds none), so the
    /// gateway can remove those of threads that are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worktrees: Vec<String>,
}
