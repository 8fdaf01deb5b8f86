//! Tasks: creating, listing, messaging, approvals, streams and token usage.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::names::wire_enum;
use crate::protocol::{ExecutorKind, InjectionMode, TaskOptions, TaskState};

/// `POST /api/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub goal: String,
    /// Checked by the gateway so an unknown name gets a clear 422.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
    #[serde(default)]
    pub options: TaskOptions,
}

/// `GET /api/tasks?nodeId=&state=&limit=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TaskListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Tokens a task's agent used.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TaskUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Null when the provider did not say.
    #[schema(required = true)]
    pub model: Option<String>,
    /// What the agent reported the task cost, in US dollars (0 when it did not say).
    pub cost_usd: f64,
}

/// A tool call waiting for an operator's answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PendingApproval {
    pub approval_id: String,
    pub tool_call_id: String,
    /// Null when the tool call's input chunk is missing.
    #[schema(required = true)]
    pub tool_name: Option<String>,
    #[cfg_attr(test, ts(type = "unknown"))]
    pub input: Value,
}

/// One stored chunk of a task's stream.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ChunkEvent {
    pub seq: u64,
    #[cfg_attr(test, ts(type = "unknown"))]
    pub chunk: Value,
}

/// A task as the API shows it. The optional fields at the end appear only in the responses
/// that say so.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct TaskView {
    pub id: String,
    /// Null for a task whose node was deleted.
    #[cfg_attr(test, ts(optional = nullable))]
    #[schema(required = true)]
    pub node_id: Option<String>,
    pub goal: String,
    pub executor: ExecutorKind,
    #[cfg_attr(test, ts(type = "Record<string, unknown>"))]
    pub options: TaskOptions,
    pub state: TaskState,
    pub created_at: String,
    /// The last stream sequence number stored (-1 before the first chunk).
    pub last_seq: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub usage: Option<TaskUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub environment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub thread_id: Option<String>,
    /// When retention deleted the task's output; its summary stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub output_pruned_at: Option<String>,
    /// `GET /api/tasks/:id` of a running task that waits for an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub awaiting_approval: Option<PendingApproval>,
    /// `awaiting approval` alongside `awaitingApproval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<String>,
    /// `GET /api/tasks/:id`: the most recent chunks, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_events: Option<Vec<ChunkEvent>>,
    /// `POST /api/tasks/:id/stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stop_requested: Option<bool>,
    /// `POST /api/threads/:id/messages` that started a task: the task id again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub task_id: Option<String>,
    /// `POST /api/threads/:id/messages` that started a task: the binding it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub binding_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}

/// `POST /api/tasks/:id/message`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MessageRequest {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection_mode: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageAccepted {
    pub task_id: String,
    pub injection_mode: InjectionMode,
    pub accepted: bool,
    /// The node applied the message already; false: stored and sent when the node is back.
    pub delivered: bool,
}

/// `POST /api/tasks/:id/approvals/:approvalId`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct ApprovalAnswer {
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a network approval: how long the host stays allowed (default `once`: the rest
    /// of this task). Other approvals take only `once`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ApprovalScope>,
}

wire_enum! {
    /// How far an approved network request reaches.
    pub enum ApprovalScope ("scope") {
        /// The rest of this task.
        Once = "once",
        /// Every task of the task's thread.
        Thread = "thread",
        /// Every task of its environment (the host joins its `networkAllowlist`).
        Environment = "environment",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ApprovalAnswered {
    pub task_id: String,
    pub approval_id: String,
    pub approved: bool,
    /// The node applied the answer already; false: stored and sent when the node is back.
    pub delivered: bool,
}

/// `GET /api/tasks/:id/stream?follow=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// `false`: replay what is stored and close, without waiting for more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
}

/// `GET /api/usage?from=&to=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Token totals of the tasks that share one key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UsageRow {
    /// The node, environment or model; null for tasks without one.
    #[schema(required = true)]
    pub key: Option<String>,
    #[serde(flatten)]
    pub usage: UsageTotal,
}

/// Tokens and cost of a set of tasks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UsageTotal {
    pub tasks: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// In US dollars: what the agents reported, plus what the price table gives the tokens
    /// of tasks whose agent reported nothing.
    pub cost_usd: f64,
    /// The part of `costUsd` that comes from the price table.
    pub estimated_cost_usd: f64,
    /// Tokens neither reported with a cost nor priced by the table (their model is not in
    /// it): `costUsd` leaves them out.
    pub unpriced_tokens: i64,
}

impl UsageTotal {
    /// Adds `u` in (token sums saturate).
    pub fn add(&mut self, u: &UsageTotal) {
        self.tasks = self.tasks.saturating_add(u.tasks);
        self.input_tokens = self.input_tokens.saturating_add(u.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(u.output_tokens);
        self.cost_usd += u.cost_usd;
        self.estimated_cost_usd += u.estimated_cost_usd;
        self.unpriced_tokens = self.unpriced_tokens.saturating_add(u.unpriced_tokens);
    }
}

/// One UTC day's usage of one node, environment and model.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UsageDaily {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    #[schema(required = true)]
    pub node_id: Option<String>,
    #[schema(required = true)]
    pub environment_id: Option<String>,
    #[schema(required = true)]
    pub model: Option<String>,
    #[serde(flatten)]
    pub usage: UsageTotal,
}

/// `GET /api/usage`: tokens of agent tasks created in `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub by_node: Vec<UsageRow>,
    pub by_environment: Vec<UsageRow>,
    pub by_model: Vec<UsageRow>,
    /// By day, node, environment and model (for charts), oldest first.
    pub daily: Vec<UsageDaily>,
    pub total: UsageTotal,
    /// Models in the gateway's price table.
    pub priced_models: usize,
}
