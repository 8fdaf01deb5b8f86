//! The `llm` executor: a multi-step tool loop against an OpenAI-compatible Chat Completions
//! API with streaming and tool calls (OpenAI, OpenRouter, vLLM, llama.cpp server, Ollama).
//!
//! Each step streams one model response: text and reasoning become text/reasoning parts, tool
//! calls become `tool-input-start/delta/available`; then the tools run (confined to the
//! working directory) and their results, redacted, go back to the model as `tool` messages.
//! The loop ends when the model answers without tool calls, or at the step limit. The whole
//! conversation is kept per task, so a follow-up message continues it.
//!
//! Provider settings: `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL` (or `VIBER_MODEL`),
//! from the task's environment (an environment's secrets) or the node's own environment. The
//! key is sent only in the `Authorization` header: never in a prompt, a log or a chunk.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::tools::{self, ToolContext};
use super::{Executor, Run, RunOutcome};
use crate::protocol::sse::SseParser;
use crate::protocol::ui::UiChunk;
use crate::protocol::{TaskOptions, WorkingMode};

/// Steps (model calls) per run before the loop is cut off.
pub const MAX_STEPS: usize = 30;
/// Attempts per model call on 429 and 5xx.
const MAX_ATTEMPTS: u32 = 5;

pub struct Llm;

/// Which wire format the provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI-compatible Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

/// Where the model lives.
#[derive(Clone)]
pub struct Provider {
    pub api: Api,
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Provider({:?} {}, model {})",
            self.api, self.base_url, self.model
        )
    }
}

/// Provider settings from the node's config file (`<data-dir>/llm.json`), loaded at start.
static NODE_CONFIG: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();

/// Loads `<data-dir>/llm.json`: an object with the same keys as the environment variables
/// (`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL`, `ANTHROPIC_*`, `VIBER_LLM_PROVIDER`).
pub fn load_node_config(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let path = data_dir.join("llm.json");
    let map: BTreeMap<String, String> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{} must be a JSON object of strings: {e}", path.display())
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    if !map.is_empty() {
        tracing::info!(path = %path.display(), "LLM provider settings loaded");
    }
    let _ = NODE_CONFIG.set(map);
    Ok(())
}

impl Provider {
    /// From the task's environment variables (e.g. an environment's secrets), then the node's
    /// config file, then the process environment. None when nothing is configured.
    pub fn resolve(task_env: &BTreeMap<String, String>, model: Option<&str>) -> Option<Provider> {
        let get = |k: &str| {
            task_env
                .get(k)
                .cloned()
                .or_else(|| NODE_CONFIG.get().and_then(|c| c.get(k).cloned()))
                .or_else(|| std::env::var(k).ok())
                .filter(|v| !v.trim().is_empty())
        };
        let openai = get("OPENAI_BASE_URL").is_some() || get("OPENAI_API_KEY").is_some();
        let anthropic = get("ANTHROPIC_BASE_URL").is_some() || get("ANTHROPIC_API_KEY").is_some();
        let api = match get("VIBER_LLM_PROVIDER").as_deref() {
            Some("anthropic") => Api::Anthropic,
            Some("openai") => Api::OpenAi,
            _ if openai => Api::OpenAi,
            _ if anthropic => Api::Anthropic,
            _ => return None,
        };
        let (base, key, model_var, default_base, default_model) = match api {
            Api::OpenAi => (
                "OPENAI_BASE_URL",
                "OPENAI_API_KEY",
                "OPENAI_MODEL",
                "https://api.openai.com/v1",
                "gpt-4o-mini",
            ),
            Api::Anthropic => (
                "ANTHROPIC_BASE_URL",
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_MODEL",
                "https://api.anthropic.com",
                "claude-sonnet-4-5",
            ),
        };
        Some(Provider {
            api,
            base_url: get(base)
                .unwrap_or_else(|| default_base.into())
                .trim_end_matches('/')
                .to_string(),
            api_key: get(key),
            model: model
                .map(str::to_string)
                .or_else(|| get(model_var))
                .or_else(|| get("VIBER_MODEL"))
                .unwrap_or_else(|| default_model.into()),
        })
    }

    /// Whether this node has a provider of its own (then `llm` is offered as a capability).
    pub fn configured() -> bool {
        Provider::resolve(&BTreeMap::new(), None).is_some()
    }
}

pub const HOW_TO_CONFIGURE: &str = "no LLM provider is configured on this node: set OPENAI_BASE_URL \
     (any OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1 for Ollama) and OPENAI_API_KEY, \
     and optionally OPENAI_MODEL, or ANTHROPIC_API_KEY (and ANTHROPIC_MODEL), in the node's \
     environment, in <data-dir>/llm.json, or as environment secrets";

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

/// A tool call being assembled from stream deltas.
#[derive(Default, Debug)]
struct PendingCall {
    id: String,
    name: String,
    arguments: String,
    announced: bool,
}

/// Runs the loop, then writes the messages this run added to the task's session log (redacted),
/// so the durable record holds the whole conversation.
async fn agent_loop(run: Run<'_>) -> RunOutcome {
    let mut messages = run.memory.lock().await;
    let before = messages.len();
    let outcome = steps(&run, &mut messages).await;
    for m in &messages[before..] {
        let mut m = m.clone();
        crate::node::runtime::redact_value_with(run.emit, &mut m);
        run.emit.record(&m);
    }
    outcome
}

async fn steps(run: &Run<'_>, messages: &mut Vec<Value>) -> RunOutcome {
    let Some(provider) = Provider::resolve(run.env, run.options.model.as_deref()) else {
        return RunOutcome::Failed(HOW_TO_CONFIGURE.into());
    };
    let http = match reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => return RunOutcome::Failed(format!("http client: {e}")),
    };
    if messages.is_empty() {
        messages.push(json!({"role": "system", "content": system_prompt(run.cwd)}));
    }
    messages.push(json!({"role": "user", "content": run.input}));
    let tool_ctx = ToolContext {
        root: run.cwd,
        env: run.env,
        abort: run.abort.clone(),
    };
    let mut usage = (0u64, 0u64);

    for step in 0..MAX_STEPS {
        run.emit.chunk(UiChunk::StartStep);
        let step_started = Instant::now();
        let body = request_body(&provider, messages);
        let response = tokio::select! {
            r = request(&http, &provider, &body, run) => r,
            _ = run.abort.cancelled() => return RunOutcome::Interrupted,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                run.emit.chunk(UiChunk::FinishStep);
                return RunOutcome::Failed(e);
            }
        };
        let text_id = format!("{}-s{step}-text", run.part_id);
        let reasoning_id = format!("{}-s{step}-reasoning", run.part_id);
        let streamed = tokio::select! {
            r = read_stream(provider.api, response, run, &text_id, &reasoning_id) => r,
            _ = run.abort.cancelled() => return RunOutcome::Interrupted,
        };
        let (text, calls, step_usage) = match streamed {
            Ok(v) => v,
            Err(e) => {
                run.emit.chunk(UiChunk::Error {
                    error_text: e.clone(),
                });
                run.emit.chunk(UiChunk::FinishStep);
                return RunOutcome::Failed(e);
            }
        };
        usage.0 += step_usage.0;
        usage.1 += step_usage.1;
        tracing::debug!(
            step,
            ms = step_started.elapsed().as_millis() as u64,
            calls = calls.len(),
            "model step"
        );

        let mut assistant = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
        if !calls.is_empty() {
            assistant["tool_calls"] = Value::Array(
                calls
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                    .collect(),
            );
        }
        messages.push(assistant);
        if calls.is_empty() {
            run.emit.chunk(UiChunk::FinishStep);
            run.emit.chunk(UiChunk::MessageMetadata {
                message_metadata: json!({"usage": {"inputTokens": usage.0, "outputTokens": usage.1}, "model": provider.model}),
            });
            return RunOutcome::Exited(0);
        }

        for call in &calls {
            let input: Value = match serde_json::from_str(if call.arguments.trim().is_empty() {
                "{}"
            } else {
                &call.arguments
            }) {
                Ok(v) => v,
                Err(e) => {
                    let msg = format!("invalid JSON arguments for {}: {e}", call.name);
                    run.emit.chunk(UiChunk::ToolInputAvailable {
                        tool_call_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        input: json!({"raw": call.arguments}),
                    });
                    run.emit.chunk(UiChunk::ToolOutputError {
                        tool_call_id: call.id.clone(),
                        error_text: msg.clone(),
                    });
                    messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": format!("error: {msg}")}));
                    continue;
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
                        let told = format!("The operator denied this tool call{}. Do not retry it; continue without it or ask.", reason.map(|r| format!(": {r}")).unwrap_or_default());
                        messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": run.emit.redact(&told)}));
                        continue;
                    }
                    Approval::Interrupted => {
                        messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": "interrupted by the operator"}));
                        return RunOutcome::Interrupted;
                    }
                }
            }
            let result = tools::run(&call.name, &input, &tool_ctx).await;
            if run.abort.is_cancelled() {
                run.emit.chunk(UiChunk::ToolOutputError {
                    tool_call_id: call.id.clone(),
                    error_text: "interrupted".into(),
                });
                messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": "interrupted by the operator"}));
                return RunOutcome::Interrupted;
            }
            let content = match result {
                Ok(output) => {
                    run.emit.chunk(UiChunk::ToolOutputAvailable {
                        tool_call_id: call.id.clone(),
                        output: output.clone(),
                    });
                    match output {
                        Value::String(s) => s,
                        other => other.to_string(),
                    }
                }
                Err(e) => {
                    run.emit.chunk(UiChunk::ToolOutputError {
                        tool_call_id: call.id.clone(),
                        error_text: e.clone(),
                    });
                    format!("error: {e}")
                }
            };
            // Secrets never reach the model.
            messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": run.emit.redact(&content)}));
        }
        run.emit.chunk(UiChunk::FinishStep);
    }
    RunOutcome::Failed(format!(
        "step limit reached: the model made {MAX_STEPS} calls without finishing"
    ))
}

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
                let cmd = input["command"].as_str().unwrap_or("").trim();
                let first = cmd.split_whitespace().next().unwrap_or("");
                // Only a single simple command can be allowlisted: no pipes, lists,
                // redirections or substitutions that could run something else.
                let simple = !cmd.contains(['|', ';', '&', '>', '<', '`', '$', '\n', '(']);
                return !(simple && opts.allowlist.iter().any(|a| a == cmd || a == first));
            }
            true
        }
    }
}

enum Approval {
    Approved,
    Denied(Option<String>),
    Interrupted,
}

/// Emits a `tool-approval-request` and waits for the operator (denied on timeout).
async fn ask(run: &Run<'_>, tool_call_id: &str) -> Approval {
    let approval_id = crate::crypto::new_id("appr");
    let answer = run.emit.await_approval(&approval_id);
    run.emit.chunk(UiChunk::ToolApprovalRequest {
        approval_id: approval_id.clone(),
        tool_call_id: tool_call_id.to_string(),
    });
    let timeout = Duration::from_secs(run.options.approval_timeout_secs.unwrap_or(600));
    let (approved, reason) = tokio::select! {
        a = answer => a.unwrap_or((false, Some("the approval was dropped".into()))),
        _ = tokio::time::sleep(timeout) => {
            run.emit.drop_approval(&approval_id);
            (false, Some(format!("no answer within {} s", timeout.as_secs())))
        }
        _ = run.abort.cancelled() => {
            run.emit.drop_approval(&approval_id);
            return Approval::Interrupted;
        }
    };
    run.emit.chunk(UiChunk::ToolApprovalResponse {
        approval_id,
        approved,
        reason: reason.clone(),
    });
    if approved {
        Approval::Approved
    } else {
        Approval::Denied(reason)
    }
}

/// Sends one chat completion request, retrying 429 and 5xx with backoff (honouring
/// `retry-after`). Auth failures end the run with a message naming the provider.
async fn request(
    http: &reqwest::Client,
    p: &Provider,
    body: &Value,
    run: &Run<'_>,
) -> Result<reqwest::Response, String> {
    let url = match p.api {
        Api::OpenAi => format!("{}/chat/completions", p.base_url),
        Api::Anthropic => format!("{}/v1/messages", p.base_url),
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = http.post(&url).json(body);
        req = match (p.api, &p.api_key) {
            (Api::OpenAi, Some(k)) => req.bearer_auth(k),
            (Api::Anthropic, Some(k)) => req.header("x-api-key", k),
            (_, None) => req,
        };
        if p.api == Api::Anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(provider = %p.base_url, error = %e, "model request failed; retrying");
                tokio::time::sleep(backoff(attempt, None)).await;
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "cannot reach the model provider at {}: {e}",
                    p.base_url
                ))
            }
        };
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(Duration::from_secs_f64);
        let text = res.text().await.unwrap_or_default();
        let snippet: String = run.emit.redact(&text).chars().take(300).collect();
        match status.as_u16() {
            401 | 403 => {
                return Err(format!(
                    "the model provider at {} refused the API key (HTTP {}): {snippet}",
                    p.base_url,
                    status.as_u16()
                ))
            }
            429 | 500..=599 if attempt < MAX_ATTEMPTS => {
                let wait = backoff(attempt, retry_after);
                tracing::warn!(provider = %p.base_url, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "model provider busy; retrying");
                tokio::time::sleep(wait).await;
            }
            _ => {
                return Err(format!(
                    "the model provider at {} answered HTTP {}: {snippet}",
                    p.base_url,
                    status.as_u16()
                ))
            }
        }
    }
}

fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| Duration::from_millis(500 * (1 << attempt.min(5))))
        .min(Duration::from_secs(60))
}

/// The body of one model request, in the provider's format. The conversation is kept in the
/// OpenAI format and converted for Anthropic.
fn request_body(p: &Provider, messages: &[Value]) -> Value {
    match p.api {
        Api::OpenAi => json!({
            "model": p.model,
            "messages": messages,
            "tools": tools::definitions(),
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
        Api::Anthropic => {
            let system = messages
                .iter()
                .filter(|m| m["role"] == "system")
                .filter_map(|m| m["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n\n");
            let mut out: Vec<Value> = Vec::new();
            for m in messages.iter().filter(|m| m["role"] != "system") {
                match m["role"].as_str() {
                    Some("assistant") => {
                        let mut blocks = Vec::new();
                        if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
                            blocks.push(json!({"type": "text", "text": t}));
                        }
                        for c in m["tool_calls"].as_array().into_iter().flatten() {
                            let input: Value = serde_json::from_str(
                                c["function"]["arguments"].as_str().unwrap_or("{}"),
                            )
                            .unwrap_or_else(|_| json!({}));
                            blocks.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
                        }
                        out.push(json!({"role": "assistant", "content": blocks}));
                    }
                    Some("tool") => {
                        let block = json!({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]});
                        // Consecutive tool results travel in one user message.
                        match out.last_mut() {
                            Some(last) if last["role"] == "user" && last["content"].is_array() => {
                                last["content"].as_array_mut().expect("array").push(block);
                            }
                            _ => out.push(json!({"role": "user", "content": [block]})),
                        }
                    }
                    _ => out.push(json!({"role": "user", "content": m["content"]})),
                }
            }
            let tools: Vec<Value> = tools::definitions()
                .into_iter()
                .map(|t| json!({"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]}))
                .collect();
            json!({"model": p.model, "max_tokens": 8192, "system": system, "messages": out, "tools": tools, "stream": true})
        }
    }
}

/// One model response: its text, its tool calls and (input, output) tokens.
type StepResult = Result<(String, Vec<PendingCall>, (u64, u64)), String>;

/// Assembles one model response from stream events of either provider, emitting UI chunks
/// as they arrive.
struct StepAssembler<'r, 'a> {
    run: &'r Run<'a>,
    text_id: &'r str,
    reasoning_id: &'r str,
    text: String,
    text_open: bool,
    reasoning_open: bool,
    calls: Vec<PendingCall>,
    usage: (u64, u64),
    finished: bool,
}

impl StepAssembler<'_, '_> {
    fn text(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        if !self.text_open {
            self.text_open = true;
            self.run.emit.chunk(UiChunk::TextStart {
                id: self.text_id.into(),
            });
        }
        self.text.push_str(delta);
        self.run
            .emit
            .chunk(UiChunk::text_delta(self.text_id, delta));
    }

    fn reasoning(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        if !self.reasoning_open {
            self.reasoning_open = true;
            self.run.emit.chunk(UiChunk::ReasoningStart {
                id: self.reasoning_id.into(),
            });
        }
        self.run.emit.chunk(UiChunk::ReasoningDelta {
            id: self.reasoning_id.into(),
            delta: delta.into(),
        });
    }

    /// A tool call's id and/or name (OpenAI sends them in pieces by index).
    fn tool(&mut self, index: usize, id: Option<&str>, name: Option<&str>) {
        while self.calls.len() <= index {
            self.calls.push(PendingCall::default());
        }
        let call = &mut self.calls[index];
        if let Some(id) = id {
            call.id = id.to_string();
        }
        if let Some(name) = name {
            call.name.push_str(name);
        }
        if !call.announced && !call.id.is_empty() && !call.name.is_empty() {
            call.announced = true;
            self.run.emit.chunk(UiChunk::ToolInputStart {
                tool_call_id: call.id.clone(),
                tool_name: call.name.clone(),
            });
            if !call.arguments.is_empty() {
                self.run.emit.chunk(UiChunk::ToolInputDelta {
                    tool_call_id: call.id.clone(),
                    input_text_delta: call.arguments.clone(),
                });
            }
        }
    }

    fn tool_args(&mut self, index: usize, delta: &str) {
        if delta.is_empty() {
            return;
        }
        self.tool(index, None, None);
        let call = &mut self.calls[index];
        call.arguments.push_str(delta);
        if call.announced {
            self.run.emit.chunk(UiChunk::ToolInputDelta {
                tool_call_id: call.id.clone(),
                input_text_delta: delta.into(),
            });
        }
    }

    /// Closes open parts; a stream that never said it finished is an error.
    fn finish(mut self) -> StepResult {
        if self.reasoning_open {
            self.run.emit.chunk(UiChunk::ReasoningEnd {
                id: self.reasoning_id.into(),
            });
        }
        if self.text_open {
            self.run.emit.chunk(UiChunk::TextEnd {
                id: self.text_id.into(),
            });
        }
        if !self.finished {
            return Err("the model stream ended before the response was complete".into());
        }
        // Anthropic numbers tool calls by content block: text blocks leave empty slots.
        self.calls
            .retain(|c| !c.name.is_empty() || !c.arguments.is_empty());
        for (i, c) in self.calls.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = format!("call_{i}");
            }
            if !c.announced {
                c.announced = true;
                self.run.emit.chunk(UiChunk::ToolInputStart {
                    tool_call_id: c.id.clone(),
                    tool_name: c.name.clone(),
                });
            }
        }
        Ok((self.text, self.calls, self.usage))
    }

    /// One OpenAI Chat Completions stream chunk.
    fn openai(&mut self, v: &Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage.0 = u["prompt_tokens"].as_u64().unwrap_or(self.usage.0);
            self.usage.1 = u["completion_tokens"].as_u64().unwrap_or(self.usage.1);
        }
        let Some(choice) = v["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        self.reasoning(
            delta["reasoning_content"]
                .as_str()
                .or(delta["reasoning"].as_str())
                .unwrap_or(""),
        );
        self.text(delta["content"].as_str().unwrap_or(""));
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = tc["index"].as_u64().unwrap_or(self.calls.len() as u64) as usize;
            self.tool(index, tc["id"].as_str(), tc["function"]["name"].as_str());
            self.tool_args(index, tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if choice["finish_reason"].is_string() {
            self.finished = true;
        }
    }

    /// One Anthropic Messages stream event. Block indexes count text and tool blocks alike;
    /// tool calls are numbered by their block index.
    fn anthropic(&mut self, v: &Value) -> Result<(), String> {
        match v["type"].as_str() {
            Some("message_start") => {
                self.usage.0 = v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
            }
            Some("content_block_start") => {
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    self.tool(index, block["id"].as_str(), block["name"].as_str());
                } else if block["type"] == "text" {
                    self.text(block["text"].as_str().unwrap_or(""));
                }
            }
            Some("content_block_delta") => {
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => self.text(d["text"].as_str().unwrap_or("")),
                    Some("thinking_delta") => self.reasoning(d["thinking"].as_str().unwrap_or("")),
                    Some("input_json_delta") => {
                        self.tool_args(index, d["partial_json"].as_str().unwrap_or(""))
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                self.usage.1 = v["usage"]["output_tokens"].as_u64().unwrap_or(self.usage.1);
            }
            Some("message_stop") => self.finished = true,
            Some("error") => {
                return Err(format!(
                    "the model provider reported an error: {}",
                    v["error"]
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads one streamed response, emitting chunks as they arrive. Returns the text, the tool
/// calls and (input, output) token usage.
async fn read_stream(
    api: Api,
    res: reqwest::Response,
    run: &Run<'_>,
    text_id: &str,
    reasoning_id: &str,
) -> StepResult {
    let mut body = res.bytes_stream();
    let mut parser = SseParser::default();
    let mut step = StepAssembler {
        run,
        text_id,
        reasoning_id,
        text: String::new(),
        text_open: false,
        reasoning_open: false,
        calls: Vec::new(),
        usage: (0, 0),
        finished: false,
    };
    while let Some(part) = body.next().await {
        let bytes = part.map_err(|e| format!("model stream broke off: {e}"))?;
        for ev in parser.push(&String::from_utf8_lossy(&bytes)) {
            if ev.data.trim() == "[DONE]" {
                step.finished = true;
                continue;
            }
            let v: Value = serde_json::from_str(&ev.data)
                .map_err(|e| format!("malformed chunk in the model stream: {e}"))?;
            match api {
                Api::OpenAi => {
                    if let Some(err) = v.get("error") {
                        return Err(format!("the model provider reported an error: {err}"));
                    }
                    step.openai(&v);
                }
                Api::Anthropic => step.anthropic(&v)?,
            }
        }
    }
    step.finish()
}
