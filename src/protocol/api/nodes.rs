//! Nodes, enrollment, health and board sessions.

use serde::{Deserialize, Serialize};

use crate::protocol::names::wire_enum;
use crate::protocol::ConfigAck;

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Health {
    /// Always `ok` while the gateway answers.
    pub status: String,
    pub version: String,
    pub uptime_secs: u64,
    /// Enrolled nodes (not revoked).
    pub nodes: i64,
    pub nodes_online: u64,
    pub tasks: i64,
}

wire_enum! {
    /// Whether a node holds a connection to the gateway now.
    pub enum NodePresence ("presence") {
        Online = "online",
        Offline = "offline",
    }
}

/// A node as `GET /api/nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub platform: String,
    pub capabilities: Vec<String>,
    /// How the node confines task processes: `bwrap`, `off` (turned off by its operator) or
    /// `missing` (no sandbox tool: it refuses tasks). Absent for nodes that do not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    pub status: NodePresence,
    pub running_tasks: Vec<String>,
    pub enrolled_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub connected_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub memory_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub uptime_secs: Option<u64>,
    /// 1, 5 and 15 minute load averages (online nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub load: Option<[f64; 3]>,
    /// The node's last `config:ack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    #[schema(nullable = false)]
    pub config: Option<ConfigAck>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// `POST /api/nodes/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnrollRequest {
    pub name: String,
    /// Lifetime of the token in seconds (default: the gateway's enrollment TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// How many nodes the token may enroll (default 1; at most 100000). Each is named
    /// `<name>-<end of its id>` when it is more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// An enrollment token and the command that uses it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    pub name: String,
    pub token: String,
    pub expires_at: String,
    pub command: String,
    /// How many nodes it may enroll.
    pub uses: u32,
}

wire_enum! {
    /// Where a pairing request stands.
    pub enum PairingStatus ("pairing status") {
        /// The node waits for an operator (online or not: it asks again when its request
        /// expired).
        Pending = "pending",
        /// Approved while the node was away: it gets its token when it next connects.
        Approved = "approved",
        /// Refused; the key is refused from now on (approving it later undoes that).
        Rejected = "rejected",
    }
}

/// A device asking to join as a node (`GET /api/nodes/pending`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PairingRequestView {
    /// The fingerprint of the node's key, which is also the node id once approved.
    pub fingerprint: String,
    /// The name the node asked for (its host name unless its operator set `--name`).
    pub name: String,
    pub hostname: String,
    pub platform: String,
    pub version: String,
    /// The IP address it connected from.
    pub address: String,
    pub status: PairingStatus,
    /// Whether it is connected now, waiting for the answer.
    pub waiting: bool,
    pub requested_at: String,
    /// When a pending (or approved, undelivered) request lapses.
    pub expires_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PairingList {
    pub requests: Vec<PairingRequestView>,
}

/// `POST /api/nodes/pending/:fingerprint/approve`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct ApproveRequest {
    /// The node's name [default: the name it asked for].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub name: Option<String>,
}

/// The answer to an approval or a rejection.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PairingDecided {
    pub fingerprint: String,
    pub name: String,
    pub status: PairingStatus,
    /// The node was waiting and has its answer now (for an approval: its token, and it is
    /// coming online); false: it gets it when it next connects.
    pub delivered: bool,
}

/// `POST /api/nodes/:id/config-push`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ConfigPushed {
    pub node_id: String,
    pub pushed: bool,
    /// The node started checking already; false: stored and sent when the node is back.
    pub delivered: bool,
}

// ---- board sessions ----

/// `POST /api/session`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub token: String,
}

/// A board session just opened (the cookie carries its id).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SessionOpened {
    pub csrf_token: String,
    pub expires_at: String,
}

wire_enum! {
    /// How a request authenticated.
    pub enum CredentialKind ("credential") {
        Bearer = "bearer",
        Cookie = "cookie",
    }
}

/// `GET /api/session`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct SessionInfo {
    pub authenticated: bool,
    pub via: CredentialKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub csrf_token: Option<String>,
}
