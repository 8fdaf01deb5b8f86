//! The `claude-code` executor: Claude Code's CLI driven the way its SDK drives it, over
//! stdio in stream-json (`claude -p --input-format stream-json --output-format stream-json
//! --verbose --include-partial-messages --permission-prompt-tool stdio`), inside the task's
//! sandbox with a writable home of the working dir's own.
//!
//! - The input goes in as one `user` message; the run ends at the CLI's `result` line.
//! - Its events become UI chunks: each API message a step, text and thinking deltas, each
//!   tool call `tool-input-start/delta/available` with the CLI's tool name and input, its
//!   result `tool-output-available` (or `-error`), usage and cost as message metadata.
//! - Permission prompts (`control_request` `can_use_tool`) are answered by the working mode:
//!   always-execute allows, always-ask asks the operator, agent-decides lets the CLI accept
//!   edits in the working dir (`--permission-mode acceptEdits`) and asks about commands
//!   unless allowlisted. Asking is the existing approval flow; the answer goes back as a
//!   `control_response`. Root nodes cannot bypass permissions (the CLI refuses), so this is
//!   how always-execute works everywhere.
//! - A follow-up resumes the CLI's session (`--resume`); stop and steer end the process group.
//!
//! Credentials are the task's: `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL` (or
//! `CLAUDE_CODE_OAUTH_TOKEN`) from the environment's secrets and variables.

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::time::Duration;

use serde_json::{json, Value};

use super::agent_process::AgentProcess;
use super::cli::{self, CLAUDE_CODE};
use super::llm::approval::{self, Approval};
use super::{Executor, Run, RunOutcome};
use crate::protocol::ui::UiChunk;
use crate::protocol::WorkingMode;

pub struct ClaudeCode;

impl Executor for ClaudeCode {
    fn name(&self) -> &'static str {
        "claude-code"
    }

    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, RunOutcome> {
        Box::pin(drive(run))
    }
}

/// Tools that only read: agent-decides runs them without asking.
fn read_only(tool: &str) -> bool {
    matches!(
        tool,
        "Read" | "Glob" | "Grep" | "LS" | "TodoWrite" | "NotebookRead" | "TaskList" | "TaskGet"
    )
}

/// Whether the operator must answer a permission prompt for `tool` under the task's mode.
fn must_ask(run: &Run<'_>, tool: &str, input: &Value) -> bool {
    let opts = run.options;
    if opts.require_approval.iter().any(|t| t == tool) {
        return true;
    }
    match opts.working_mode.unwrap_or(WorkingMode::AlwaysExecute) {
        WorkingMode::AlwaysExecute => false,
        WorkingMode::AlwaysAsk => true,
        WorkingMode::AgentDecides if read_only(tool) => false,
        WorkingMode::AgentDecides if tool == "Bash" => {
            // The same rule as the built-in agent's bash tool.
            approval::needs_approval(opts, "bash", &json!({"command": input["command"]}))
        }
        WorkingMode::AgentDecides => true,
    }
}

async fn drive(run: Run<'_>) -> RunOutcome {
    let Some(found) = CLAUDE_CODE.installed() else {
        return RunOutcome::Failed(CLAUDE_CODE.missing());
    };
    let session = cli::session(&run).await;
    let mode = match run.options.working_mode {
        Some(WorkingMode::AgentDecides) => "acceptEdits",
        _ => "default",
    };
    let mut args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--include-partial-messages",
        "--permission-prompt-tool",
        "stdio",
        "--permission-mode",
        mode,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(m) = &run.options.model {
        args.extend(["--model".into(), m.clone()]);
    }
    let mut env = run.env.clone();
    env.entry("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into())
        .or_insert_with(|| "1".into());
    let (mut cli, mut pending) = match start(&run, &found.path, &args, session, &env).await {
        Ok(started) => started,
        Err(e) => return RunOutcome::Failed(e),
    };
    let mut map = Mapper::new(&run);
    let mut asking = FuturesUnordered::new();
    let outcome = loop {
        tokio::select! {
            event = next(&mut cli, &mut pending) => match event {
                None => break None,
                Some(event) => match event["type"].as_str() {
                    Some("control_request") => {
                        let req = event["request"].clone();
                        let id = event["request_id"].clone();
                        let run = &run;
                        asking.push(async move { (id, answer(run, &req).await) });
                    }
                    // The turn is over: its last line. Closing stdin ends the CLI.
                    Some("result") => break Some(map.result(&event)),
                    // The CLI retries a refused key for minutes; it will not get better.
                    Some("system") if refused(&event) => {
                        break Some(RunOutcome::Failed(format!(
                            "the model provider refused Claude Code's credentials (HTTP {}, {}): \
                             check ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN",
                            event["error_status"],
                            event["error"].as_str().unwrap_or("authentication failed")
                        )))
                    }
                    _ => map.event(&event).await,
                },
            },
            Some((id, response)) = asking.next() => {
                let reply = json!({"type": "control_response", "response": {
                    "subtype": "success", "request_id": id, "response": response}});
                cli.send(&reply).await;
            }
            _ = run.abort.cancelled() => {
                cli.interrupt(run.stop_grace).await;
                break Some(RunOutcome::Interrupted);
            }
        }
    };
    drop(asking);
    map.close();
    match outcome {
        Some(o) => {
            cli.finish().await;
            o
        }
        None => RunOutcome::Failed(cli.ended_early().await),
    }
}

/// How long a resumed session may take to say it started. Claude Code 2.1.197 can hang
/// without a word on `--resume` (seen offline, after a `HEAD /` to the API's base URL).
const RESUME_WAIT: Duration = Duration::from_secs(15);

/// Starts the CLI and hands it the input; resumes `session` when it can, else starts a new
/// one and says so in the stream. Returns the process and the first event it printed.
async fn start(
    run: &Run<'_>,
    bin: &std::path::Path,
    args: &[String],
    session: Option<String>,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(AgentProcess, Option<Value>), String> {
    let input = json!({"type": "user", "message": {"role": "user",
        "content": [{"type": "text", "text": run.input}]}});
    if let Some(s) = &session {
        let mut resumed = args.to_vec();
        resumed.extend(["--resume".into(), s.clone()]);
        let mut cli = AgentProcess::start(run, &CLAUDE_CODE, bin, &resumed, env)?;
        if cli.send(&input).await {
            if let Ok(Some(first)) = tokio::time::timeout(RESUME_WAIT, cli.next()).await {
                return Ok((cli, Some(first)));
            }
        }
        let (status, tail) = cli.finish().await;
        tracing::warn!(session = %s, %status, stderr = %tail, "Claude Code did not resume its session");
        let id = format!("{}-resume", run.part_id);
        run.emit.chunk(UiChunk::TextStart { id: id.clone() });
        run.emit.chunk(UiChunk::text_delta(
            &id,
            "(Claude Code could not resume the earlier session; this turn starts a new one.)\n",
        ));
        run.emit.chunk(UiChunk::TextEnd { id });
    }
    let mut cli = AgentProcess::start(run, &CLAUDE_CODE, bin, args, env)?;
    if !cli.send(&input).await {
        return Err(cli.ended_early().await);
    }
    Ok((cli, None))
}

/// The event kept from start-up, then the CLI's next.
async fn next(cli: &mut AgentProcess, pending: &mut Option<Value>) -> Option<Value> {
    match pending.take() {
        Some(v) => Some(v),
        None => cli.next().await,
    }
}

/// A retry notice for a request the provider refused for its credentials.
fn refused(event: &Value) -> bool {
    event["subtype"] == "api_retry" && matches!(event["error_status"].as_u64(), Some(401 | 403))
}

/// The answer to one `can_use_tool` prompt.
async fn answer(run: &Run<'_>, req: &Value) -> Value {
    let tool = req["tool_name"].as_str().unwrap_or("");
    let input = &req["input"];
    let allow = json!({"behavior": "allow", "updatedInput": input});
    if req["subtype"] != "can_use_tool" {
        return json!({});
    }
    if !must_ask(run, tool, input) {
        return allow;
    }
    let call = req["tool_use_id"].as_str().unwrap_or("");
    match approval::ask(run, call).await {
        Approval::Approved => allow,
        Approval::Denied(reason) => json!({"behavior": "deny", "message": format!(
            "The operator denied this{}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        )}),
        Approval::Interrupted => {
            json!({"behavior": "deny", "message": "interrupted", "interrupt": true})
        }
    }
}

/// What is open in the current API message, by content block index.
#[derive(Clone)]
enum Block {
    Text(String),
    Reasoning(String),
    Tool,
}

/// Turns the CLI's events into UI chunks.
struct Mapper<'r, 'a> {
    run: &'r Run<'a>,
    blocks: std::collections::HashMap<u64, (Block, String)>,
    in_step: bool,
    message: u32,
}

impl<'r, 'a> Mapper<'r, 'a> {
    fn new(run: &'r Run<'a>) -> Self {
        Mapper {
            run,
            blocks: Default::default(),
            in_step: false,
            message: 0,
        }
    }

    fn chunk(&self, c: UiChunk) {
        self.run.emit.chunk(c);
    }

    async fn event(&mut self, e: &Value) {
        match e["type"].as_str() {
            Some("system") if e["subtype"] == "init" => {
                if let Some(s) = e["session_id"].as_str() {
                    cli::remember_session(self.run, s).await;
                }
            }
            Some("stream_event") => self.stream(&e["event"]),
            Some("assistant") => {
                for b in e["message"]["content"].as_array().into_iter().flatten() {
                    if b["type"] == "tool_use" {
                        self.chunk(UiChunk::ToolInputAvailable {
                            tool_call_id: b["id"].as_str().unwrap_or("").into(),
                            tool_name: b["name"].as_str().unwrap_or("").into(),
                            input: b["input"].clone(),
                        });
                    }
                }
            }
            Some("user") => {
                for b in e["message"]["content"].as_array().into_iter().flatten() {
                    if b["type"] != "tool_result" {
                        continue;
                    }
                    let id = b["tool_use_id"].as_str().unwrap_or("").to_string();
                    let text = result_text(&b["content"]);
                    let safe = self.run.emit.redact(&text);
                    if b["is_error"] == true {
                        self.chunk(UiChunk::ToolOutputError {
                            tool_call_id: id,
                            error_text: safe,
                        });
                    } else {
                        self.chunk(UiChunk::ToolOutputAvailable {
                            tool_call_id: id,
                            output: Value::String(safe),
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn stream(&mut self, ev: &Value) {
        let index = ev["index"].as_u64().unwrap_or(0);
        match ev["type"].as_str() {
            Some("message_start") => {
                self.message += 1;
                self.blocks.clear();
                self.chunk(UiChunk::StartStep);
                self.in_step = true;
            }
            Some("content_block_start") => {
                let b = &ev["content_block"];
                let id = format!("{}-{}-{index}", self.run.part_id, self.message);
                let block = match b["type"].as_str() {
                    Some("text") => {
                        self.chunk(UiChunk::TextStart { id: id.clone() });
                        Block::Text(id.clone())
                    }
                    Some("thinking") => {
                        self.chunk(UiChunk::ReasoningStart { id: id.clone() });
                        Block::Reasoning(id.clone())
                    }
                    Some("tool_use") => {
                        let call = b["id"].as_str().unwrap_or("").to_string();
                        self.chunk(UiChunk::ToolInputStart {
                            tool_call_id: call.clone(),
                            tool_name: b["name"].as_str().unwrap_or("").into(),
                        });
                        self.blocks.insert(index, (Block::Tool, call));
                        return;
                    }
                    _ => return,
                };
                self.blocks.insert(index, (block, id));
            }
            Some("content_block_delta") => {
                let Some((block, id)) = self.blocks.get(&index).cloned() else {
                    return;
                };
                let d = &ev["delta"];
                match (block, d["type"].as_str()) {
                    (Block::Text(_), Some("text_delta")) => {
                        self.chunk(UiChunk::text_delta(&id, d["text"].as_str().unwrap_or("")))
                    }
                    (Block::Reasoning(_), Some("thinking_delta")) => {
                        self.chunk(UiChunk::ReasoningDelta {
                            id,
                            delta: d["thinking"].as_str().unwrap_or("").into(),
                        })
                    }
                    (Block::Tool, Some("input_json_delta")) => {
                        self.chunk(UiChunk::ToolInputDelta {
                            tool_call_id: id,
                            input_text_delta: d["partial_json"].as_str().unwrap_or("").into(),
                        })
                    }
                    _ => {}
                }
            }
            Some("content_block_stop") => match self.blocks.get(&index) {
                Some((Block::Text(id), _)) => self.chunk(UiChunk::TextEnd { id: id.clone() }),
                Some((Block::Reasoning(id), _)) => {
                    self.chunk(UiChunk::ReasoningEnd { id: id.clone() })
                }
                _ => {}
            },
            Some("message_stop") => self.close(),
            _ => {}
        }
    }

    /// The `result` line: usage and cost as metadata, and how the run ended.
    fn result(&mut self, e: &Value) -> RunOutcome {
        let usage = &e["usage"];
        let input = usage["input_tokens"].as_i64().unwrap_or(0)
            + usage["cache_creation_input_tokens"].as_i64().unwrap_or(0)
            + usage["cache_read_input_tokens"].as_i64().unwrap_or(0);
        let mut meta = json!({"usage": {"inputTokens": input,
            "outputTokens": usage["output_tokens"].as_i64().unwrap_or(0)}});
        if let Some(model) = e["modelUsage"].as_object().and_then(|m| m.keys().next()) {
            meta["model"] = json!(model);
        }
        if let Some(cost) = e["total_cost_usd"].as_f64() {
            meta["costUsd"] = json!(cost);
        }
        self.chunk(UiChunk::MessageMetadata {
            message_metadata: meta,
        });
        if e["is_error"] == true {
            let why = e["result"]
                .as_str()
                .or(e["error"].as_str())
                .unwrap_or("Claude Code reported an error");
            RunOutcome::Failed(self.run.emit.redact(why))
        } else {
            RunOutcome::Exited(0)
        }
    }

    /// Ends the open step (at a message's end, or one an interrupted stream left open).
    fn close(&mut self) {
        if self.in_step {
            self.chunk(UiChunk::FinishStep);
            self.in_step = false;
        }
    }
}

/// A tool result's text: a string, or the text blocks of a content array.
fn result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}
