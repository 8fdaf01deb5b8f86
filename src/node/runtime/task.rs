//! One task's life on this node, from `task:submit` to its final frame.
//!
//! Owns: accepting a submission (duplicates, unsafe ids, a task a previous process of this
//! node left behind), the task's span, preparing what its runs share (executor, working
//! directory, environment, conversation memory), running its inputs one after another with
//! the executor, and turning the last outcome into the closing chunks and the final
//! `task:completed` / `task:error` frame.
//!
//! Must not touch: the order of inputs and what stop/steer/follow-up mean (`control.rs`), how
//! chunks are redacted and queued (`emitter.rs`), what an executor does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::control::{Control, Inbox};
use super::{Emitter, Runtime};
use crate::node::executor::llm::approval;
use crate::node::executor::{self, Executor, Run, RunOutcome};
use crate::node::sandbox::{Confinement, Mount, Network, NetworkAsk};
use crate::protocol::ui::{FinishReason, UiChunk, NETWORK_TOOL};
use crate::protocol::{Frame, TaskOutcome, TaskSubmit};

/// Default grace period between stop signals.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(2);

impl Runtime {
    pub(super) fn submit(&self, submit: TaskSubmit) {
        let id = submit.task_id.clone();
        // Everything the node does for this task is logged inside this span. It is a root:
        // the task outlives the connection that submitted it. At ERROR level so that it is
        // enabled whenever any of the task's events is.
        let span =
            tracing::error_span!(parent: None, "task", task = %id, executor = %submit.executor);
        let _entered = span.enter();
        if self.running().contains_key(&id) || self.outbox().contains(&id) {
            tracing::debug!("duplicate task:submit ignored");
            return;
        }
        if !valid_task_id(&id) {
            tracing::warn!("refusing task with an unsafe id");
            return;
        }
        let log_path = self.inner.sessions_dir.join(format!("{id}.jsonl"));
        let resumed_after_restart = log_path.exists();
        if let Err(e) = self.outbox().open(&id, &log_path) {
            tracing::error!(error = %e, "cannot open session log");
            return;
        }
        let secret_values: Vec<String> = submit.secrets.iter().map(|s| s.value.clone()).collect();
        let emitter = Emitter::new(self.inner.clone(), id.clone(), &secret_values, span.clone());
        if resumed_after_restart {
            // A previous process of this node started the task and died with it.
            end(
                &emitter,
                TaskOutcome::failed("the node restarted while this task ran"),
            );
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.running().insert(id.clone(), tx);
        let runtime = self.clone();
        let task = async move {
            run_task(&runtime, submit, emitter, rx).await;
            runtime.running().remove(&id);
        };
        self.inner.tracker.spawn(task.instrument(span.clone()));
    }
}

/// Task ids become file names: allow only a conservative alphabet.
fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What every run of a task shares.
struct Task {
    submit: TaskSubmit,
    exec: &'static dyn Executor,
    cwd: PathBuf,
    env: BTreeMap<String, String>,
    grace: Duration,
    confine: Confinement,
    /// The conversation so far (the `llm` executor continues it on a follow-up).
    memory: tokio::sync::Mutex<Vec<serde_json::Value>>,
}

/// Runs a task to its end; the final frame is its last.
async fn run_task(
    runtime: &Runtime,
    submit: TaskSubmit,
    emit: Emitter,
    control: mpsc::UnboundedReceiver<Control>,
) {
    // Shared with the allowlist proxy, which asks the operator through the task's stream.
    let emit = Arc::new(emit);
    emit.reliable(false, |seq| Frame::TaskStarted {
        task_id: emit.task_id().to_string(),
        seq,
    });
    tracing::info!("task started");
    let mut submit = submit;
    let placed = in_worktree(runtime, &mut submit).await;
    let task = match placed.and_then(|mounts| prepare(runtime, submit, &emit, mounts)) {
        Ok(task) => task,
        Err(msg) => {
            emit.chunk(UiChunk::Error {
                error_text: msg.clone(),
            });
            end(&emit, TaskOutcome::failed(msg));
            return;
        }
    };
    emit.chunk(UiChunk::Start {
        message_id: Some(emit.task_id().to_string()),
        message_metadata: None,
    });
    let mut inbox = Inbox::new(control, task.submit.goal.clone());
    let last = run_inputs(&task, &emit, &mut inbox).await;
    match inbox.stopped() {
        Some(why) => finish_stopped(&emit, why),
        None => finish(&emit, last),
    }
}

/// A thread's task in a git environment runs in the thread's worktree (created and set up
/// first when missing): moves its working dir there; what the sandbox adds for it.
async fn in_worktree(runtime: &Runtime, submit: &mut TaskSubmit) -> Result<Vec<Mount>, String> {
    let Some(spec) = submit.options.worktree.clone() else {
        return Ok(Vec::new());
    };
    let (dir, mounts) = runtime.thread_worktree(submit, &spec).await?;
    submit.options.cwd = Some(dir.display().to_string());
    Ok(mounts)
}

/// The executor, working directory and environment of a task's runs; an error message
/// when the node cannot run it.
fn prepare(
    runtime: &Runtime,
    submit: TaskSubmit,
    emit: &Arc<Emitter>,
    mounts: Vec<Mount>,
) -> Result<Task, String> {
    let exec = executor::for_kind(submit.executor);
    let cwd = submit
        .options
        .cwd
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| runtime.inner.workspace_dir.join(super::DEFAULT_TASK_DIR));
    if !cwd.is_dir() {
        return Err(format!(
            "working directory {} does not exist on this node",
            cwd.display()
        ));
    }
    let ask = approval::asks(&submit.options).then(|| {
        Arc::new(AskOperator {
            emit: emit.clone(),
            timeout: approval::timeout(&submit.options),
        }) as Arc<dyn NetworkAsk>
    });
    let confine = Confinement {
        sandbox: runtime.sandbox().clone(),
        network: Network::of(&submit.options, ask),
        container: submit.options.container.clone(),
        // Agent CLIs keep their state in a home of the working dir's own.
        home: executor::needs_home(submit.executor).then(|| agent_home(runtime, &cwd)),
        terminal: submit
            .options
            .terminal
            .as_deref()
            .and_then(|id| runtime.terminals().typed_shell(id)),
        mounts,
    };
    confine.check(&cwd)?;
    let mut env: BTreeMap<String, String> = submit.options.env.clone();
    for s in &submit.secrets {
        match (&s.file, &confine.home) {
            (None, _) => {
                env.insert(s.name.clone(), s.value.clone());
            }
            (Some(file), Some(home)) => write_secret_file(home, file, &s.value)?,
            // Only agent CLIs (which get a home) read credential files.
            (Some(_), None) => {}
        }
    }
    env.insert("VIBER_TASK_ID".into(), submit.task_id.clone());
    env.insert("VIBER_NODE_ID".into(), runtime.inner.node_id.clone());
    let grace = submit
        .options
        .stop_grace_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_STOP_GRACE);
    Ok(Task {
        submit,
        exec,
        cwd,
        env,
        grace,
        confine,
        memory: tokio::sync::Mutex::new(Vec::new()),
    })
}

/// A writable home for an agent CLI, one per working dir, under the workspace (so in no
/// other task's view): `workspace/.agent-homes/<hash of the working dir>`.
fn agent_home(runtime: &Runtime, cwd: &std::path::Path) -> PathBuf {
    let digest = ring::digest::digest(&ring::digest::SHA256, cwd.as_os_str().as_encoded_bytes());
    runtime
        .inner
        .workspace_dir
        .join(".agent-homes")
        .join(crate::crypto::hex(&digest.as_ref()[..8]))
}

/// Writes a secret file into the agent home, readable by the node's user only. Every step
/// of the path stays beneath the home (the gateway checked the path; a symlink the agent
/// left in its home cannot lead the write elsewhere).
fn write_secret_file(home: &std::path::Path, file: &str, value: &str) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("writing secret file {file}: {e}");
    std::fs::create_dir_all(home).map_err(fail)?;
    crate::node::beneath::Beneath::open_root(home)
        .and_then(|b| b.write_private(std::path::Path::new(file), value.as_bytes()))
        .map_err(fail)
}

/// Runs the task's inputs one after another until none is left or the task is stopped;
/// returns the outcome of the last run.
async fn run_inputs(task: &Task, emit: &Emitter, inbox: &mut Inbox) -> RunOutcome {
    let mut last = RunOutcome::Exited(0);
    let mut run_no = 0u32;
    while let Some(input) = inbox.next_input() {
        run_no += 1;
        last = run_once(task, emit, inbox, &input, run_no).await;
    }
    last
}

/// One run of the executor, applying the control messages that arrive meanwhile.
async fn run_once(
    task: &Task,
    emit: &Emitter,
    inbox: &mut Inbox,
    input: &str,
    run_no: u32,
) -> RunOutcome {
    let abort = CancellationToken::new();
    let run = task.exec.run(Run {
        input,
        cwd: &task.cwd,
        env: &task.env,
        emit,
        part_id: format!("run-{run_no}"),
        abort: abort.clone(),
        stop_grace: task.grace,
        memory: &task.memory,
        options: &task.submit.options,
        confine: &task.confine,
    });
    tokio::pin!(run);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            ctrl = inbox.recv() => inbox.during_run(ctrl, &abort),
        }
    };
    if let RunOutcome::Failed(msg) = &outcome {
        emit.chunk(UiChunk::Error {
            error_text: msg.clone(),
        });
    }
    inbox.run_ended();
    outcome
}

/// Closes a stopped task.
fn finish_stopped(emit: &Emitter, why: &'static str) {
    emit.chunk(UiChunk::Abort {
        reason: Some(why.into()),
    });
    end(emit, TaskOutcome::stopped(why));
    tracing::info!(reason = why, "task stopped");
}

/// Closes a task that ran out of inputs, by the outcome of its last run.
fn finish(emit: &Emitter, last: RunOutcome) {
    match last {
        RunOutcome::Exited(0) => {
            finish_chunk(emit, FinishReason::Stop);
            end(
                emit,
                TaskOutcome::Completed {
                    exit_code: Some(0),
                    result: None,
                },
            );
            tracing::info!("task completed");
        }
        RunOutcome::Exited(code) => {
            let msg = format!("exited with status {code}");
            emit.chunk(UiChunk::Error {
                error_text: msg.clone(),
            });
            finish_chunk(emit, FinishReason::Error);
            end(
                emit,
                TaskOutcome::Failed {
                    error: msg,
                    exit_code: Some(code),
                },
            );
            tracing::info!(code, "task failed");
        }
        RunOutcome::Failed(msg) => {
            finish_chunk(emit, FinishReason::Error);
            end(emit, TaskOutcome::failed(msg));
        }
        RunOutcome::Interrupted => {
            // Only a stop ends a task on an interrupted run; this is unreachable in practice.
            finish_chunk(emit, FinishReason::Interrupted);
            end(emit, TaskOutcome::stopped("interrupted"));
        }
    }
}

fn finish_chunk(emit: &Emitter, reason: FinishReason) {
    emit.chunk(UiChunk::Finish {
        finish_reason: Some(reason),
        message_metadata: None,
    });
}

/// The task's final frame: how it ended, decided here once for the gateway to store.
fn end(emit: &Emitter, outcome: TaskOutcome) {
    let task_id = emit.task_id().to_string();
    // An error can quote what failed (a provider URL with a token in it, a command line):
    // the task's secrets are redacted from it like from its output.
    let outcome = outcome.map_text(|t| emit.redact(t));
    emit.reliable(true, move |seq| outcome.to_frame(&task_id, seq));
}

/// Asks the task's operator about a host its network allowlist does not name: a `network`
/// tool call with the host and port as input, approved or denied like any other.
struct AskOperator {
    emit: Arc<Emitter>,
    timeout: Duration,
}

impl NetworkAsk for AskOperator {
    fn ask(&self, host: String, port: u16) -> BoxFuture<'static, Result<(), String>> {
        let (emit, timeout) = (self.emit.clone(), self.timeout);
        Box::pin(async move {
            let call = crate::crypto::new_id("net");
            emit.chunk(UiChunk::ToolInputStart {
                tool_call_id: call.clone(),
                tool_name: NETWORK_TOOL.into(),
            });
            emit.chunk(UiChunk::ToolInputAvailable {
                tool_call_id: call.clone(),
                tool_name: NETWORK_TOOL.into(),
                input: serde_json::json!({"host": host, "port": port}),
            });
            // The connection waits; the task's own stop ends it with the sandbox.
            let never = CancellationToken::new();
            match emit.request_approval(&call, timeout, &never).await {
                Some((true, _)) => {
                    emit.chunk(UiChunk::ToolOutputAvailable {
                        tool_call_id: call,
                        output: serde_json::json!(format!("{host}:{port} allowed")),
                    });
                    Ok(())
                }
                answer => {
                    emit.chunk(UiChunk::ToolOutputDenied { tool_call_id: call });
                    let reason = answer.and_then(|(_, r)| r).unwrap_or_default();
                    Err(if reason.is_empty() {
                        "the operator denied it".to_string()
                    } else {
                        format!("the operator denied it: {reason}")
                    })
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Frame;

    /// Issue 12, item 5: a task's final error is redacted like its output.
    #[test]
    fn a_final_error_quoting_a_secret_is_redacted() {
        let (dir, rt, emit) = super::super::testing::task_with_secret("tok-5ecret-value-42");
        end(
            &emit,
            TaskOutcome::failed("GET https://provider.example/tok-5ecret-value-42/v1 answered 401"),
        );
        let frames = super::super::testing::queued(&rt);
        let Some(Frame::TaskError { error, .. }) = frames.last() else {
            panic!("{frames:?}");
        };
        assert!(!error.contains("5ecret"), "{error}");
        assert!(error.contains("[REDACTED]"), "{error}");
        let log = std::fs::read_to_string(dir.join("t1.jsonl")).unwrap();
        assert!(!log.contains("5ecret"), "{log}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
