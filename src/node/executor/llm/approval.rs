//! Operator approval of tool calls.
//!
//! Owns: which tool calls must wait for an operator ([`needs_approval`]: the task's working
//! mode, its `require_approval` tools and its allowlist of simple bash commands), and the
//! wait itself ([`ask`]: `tool-approval-request` / `tool-approval-response` chunks, the
//! timeout, an interrupt).
//!
//! Must not touch: running the tool or telling the model about the answer (the agent loop in
//! `mod.rs` does), routing the operator's answer to this task (the runtime does, through the
//! [`Emitter`](crate::node::executor::Emitter)).

use std::time::Duration;

use serde_json::Value;

use crate::node::executor::{tools, Run};
use crate::protocol::{TaskOptions, WorkingMode};

/// How long an approval waits when the task does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether a tool call must wait for an operator under the task's working mode.
pub fn needs_approval(opts: &TaskOptions, tool: &str, input: &Value) -> bool {
    if opts.require_approval.iter().any(|t| t == tool) {
        return true;
    }
    match opts.working_mode.unwrap_or(WorkingMode::AlwaysExecute) {
        WorkingMode::AlwaysAsk => true,
        WorkingMode::AlwaysExecute => false,
        WorkingMode::AgentDecides => {
            if tools::is_read_only(tool) {
                return false;
            }
            if tool == "bash" {
                return !allowlisted(opts, input["command"].as_str().unwrap_or(""));
            }
            true
        }
    }
}

/// Whether a bash command may run without asking (see `allowlist.rs` for the rule).
fn allowlisted(opts: &TaskOptions, command: &str) -> bool {
    super::allowlist::allowed(&opts.allowlist, command)
}

/// The operator's answer.
pub enum Approval {
    Approved,
    /// Denied, with the operator's reason (or why no answer came).
    Denied(Option<String>),
    /// The run was stopped or steered while it waited.
    Interrupted,
}

/// How long an approval waits under these options (denied after it).
pub fn timeout(opts: &TaskOptions) -> Duration {
    opts.approval_timeout_secs
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// Whether the task's working mode asks the operator before something new happens (a
/// tool call, or a network request its allowlist does not name).
pub fn asks(opts: &TaskOptions) -> bool {
    matches!(
        opts.working_mode,
        Some(WorkingMode::AlwaysAsk | WorkingMode::AgentDecides)
    )
}

/// Emits a `tool-approval-request` and waits for the operator (denied on timeout).
pub async fn ask(run: &Run<'_>, tool_call_id: &str) -> Approval {
    match run
        .emit
        .request_approval(tool_call_id, timeout(run.options), &run.abort)
        .await
    {
        None => Approval::Interrupted,
        Some((true, _)) => Approval::Approved,
        Some((false, reason)) => Approval::Denied(reason),
    }
}
