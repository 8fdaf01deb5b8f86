//! Executors: the ways a node can carry out one run of a task (the goal, or a follow-up).
//!
//! Each executor turns its input into AI SDK UI message chunks through an [`Emitter`]. The
//! task runtime wraps every run in `start-step` / `finish-step` and the whole task in
//! `start` / `finish`; executors emit what happens inside a step.

mod shell;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

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

/// The executors this build offers, by name.
pub fn by_name(name: &str) -> Option<&'static dyn Executor> {
    match name {
        "shell" => Some(&Shell),
        _ => None,
    }
}

/// Names of the available executors (advertised as node capabilities).
pub fn names() -> Vec<String> {
    vec!["shell".to_string()]
}
