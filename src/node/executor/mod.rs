//! Executors: the ways a node can carry out one run of a task (the goal, or a follow-up).
//!
//! Each executor turns its input into AI SDK UI message chunks through an [`Emitter`]. The
//! task runtime wraps the whole task in `start` / `finish`; executors emit their steps
//! (`start-step` ... `finish-step`: one per shell run, one per model call for the agent).
//!
//! Owns: the [`Executor`] trait, the executors by name (`shell.rs`, `llm/`), the agent's
//! tools (`tools.rs`), and bash as a process group (`run_bash`, `bash_syntax`).
//! Must not touch: the task's lifecycle, its final frames or the order of its inputs (the
//! runtime), frames or the connection. An executor ends by returning a [`RunOutcome`].

mod agent_process;
mod claude;
pub mod cli;
mod codex;
mod jsonrpc;
pub mod llm;
mod opencode;
mod shell;
pub mod tools;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::protocol::ExecutorKind;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use super::runtime::Emitter;
pub use shell::{bash_syntax, run_bash, BashRun, Shell, SyntaxError};

/// One run handed to an executor.
pub struct Run<'a> {
    /// The goal or follow-up message.
    pub input: &'a str,
    pub cwd: &'a Path,
    /// Extra environment variables for every process the run starts.
    pub env: &'a BTreeMap<String, String>,
    pub emit: &'a Emitter,
    /// Id for this run's text part (unique within the task).
    pub part_id: String,
    /// Cancelled when the run must stop at its next safe point (stop or steer).
    pub abort: CancellationToken,
    /// Grace period between escalating stop signals.
    pub stop_grace: Duration,
    /// The task's conversation so far (the `llm` executor continues it on a follow-up).
    pub memory: &'a tokio::sync::Mutex<Vec<serde_json::Value>>,
    /// The task's options (model, working mode, ...).
    pub options: &'a crate::protocol::TaskOptions,
    /// The sandbox and network every process of the run gets.
    pub confine: &'a crate::node::sandbox::Confinement,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Finished by itself; 0 means success.
    Exited(i32),
    /// Ended because `abort` was cancelled.
    Interrupted,
    /// Could not run at all.
    Failed(String),
}

pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;
    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, RunOutcome>;
}

/// The executor that runs tasks of `kind` (every kind the protocol names has one).
pub fn for_kind(kind: ExecutorKind) -> &'static dyn Executor {
    match kind {
        ExecutorKind::Shell => &Shell,
        ExecutorKind::Llm => &llm::Llm,
        ExecutorKind::ClaudeCode => &claude::ClaudeCode,
        ExecutorKind::Codex => &codex::Codex,
        ExecutorKind::OpenCode => &opencode::OpenCode,
    }
}

/// Executors that keep state in `HOME` (agent CLIs): their tasks get a writable one.
pub fn needs_home(kind: ExecutorKind) -> bool {
    kind.is_agent_cli()
}

/// Executors this node can run now (advertised as capabilities): `llm` only with a provider.
pub fn available() -> Vec<String> {
    let mut v = vec![ExecutorKind::Shell.as_str().to_string()];
    if llm::Provider::configured() {
        v.push(ExecutorKind::Llm.as_str().to_string());
    }
    for c in cli::ALL {
        v.extend(c.capabilities());
    }
    v
}
