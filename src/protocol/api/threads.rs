//! Threads and their messages.

use serde::{Deserialize, Serialize};

use super::tasks::{TaskUsage, TaskView};
use crate::protocol::names::wire_enum;
use crate::protocol::{ExecutorKind, InjectionMode, TaskState};

wire_enum! {
    pub enum ThreadStatus ("status") {
        Active = "active",
        Paused = "paused",
        Archived = "archived",
    }
}

/// `POST /api/threads`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateThread {
    pub environment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `GET /api/threads?environmentId=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ThreadListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_id: Option<String>,
}

/// `PATCH /api/threads/:id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchThread {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Parsed by the gateway so an unknown status gets a 422 that lists the known ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// With `status: archived`: also delete the thread's branch (default: keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub delete_branch: Option<bool>,
}

/// `POST /api/threads/:id/messages`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendMessage {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection_mode: Option<String>,
    /// The executor for this and the thread's later messages (default: the thread's, else
    /// the environment's default, else `llm` where the node offers it, else `shell`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    #[schema(nullable = false)]
    pub active_node_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_message_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_task_state: Option<TaskState>,
    /// The executor the thread's messages run with (the first message's, or the last one
    /// that named another). Agent CLIs continue the thread's session on the same node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub executor: Option<crate::protocol::ExecutorKind>,
    /// The thread's git worktree (`GET /api/threads/:id` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub worktree: Option<super::WorktreeView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ThreadList {
    pub threads: Vec<ThreadView>,
}

/// A message that joined the thread's running task instead of starting one.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct FollowUpAccepted {
    pub thread_id: String,
    pub task_id: String,
    pub follow_up: bool,
    /// The node applied the message already; false: stored and sent when the node is back.
    pub delivered: bool,
}

/// The task a thread message ran as (or joined).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct MessageTask {
    pub state: TaskState,
    pub executor: ExecutorKind,
    /// Null until the task ends.
    #[schema(required = true)]
    pub exit_code: Option<i32>,
    #[schema(required = true)]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    #[schema(nullable = false)]
    pub usage: Option<TaskUsage>,
    /// When retention deleted the task's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    #[schema(nullable = false)]
    pub output_pruned_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct ThreadMessageView {
    pub id: i64,
    pub message: String,
    pub task_id: String,
    pub created_at: String,
    /// Set for a follow-up that joined a running task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub injection_mode: Option<InjectionMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub task: Option<MessageTask>,
    /// The task's text output (left out with `?output=false` and for follow-ups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub output: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ThreadMessages {
    pub messages: Vec<ThreadMessageView>,
}

/// `GET /api/threads/:id/messages?output=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// `false` leaves out each task's output text (the board streams it instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<bool>,
}

/// `POST /api/threads/:id/messages`: a new task (201), or a follow-up to the running one (202).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SendOutcome {
    FollowUp(FollowUpAccepted),
    Started(Box<TaskView>),
}
