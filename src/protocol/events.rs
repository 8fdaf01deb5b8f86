//! `/api/events`: push-only gateway events for the board and scripts, as Server-Sent Events
//! (`event: <type>` then `data: <EventEnvelope JSON>`).
//!
//! Events say that something changed and carry enough to update a view in place; they are
//! not replayed. A client that sees `gap` (it fell behind) or reconnects refreshes its state
//! from the REST API.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{BindingStatus, ConfigAck, TaskState};

/// One event. Serialized with its wire name in `type`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum Event {
    /// The first event of every `/api/events` stream.
    #[serde(rename = "ready", rename_all = "camelCase")]
    Ready { nodes_online: u64 },
    /// The client fell behind and missed this many events: refresh from the REST API.
    #[serde(rename = "gap")]
    Gap { missed: u64 },
    #[serde(rename = "node.online", rename_all = "camelCase")]
    NodeOnline { node_id: String, name: String },
    #[serde(rename = "node.offline", rename_all = "camelCase")]
    NodeOffline {
        node_id: String,
        name: String,
        reason: String,
    },
    /// Many nodes came or went at once (a fleet starting, a reconnect storm): instead of one
    /// `node.online` / `node.offline` each, how many in the last moment. Refresh the nodes.
    #[serde(rename = "nodes.changed", rename_all = "camelCase")]
    NodesChanged { online: u64, offline: u64 },
    /// A device without a token asks to join as a node (device pairing) and waits.
    #[serde(rename = "pairing.requested", rename_all = "camelCase")]
    PairingRequested {
        fingerprint: String,
        name: String,
        hostname: String,
        address: String,
    },
    /// A pairing request was approved, rejected or withdrawn (the device left or its
    /// request lapsed): refresh the pending list.
    #[serde(rename = "pairing.changed", rename_all = "camelCase")]
    PairingChanged {
        fingerprint: String,
        #[cfg_attr(test, ts(type = "string"))]
        status: String,
    },
    /// A node answered `config:push`.
    #[serde(rename = "node.config", rename_all = "camelCase")]
    NodeConfig {
        node_id: String,
        #[cfg_attr(test, ts(type = "unknown"))]
        config: ConfigAck,
    },
    /// An environment was created, changed or (`deleted`) removed.
    #[serde(rename = "environment.changed", rename_all = "camelCase")]
    EnvironmentChanged {
        environment_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        deleted: Option<bool>,
    },
    #[serde(rename = "binding.status", rename_all = "camelCase")]
    BindingStatus {
        binding_id: String,
        environment_id: String,
        node_id: String,
        status: BindingStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        step: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(test, ts(optional))]
        message: Option<String>,
    },
    /// A line of setup output was stored.
    #[serde(rename = "binding.log", rename_all = "camelCase")]
    BindingLog {
        binding_id: String,
        environment_id: String,
        seq: i64,
        text: String,
    },
    #[serde(rename = "task.created", rename_all = "camelCase")]
    TaskCreated {
        task_id: String,
        node_id: Option<String>,
        state: TaskState,
    },
    #[serde(rename = "task.state", rename_all = "camelCase")]
    TaskState { task_id: String, state: TaskState },
    /// A running task asks for an operator's approval.
    #[serde(rename = "task.approval", rename_all = "camelCase")]
    TaskApproval {
        task_id: String,
        /// `awaiting approval`.
        status: String,
        approval_id: String,
        tool_call_id: String,
    },
    /// A node's `task:progress` envelope, passed through.
    #[serde(rename = "task.progress", rename_all = "camelCase")]
    TaskProgress {
        task_id: String,
        node_id: String,
        #[cfg_attr(test, ts(type = "unknown"))]
        event: Value,
    },
    #[serde(rename = "thread.changed", rename_all = "camelCase")]
    ThreadChanged { thread_id: String },
    /// A scheduled job was created, changed, ran or was deleted.
    #[serde(rename = "job.changed", rename_all = "camelCase")]
    JobChanged {
        job_id: String,
        environment_id: String,
    },
}

impl Event {
    /// The wire name (`node.online`, ...), also the SSE `event:` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Ready { .. } => "ready",
            Event::Gap { .. } => "gap",
            Event::NodeOnline { .. } => "node.online",
            Event::NodeOffline { .. } => "node.offline",
            Event::NodesChanged { .. } => "nodes.changed",
            Event::NodeConfig { .. } => "node.config",
            Event::PairingRequested { .. } => "pairing.requested",
            Event::PairingChanged { .. } => "pairing.changed",
            Event::EnvironmentChanged { .. } => "environment.changed",
            Event::BindingStatus { .. } => "binding.status",
            Event::BindingLog { .. } => "binding.log",
            Event::TaskCreated { .. } => "task.created",
            Event::TaskState { .. } => "task.state",
            Event::TaskApproval { .. } => "task.approval",
            Event::TaskProgress { .. } => "task.progress",
            Event::ThreadChanged { .. } => "thread.changed",
            Event::JobChanged { .. } => "job.changed",
        }
    }
}

/// An event with the time it happened, as sent in `data:`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventEnvelope {
    #[serde(flatten)]
    pub event: Event,
    /// RFC 3339.
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_type_and_time() {
        let e = EventEnvelope {
            event: Event::TaskState {
                task_id: "t".into(),
                state: TaskState::Running,
            },
            at: "2026-11-30T00:00:00.000Z".into(),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            r#"{"type":"task.state","taskId":"t","state":"running","at":"2026-11-30T00:00:00.000Z"}"#
        );
        let back: EventEnvelope = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.event.kind(), "task.state");
    }
}
