//! Tasks on the wire: what a node is asked to run ([`TaskSubmit`], [`TaskOptions`]), the
//! states a task goes through ([`TaskState`]) and how it ended ([`TaskOutcome`]).
//!
//! The outcome is decided once: by the node for a task it ran (sent as `task:completed` or
//! `task:error`, read back with [`TaskOutcome::from_frame`]), or by the gateway for a task
//! that ended without its node (stopped while away, node lost, prepare failed).

use serde::{Deserialize, Serialize};

use super::names::wire_enum;
use super::{Frame, SecretValue};

wire_enum! {
    /// pending -> running -> completed | error | stopped (`seeds/protocol.md` section 4).
    pub enum TaskState ("state") {
        Pending = "pending",
        Running = "running",
        Completed = "completed",
        Error = "error",
        Stopped = "stopped",
    }
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Error | TaskState::Stopped
        )
    }
}

wire_enum! {
    /// The programs a node can run a task with.
    pub enum ExecutorKind ("executor") {
        /// The goal is a bash script.
        Shell = "shell",
        /// The built-in agent loop against an OpenAI-compatible or Anthropic API.
        Llm = "llm",
        /// Claude Code's CLI (`claude`), driven over stdio in stream-json.
        ClaudeCode = "claude-code",
        /// OpenAI's Codex CLI (`codex app-server`), driven over stdio in JSON-RPC.
        Codex = "codex",
        /// OpenCode (`opencode serve`), driven over its local HTTP API and event stream.
        OpenCode = "opencode",
    }
}

impl ExecutorKind {
    /// Someone else's agent CLI: it keeps its own session, state in `HOME`, and is found on
    /// the node's PATH.
    pub fn is_agent_cli(self) -> bool {
        matches!(
            self,
            ExecutorKind::ClaudeCode | ExecutorKind::Codex | ExecutorKind::OpenCode
        )
    }

    /// How to install an agent CLI on a node.
    pub fn install_hint(self) -> Option<&'static str> {
        match self {
            ExecutorKind::ClaudeCode => Some("npm install -g @anthropic-ai/claude-code"),
            ExecutorKind::Codex => Some("npm install -g @openai/codex"),
            ExecutorKind::OpenCode => Some("npm install -g opencode-ai"),
            ExecutorKind::Shell | ExecutorKind::Llm => None,
        }
    }
}

wire_enum! {
    /// How much the agent may do without asking (`seeds/architecture.md` section 4).
    pub enum WorkingMode ("working mode") {
        /// Every tool call waits for approval.
        AlwaysAsk = "always-ask",
        /// Read-only tools run; mutating tools and bash wait unless allowlisted.
        AgentDecides = "agent-decides",
        /// Nothing waits.
        AlwaysExecute = "always-execute",
    }
}

wire_enum! {
    /// How a follow-up message joins a running task.
    #[derive(Default)]
    pub enum InjectionMode ("injection mode") {
        /// Buffer; merge all buffered messages into one follow-up after the current run.
        Collect = "collect",
        /// Abort the current run at the next safe point and run this message.
        Steer = "steer",
        /// Queue a run after the current one.
        #[default]
        Followup = "followup",
    }
}

/// How a task ended. One type for every path that ends a task, so the state, the error
/// text and the exit code cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// The task's process (or agent) finished successfully.
    Completed {
        exit_code: Option<i32>,
        result: Option<String>,
    },
    /// It failed: a non-zero exit, an executor error, a failed environment prepare.
    Failed {
        error: String,
        exit_code: Option<i32>,
    },
    /// An operator stopped it.
    Stopped {
        reason: String,
        exit_code: Option<i32>,
    },
    /// Its node went away for longer than the grace period, restarted without it, or was
    /// revoked. Stored as `error`.
    NodeLost { reason: String },
}

impl TaskOutcome {
    pub fn failed(error: impl Into<String>) -> TaskOutcome {
        TaskOutcome::Failed {
            error: error.into(),
            exit_code: None,
        }
    }

    pub fn stopped(reason: impl Into<String>) -> TaskOutcome {
        TaskOutcome::Stopped {
            reason: reason.into(),
            exit_code: None,
        }
    }

    pub fn node_lost(reason: impl Into<String>) -> TaskOutcome {
        TaskOutcome::NodeLost {
            reason: reason.into(),
        }
    }

    /// The same outcome with `f` applied to its texts (error, reason, result): redaction.
    pub fn map_text(self, f: impl Fn(&str) -> String) -> TaskOutcome {
        match self {
            TaskOutcome::Completed { exit_code, result } => TaskOutcome::Completed {
                exit_code,
                result: result.map(|r| f(&r)),
            },
            TaskOutcome::Failed { error, exit_code } => TaskOutcome::Failed {
                error: f(&error),
                exit_code,
            },
            TaskOutcome::Stopped { reason, exit_code } => TaskOutcome::Stopped {
                reason: f(&reason),
                exit_code,
            },
            TaskOutcome::NodeLost { reason } => TaskOutcome::NodeLost { reason: f(&reason) },
        }
    }

    /// The state a task with this outcome is in.
    pub fn state(&self) -> TaskState {
        match self {
            TaskOutcome::Completed { .. } => TaskState::Completed,
            TaskOutcome::Failed { .. } | TaskOutcome::NodeLost { .. } => TaskState::Error,
            TaskOutcome::Stopped { .. } => TaskState::Stopped,
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            TaskOutcome::Completed { exit_code, .. }
            | TaskOutcome::Failed { exit_code, .. }
            | TaskOutcome::Stopped { exit_code, .. } => *exit_code,
            TaskOutcome::NodeLost { .. } => None,
        }
    }

    /// The error text shown for a task that did not complete.
    pub fn error(&self) -> Option<&str> {
        match self {
            TaskOutcome::Completed { .. } => None,
            TaskOutcome::Failed { error, .. } => Some(error),
            TaskOutcome::Stopped { reason, .. } | TaskOutcome::NodeLost { reason } => Some(reason),
        }
    }

    pub fn result(&self) -> Option<&str> {
        match self {
            TaskOutcome::Completed { result, .. } => result.as_deref(),
            _ => None,
        }
    }

    /// The final frame a node sends for this outcome.
    pub fn to_frame(&self, task_id: &str, seq: u64) -> Frame {
        let task_id = task_id.to_string();
        match self {
            TaskOutcome::Completed { exit_code, result } => Frame::TaskCompleted {
                task_id,
                seq,
                exit_code: *exit_code,
                result: result.clone(),
            },
            other => Frame::TaskError {
                task_id,
                seq,
                error: other.error().unwrap_or_default().to_string(),
                exit_code: other.exit_code(),
                stopped: matches!(other, TaskOutcome::Stopped { .. }),
            },
        }
    }

    /// The outcome a final frame reports (`task:completed` or `task:error`).
    pub fn from_frame(frame: &Frame) -> Option<TaskOutcome> {
        match frame {
            Frame::TaskCompleted {
                exit_code, result, ..
            } => Some(TaskOutcome::Completed {
                exit_code: *exit_code,
                result: result.clone(),
            }),
            Frame::TaskError {
                error,
                exit_code,
                stopped: true,
                ..
            } => Some(TaskOutcome::Stopped {
                reason: error.clone(),
                exit_code: *exit_code,
            }),
            Frame::TaskError {
                error, exit_code, ..
            } => Some(TaskOutcome::Failed {
                error: error.clone(),
                exit_code: *exit_code,
            }),
            _ => None,
        }
    }
}

/// A task as handed to a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskSubmit {
    pub task_id: String,
    pub goal: String,
    #[serde(default = "default_executor")]
    pub executor: ExecutorKind,
    #[serde(default)]
    pub options: TaskOptions,
    /// Runtime secrets of the task's environment, attached when the frame is sent (never
    /// stored with the task). They reach processes only as environment variables and are
    /// redacted from every output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretValue>,
}

pub fn default_executor() -> ExecutorKind {
    ExecutorKind::Shell
}

/// Per-task options; unknown keys are ignored so newer gateways can add some.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOptions {
    /// Working directory on the node; defaults to the node's workspace directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub cwd: Option<String>,
    /// Extra environment variables for the task's processes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// Grace period between stop signals, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub stop_grace_ms: Option<u64>,
    /// Model for the `llm` executor (default: the node's configured model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub model: Option<String>,
    /// When the agent must ask before running a tool (default: always-execute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub working_mode: Option<WorkingMode>,
    /// Under agent-decides: bash commands (by their first word, or an exact command) that
    /// run without asking.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
    /// Tools that always need approval, whatever the mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_approval: Vec<String>,
    /// An unanswered approval is denied after this many seconds (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub approval_timeout_secs: Option<u64>,
    /// Outbound network for the task's processes (default: on). Thread tasks get their
    /// environment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access: Option<super::NetworkAccess>,
    /// Hosts reachable under `networkAccess: allowlist` (see [`super::allowlist_entry`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_allowlist: Vec<String>,
    /// Run the task's processes in a container (thread tasks get their environment's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<super::ContainerSpec>,
    /// A terminal (in tmux) whose shell runs the task's scripts and the agent's bash
    /// commands, so a person watching it sees them live and what they start in the
    /// background stays up between tasks. The gateway sets it on a thread's `shell` and
    /// `llm` tasks (environment `metadata.terminalMode`, `tmux` by default where the node
    /// has tmux, `off` to run them apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub terminal: Option<String>,
    /// An agent CLI's session to continue (Claude Code, Codex, OpenCode): the gateway sets
    /// it on a thread's task from the thread's previous one on the same node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub resume_session: Option<String>,
    /// Run in the thread's own git worktree (see [`super::worktree`]): `cwd` names the
    /// directory of the binding's checkout, and the task runs in the same one of the
    /// worktree, created (and set up) first when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub worktree: Option<super::worktree::WorktreeSpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_final_frames() {
        for o in [
            TaskOutcome::Completed {
                exit_code: Some(0),
                result: Some("ok".into()),
            },
            TaskOutcome::Failed {
                error: "exit 3".into(),
                exit_code: Some(3),
            },
            TaskOutcome::Stopped {
                reason: "stopped".into(),
                exit_code: None,
            },
        ] {
            let f = o.to_frame("t", 4);
            assert_eq!(TaskOutcome::from_frame(&f), Some(o.clone()));
        }
        assert_eq!(TaskOutcome::node_lost("gone").state(), TaskState::Error);
    }

    #[test]
    fn names_parse_and_explain() {
        assert_eq!("steer".parse::<InjectionMode>(), Ok(InjectionMode::Steer));
        let e = "now".parse::<InjectionMode>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown injection mode "now" (collect, steer, followup)"#
        );
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
