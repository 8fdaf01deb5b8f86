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
