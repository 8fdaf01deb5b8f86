//! The `llm` executor: a multi-step tool loop against a model provider with streaming and
//! tool calls, over the OpenAI-compatible Chat Completions API (OpenAI, OpenRouter, vLLM,
//! llama.cpp server, Ollama) or the Anthropic Messages API.
//!
//! Each step streams one model response: text and reasoning become text/reasoning parts, tool
//! calls become `tool-input-start/delta/available`; then the tools run (confined to the
//! working directory) and their results, redacted, go back to the model as `tool` messages.
//! The loop ends when the model answers without tool calls, or at the step limit. The whole
//! conversation is kept per task (in the OpenAI format), so a follow-up message continues it.
//!
//! Provider settings: `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL` (or `VIBER_MODEL`),
//! or their `ANTHROPIC_*` counterparts, from the task's environment (an environment's
//! secrets), the node's `<data-dir>/llm.json` or the node's own environment. The key is sent
//! only in the request headers: never in a prompt, a log or a chunk.
//!
//! This file owns the loop: the conversation, the steps, the tool calls and their results.
//! The parts it drives, each in its own file and none touching the others' jobs:
//! - `provider.rs`: provider settings and the `WireApi` seam;
//! - `openai.rs`, `anthropic.rs`: one wire API each (request body, headers, stream events);
//! - `retry.rs`: sending one model call, with retries and backoff;
//! - `stream.rs`: assembling a streamed response and its UI chunks;
//! - `approval.rs`: which tool calls wait for an operator, and the wait.
//!
//! Must not touch: the task's lifecycle (`start`/`finish` chunks, final frames: the runtime),
//! what a tool does (`tools.rs`).

mod allowlist;
mod anthropic;
pub mod approval;
mod openai;
mod provider;
mod retry;
mod stream;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::tools::{self, ToolContext};
use super::{Executor, Run, RunOutcome};
use crate::protocol::ui::UiChunk;
use approval::{ask, Approval};
use stream::{PendingCall, Step, Usage};

pub use approval::needs_approval;
pub use provider::{load_node_config, Api, Provider, HOW_TO_CONFIGURE};

/// Steps (model calls) per run before the loop is cut off.
pub const MAX_STEPS: usize = 30;

pub struct Llm;

impl Executor for Llm {
    fn name(&self) -> &'static str {
        "llm"
    }

    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, RunOutcome> {
        Box::pin(agent_loop(run))
    }
}

fn system_prompt(cwd: &std::path::Path) -> String {
    format!(
        "You are a coding agent working in the directory {}. Use the tools to inspect and change \
         files and to run commands; paths are relative to that directory. Verify your changes \
         (run the relevant command) before you finish, then summarize what you did.",
        cwd.display()
    )
}

/// Runs the loop, then writes the messages this run added to the task's session log (redacted),
/// so the durable record holds the whole conversation.
async fn agent_loop(run: Run<'_>) -> RunOutcome {
    let mut messages = run.memory.lock().await;
    let before = messages.len();
    let outcome = steps(&run, &mut messages).await;
    for m in &messages[before..] {
        let mut m = m.clone();
        run.emit.redact_value(&mut m);
        run.emit.record(&m);
    }
    outcome
}

/// Adds the input to the conversation and runs model steps until the model is done, the
/// run is interrupted or fails, or the step limit is reached.
async fn steps(run: &Run<'_>, messages: &mut Vec<Value>) -> RunOutcome {
    let mut agent = match Agent::new(run) {
        Ok(agent) => agent,
        Err(outcome) => return outcome,
    };
    if messages.is_empty() {
        messages.push(json!({"role": "system", "content": system_prompt(run.cwd)}));
    }
    messages.push(json!({"role": "user", "content": run.input}));
    for step in 0..MAX_STEPS {
        if let ControlFlow::Break(outcome) = agent.step(step, messages).await {
            return outcome;
        }
    }
    RunOutcome::Failed(format!(
        "step limit reached: the model made {MAX_STEPS} calls without finishing"
    ))
}

/// One run of the loop: the provider, the HTTP client, where tools run, and the tokens the
/// run's model calls consumed so far.
struct Agent<'r, 'a> {
    run: &'r Run<'a>,
    provider: Provider,
    http: reqwest::Client,
    tools: ToolContext<'r>,
    usage: Usage,
}

impl<'r, 'a> Agent<'r, 'a> {
    /// Fails the run when the node has no provider for this task.
    fn new(run: &'r Run<'a>) -> Result<Self, RunOutcome> {
        let Some(provider) = Provider::resolve(run.env, run.options.model.as_deref()) else {
            return Err(RunOutcome::Failed(HOW_TO_CONFIGURE.into()));
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| RunOutcome::Failed(format!("http client: {e}")))?;
        Ok(Agent {
            run,
            provider,
            http,
            tools: ToolContext {
                root: run.cwd,
                env: run.env,
                confine: run.confine,
                abort: run.abort.clone(),
            },
            usage: Usage::default(),
        })
    }

    /// One step: a model call, then its tool calls. Breaks with the run's outcome when the
    /// model answered without tool calls or the run cannot go on.
    async fn step(&mut self, step: usize, messages: &mut Vec<Value>) -> ControlFlow<RunOutcome> {
        let run = self.run;
        run.emit.chunk(UiChunk::StartStep);
        let started = Instant::now();
        let Step { text, calls, usage } = self.call_model(step, messages).await?;
        self.usage += usage;
        tracing::debug!(
            step,
            ms = started.elapsed().as_millis() as u64,
            calls = calls.len(),
            "model step"
        );
        messages.push(assistant_message(&text, &calls));
        if calls.is_empty() {
            run.emit.chunk(UiChunk::FinishStep);
            run.emit.chunk(UiChunk::MessageMetadata {
                message_metadata: json!({"usage": {"inputTokens": self.usage.input, "outputTokens": self.usage.output}, "model": self.provider.model}),
            });
            return ControlFlow::Break(RunOutcome::Exited(0));
        }
        for call in &calls {
            self.tool_call(call, messages).await?;
        }
        run.emit.chunk(UiChunk::FinishStep);
        ControlFlow::Continue(())
    }

    /// Sends the conversation to the model and reads its streamed answer.
    async fn call_model(&self, step: usize, messages: &[Value]) -> ControlFlow<RunOutcome, Step> {
        let run = self.run;
        let wire = self.provider.api.wire();
        let body = wire.request_body(&self.provider.model, messages);
        let response = tokio::select! {
            r = retry::request(&self.http, &self.provider, &body, run) => r,
            _ = run.abort.cancelled() => return ControlFlow::Break(RunOutcome::Interrupted),
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                run.emit.chunk(UiChunk::FinishStep);
                return ControlFlow::Break(RunOutcome::Failed(e));
            }
        };
        let text_id = format!("{}-s{step}-text", run.part_id);
        let reasoning_id = format!("{}-s{step}-reasoning", run.part_id);
        let streamed = tokio::select! {
            r = stream::read_stream(wire, response, run, &text_id, &reasoning_id) => r,
            _ = run.abort.cancelled() => return ControlFlow::Break(RunOutcome::Interrupted),
        };
        match streamed {
            Ok(answer) => ControlFlow::Continue(answer),
            // The runtime reports a failed run's error (once, for every executor).
            Err(e) => {
                run.emit.chunk(UiChunk::FinishStep);
                ControlFlow::Break(RunOutcome::Failed(e))
            }
        }
    }

    /// One tool call: its input, the operator's approval when needed, the tool, and its
    /// result for the model. Breaks only when the run was interrupted.
    async fn tool_call(
        &self,
        call: &PendingCall,
        messages: &mut Vec<Value>,
    ) -> ControlFlow<RunOutcome> {
        let run = self.run;
        // An unknown tool fails before anything else, so a model cannot raise an approval
        // for a name it made up (one that looks like the node's own `network` requests).
        let parsed = if tools::known(&call.name) {
            parse_input(call)
        } else {
            Err(format!("unknown tool {:?}", call.name))
        };
        let input = match parsed {
            Ok(input) => input,
            Err(msg) => {
                run.emit.chunk(UiChunk::ToolInputAvailable {
                    tool_call_id: call.id.clone(),
                    tool_name: call.name.clone(),
                    input: json!({"raw": call.arguments}),
                });
                run.emit.chunk(UiChunk::ToolOutputError {
                    tool_call_id: call.id.clone(),
                    error_text: msg.clone(),
                });
                messages.push(tool_message(&call.id, format!("error: {msg}")));
                return ControlFlow::Continue(());
            }
        };
        run.emit.chunk(UiChunk::ToolInputAvailable {
            tool_call_id: call.id.clone(),
            tool_name: call.name.clone(),
            input: input.clone(),
        });
        if needs_approval(run.options, &call.name, &input) {
            match ask(run, &call.id).await {
                Approval::Approved => {}
                Approval::Denied(reason) => {
                    run.emit.chunk(UiChunk::ToolOutputDenied {
                        tool_call_id: call.id.clone(),
                    });
                    let told = format!(
                        "The operator denied this tool call{}. Do not retry it; continue without it or ask.",
                        reason.map(|r| format!(": {r}")).unwrap_or_default()
                    );
                    messages.push(tool_message(&call.id, run.emit.redact(&told)));
                    return ControlFlow::Continue(());
                }
                Approval::Interrupted => {
                    messages.push(tool_message(&call.id, "interrupted by the operator"));
                    return ControlFlow::Break(RunOutcome::Interrupted);
                }
            }
        }
        let result = tools::finish(
            tools::run(&call.name, &input, &self.tools).await,
            |s| run.emit.redact(s),
            |s| run.emit.redact_head(s),
        );
        if run.abort.is_cancelled() {
            run.emit.chunk(UiChunk::ToolOutputError {
                tool_call_id: call.id.clone(),
                error_text: "interrupted".into(),
            });
            messages.push(tool_message(&call.id, "interrupted by the operator"));
            return ControlFlow::Break(RunOutcome::Interrupted);
        }
        let content = self.report_result(call, result);
        // Secrets never reach the model.
        messages.push(tool_message(&call.id, run.emit.redact(&content)));
        ControlFlow::Continue(())
    }

    /// Emits a tool's output (or error) chunk; returns what the model is told.
    fn report_result(&self, call: &PendingCall, result: Result<Value, String>) -> String {
        match result {
            Ok(output) => {
                self.run.emit.chunk(UiChunk::ToolOutputAvailable {
                    tool_call_id: call.id.clone(),
                    output: output.clone(),
                });
                match output {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            Err(e) => {
                self.run.emit.chunk(UiChunk::ToolOutputError {
                    tool_call_id: call.id.clone(),
                    error_text: e.clone(),
                });
                format!("error: {e}")
            }
        }
    }
}

/// A tool call's arguments as JSON (none at all means `{}`).
fn parse_input(call: &PendingCall) -> Result<Value, String> {
    let args = if call.arguments.trim().is_empty() {
        "{}"
    } else {
        &call.arguments
    };
    serde_json::from_str(args).map_err(|e| format!("invalid JSON arguments for {}: {e}", call.name))
}

/// The model's answer as an assistant message of the conversation.
fn assistant_message(text: &str, calls: &[PendingCall]) -> Value {
    let mut assistant = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        assistant["tool_calls"] = Value::Array(
            calls
                .iter()
                .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect(),
        );
    }
    assistant
}

/// A tool result as a message of the conversation.
fn tool_message(tool_call_id: &str, content: impl Into<String>) -> Value {
    json!({"role": "tool", "tool_call_id": tool_call_id, "content": content.into()})
}
