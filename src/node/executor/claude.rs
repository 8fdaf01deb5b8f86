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

use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::cli::{self, CLAUDE_CODE};
use super::llm::approval;
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
    if let Some(s) = &session {
        args.extend(["--resume".into(), s.clone()]);
    }
    let mut env = run.env.clone();
    env.entry("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into())
        .or_insert_with(|| "1".into());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = found.path.display().to_string();
    let prepared = match run.confine.command(&bin, &arg_refs, run.cwd, &env) {
        Ok(p) => p,
        Err(e) => return RunOutcome::Failed(e),
    };
    let mut cmd = prepared.cmd;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    crate::node::sandbox::own_session(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return RunOutcome::Failed(format!("cannot start Claude Code: {e}")),
    };
    let _guard = prepared.guard;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return RunOutcome::Failed("Claude Code's pipes are missing".into());
    };
    let errors = tokio::spawn(async move {
        let mut tail = String::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tail.push_str(&l);
            tail.push('\n');
            if tail.len() > 8192 {
                tail.drain(..tail.len() - 4096);
            }
        }
        tail
    });
    let first = json!({"type": "user", "message": {"role": "user",
        "content": [{"type": "text", "text": run.input}]}});
    if write_line(&mut stdin, &first).await.is_err() {
        return RunOutcome::Failed("Claude Code exited before reading its input".into());
    }
    let mut stdin = Some(stdin);
    let mut map = Mapper::new(&run);
    let mut lines = BufReader::new(stdout).lines();
    let mut asking = FuturesUnordered::new();
    let mut outcome: Option<RunOutcome> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let Ok(event) = serde_json::from_str::<Value>(&line) else { continue };
                    match event["type"].as_str() {
                        Some("control_request") => {
                            let req = event["request"].clone();
                            let id = event["request_id"].clone();
                            let run = &run;
                            asking.push(async move { (id, answer(run, &req).await) });
                        }
                        Some("result") => {
                            // The turn is over: its last line. Closing stdin ends the CLI.
                            outcome = Some(map.result(&event));
                            break;
                        }
                        _ => map.event(&event).await,
                    }
                }
                Ok(None) | Err(_) => break,
            },
            Some((id, response)) = asking.next() => {
                let reply = json!({"type": "control_response", "response": {
                    "subtype": "success", "request_id": id, "response": response}});
                if let Some(w) = stdin.as_mut() {
                    let _ = write_line(w, &reply).await;
                }
            }
            _ = run.abort.cancelled(), if outcome.is_none() => {
                outcome = Some(RunOutcome::Interrupted);
                super::shell::stop_group(pgid, run.stop_grace, &mut child).await;
                break;
            }
        }
    }
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    // Nothing the run started may outlive it (a background process of a Bash call, or a
    // CLI that did not exit).
    super::shell::stop_group(pgid, Duration::ZERO, &mut child).await;
    let tail = tokio::time::timeout(Duration::from_secs(1), errors)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    map.close();
    match outcome {
        Some(o) => o,
        None => RunOutcome::Failed(format!(
            "Claude Code ended without a result ({}){}",
            match status {
                Ok(Ok(s)) => s.to_string(),
                _ => "still running; killed".into(),
            },
            if tail.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", crate::text::head(tail.trim(), 2000))
            }
        )),
    }
}

async fn write_line(w: &mut tokio::process::ChildStdin, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    w.flush().await
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
    match run
        .emit
        .request_approval(call, approval::timeout(run.options), &run.abort)
        .await
    {
        Some((true, _)) => allow,
        Some((false, reason)) => json!({"behavior": "deny", "message": format!(
            "The operator denied this{}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        )}),
        None => json!({"behavior": "deny", "message": "interrupted", "interrupt": true}),
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
