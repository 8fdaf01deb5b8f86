//! The REST API's request bodies and response views (`/api/*`).
//!
//! The gateway's handlers return these types, the CLI deserializes them, and the board's
//! TypeScript types are generated from them (`assets/src/protocol.gen.ts`, checked by a unit
//! test in this module), so the three cannot drift apart. Times are RFC 3339 strings;
//! optional fields are left out rather than sent as null unless a field says otherwise.
//! Requests refuse unknown fields; views ignore them (a newer gateway may add some).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names::wire_enum;
use super::{
    BindingStrategy, ConfigAck, EnvKind, ExecutorKind, InjectionMode, SecretScope, TaskOptions,
    TaskState, ValidationCheck,
};

/// `{"error": {"code", "message"}}`: the body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

// ---- gateway and nodes ----

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub platform: String,
    pub capabilities: Vec<String>,
    pub status: NodePresence,
    pub running_tasks: Vec<String>,
    pub enrolled_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_rss_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_secs: Option<u64>,
    /// 1, 5 and 15 minute load averages (online nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<[f64; 3]>,
    /// The node's last `config:ack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(skip))]
    pub config: Option<ConfigAck>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// `POST /api/nodes/enroll`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnrollRequest {
    pub name: String,
    /// Lifetime of the token in seconds (default: the gateway's enrollment TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
}

/// A one-time enrollment token and the command that uses it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    pub name: String,
    pub token: String,
    pub expires_at: String,
    pub command: String,
}

/// `POST /api/nodes/:id/config-push`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigPushed {
    pub node_id: String,
    pub pushed: bool,
}

// ---- board sessions ----

/// `POST /api/session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub token: String,
}

/// A board session just opened (the cookie carries its id).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct SessionInfo {
    pub authenticated: bool,
    pub via: CredentialKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

// ---- tasks ----

/// `POST /api/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TaskUsage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Null when the provider did not say.
    pub model: Option<String>,
}

/// A tool call waiting for an operator's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct PendingApproval {
    pub approval_id: String,
    pub tool_call_id: String,
    /// Null when the tool call's input chunk is missing.
    pub tool_name: Option<String>,
    #[cfg_attr(test, ts(type = "unknown"))]
    pub input: Value,
}

/// One stored chunk of a task's stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ChunkEvent {
    pub seq: u64,
    #[cfg_attr(test, ts(type = "unknown"))]
    pub chunk: Value,
}

/// A task as the API shows it. The optional fields at the end appear only in the responses
/// that say so.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct TaskView {
    pub id: String,
    /// Null for a task whose node was deleted.
    #[cfg_attr(test, ts(optional = nullable))]
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
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TaskUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// `GET /api/tasks/:id` of a running task that waits for an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<PendingApproval>,
    /// `awaiting approval` alongside `awaitingApproval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `GET /api/tasks/:id`: the most recent chunks, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_events: Option<Vec<ChunkEvent>>,
    /// `POST /api/tasks/:id/stop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_requested: Option<bool>,
    /// `POST /api/threads/:id/messages` that started a task: the task id again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// `POST /api/threads/:id/messages` that started a task: the binding it runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
}

/// `POST /api/tasks/:id/message`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MessageRequest {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection_mode: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageAccepted {
    pub task_id: String,
    pub injection_mode: InjectionMode,
    pub accepted: bool,
}

/// `POST /api/tasks/:id/approvals/:approvalId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct ApprovalAnswer {
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalAnswered {
    pub task_id: String,
    pub approval_id: String,
    pub approved: bool,
}

/// `GET /api/tasks/:id/stream?follow=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StreamQuery {
    /// `false`: replay what is stored and close, without waiting for more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
}

/// `GET /api/usage?from=&to=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// Token totals of the tasks that share one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    /// The node, environment or model; null for tasks without one.
    pub key: Option<String>,
    pub tasks: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotal {
    pub tasks: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// `GET /api/usage`: tokens of agent tasks created in `[from, to)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub from: String,
    pub to: String,
    pub by_node: Vec<UsageRow>,
    pub by_environment: Vec<UsageRow>,
    pub by_model: Vec<UsageRow>,
    pub total: UsageTotal,
}

// ---- environments and bindings ----

/// A secret in a request: a bare value (runtime scope), `{value, scope}`, or null to remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SecretInput {
    Value(String),
    Scoped {
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<SecretScope>,
    },
}

/// `POST /api/environments` and `PUT /api/environments/:id`: absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parsed by the gateway so an unknown type gets a 422 that lists the known ones.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_volume: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_executor: Option<String>,
    /// Merged key by key; a null value removes a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Replaces all variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<BTreeMap<String, String>>,
    /// Changes by name; a null value removes the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<BTreeMap<String, Option<SecretInput>>>,
}

/// A secret as shown: never its value, only a mask.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SecretView {
    pub value: String,
    pub scope: SecretScope,
    pub updated_at: String,
}

wire_enum! {
    /// A binding's status as shown: the stored status, or `stale` for a ready binding whose
    /// environment changed after its last prepare.
    pub enum BindingPhase ("status") {
        Pending = "pending",
        Preparing = "preparing",
        Ready = "ready",
        Stale = "stale",
        Error = "error",
    }
}

/// An environment mapped onto one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct BindingView {
    pub id: String,
    pub environment_id: String,
    pub node_id: String,
    pub node_online: bool,
    pub strategy: BindingStrategy,
    pub status: BindingPhase,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_prepare_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct BindingList {
    pub bindings: Vec<BindingView>,
}

/// An environment as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct EnvironmentView {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: EnvKind,
    pub working_dir: String,
    pub setup_script: String,
    pub network_access: bool,
    pub persist_volume: bool,
    #[cfg_attr(test, ts(type = "Record<string, unknown>"))]
    pub metadata: Value,
    pub version: i64,
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretView>,
    pub bindings: Vec<BindingView>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_executor: Option<ExecutorKind>,
    /// Create and update: secrets too short to redact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentView>,
}

/// `POST /api/environments/:id/bindings`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BindRequest {
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<BindingStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `POST /api/environments/:id/bindings/:bid/prepare` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// Re-run setup even when nothing changed.
    #[serde(default)]
    pub force: bool,
}

/// `GET .../logs?after=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
}

/// One line of a binding's setup output (already redacted on the node).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LogLine {
    pub seq: i64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LogList {
    pub logs: Vec<LogLine>,
}

/// `POST /api/environments/:id/validate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ValidationResult {
    pub ok: bool,
    pub checks: Vec<ValidationCheck>,
}

// ---- threads ----

wire_enum! {
    pub enum ThreadStatus ("status") {
        Active = "active",
        Paused = "paused",
        Archived = "archived",
    }
}

/// `POST /api/threads`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateThread {
    pub environment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `GET /api/threads?environmentId=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
}

/// `PATCH /api/threads/:id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchThread {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Parsed by the gateway so an unknown status gets a 422 that lists the known ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `POST /api/threads/:id/messages`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendMessage {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct ThreadView {
    pub id: String,
    pub environment_id: String,
    pub title: String,
    pub status: ThreadStatus,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task_state: Option<TaskState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ThreadList {
    pub threads: Vec<ThreadView>,
}

/// A message that joined the thread's running task instead of starting one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpAccepted {
    pub thread_id: String,
    pub task_id: String,
    pub follow_up: bool,
}

/// The task a thread message ran as (or joined).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct MessageTask {
    pub state: TaskState,
    pub executor: ExecutorKind,
    /// Null until the task ends.
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    pub usage: Option<TaskUsage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct ThreadMessageView {
    pub id: i64,
    pub message: String,
    pub task_id: String,
    pub created_at: String,
    /// Set for a follow-up that joined a running task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection_mode: Option<InjectionMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<MessageTask>,
    /// The task's text output (left out with `?output=false` and for follow-ups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ThreadMessages {
    pub messages: Vec<ThreadMessageView>,
}

/// `GET /api/threads/:id/messages?output=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessagesQuery {
    /// `false` leaves out each task's output text (the board streams it instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<bool>,
}

/// `POST /api/threads/:id/messages`: a new task (201), or a follow-up to the running one (202).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SendOutcome {
    FollowUp(FollowUpAccepted),
    Started(Box<TaskView>),
}
