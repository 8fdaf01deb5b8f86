//! The `codex` executor: OpenAI's Codex CLI driven the way its IDE extensions drive it,
//! `codex app-server` (JSON-RPC over stdio), inside the task's sandbox with a `CODEX_HOME`
//! in the working dir's agent home.
//!
//! - A run is one turn: `initialize`, `thread/start` (or `thread/resume` of the thread's
//!   session), `turn/start` with the input, then notifications until `turn/completed`.
//! - Items become UI chunks: agent messages and reasoning as text and reasoning deltas, a
//!   command as an `exec_command` tool call (input: the command and its directory; output:
//!   what it printed and its exit code), a patch as `apply_patch` (input: each file's path,
//!   kind and diff), MCP and other tool calls under their own names.
//! - Approvals: always-execute runs with `approvalPolicy: never`; the other modes with
//!   `untrusted`, which makes Codex ask before every command and patch it does not know to be
//!   safe. Agent-decides answers patches inside the working dir and allowlisted commands
//!   itself and asks the operator about the rest; always-ask asks about all. A denial is
//!   `decline` (the model is told and the turn goes on).
//! - Codex's own sandbox stays off (`danger-full-access`): it needs to create namespaces,
//!   which ours does not allow inside, and ours already confines the whole process tree
//!   (files, network, credentials).
//! - Stop and steer send `turn/interrupt`, then end the process group.
//!
//! Credentials are the task's. Codex ignores `OPENAI_BASE_URL` in its environment, so when
//! the task names `OPENAI_BASE_URL` or `OPENAI_API_KEY`, the run gets a model provider of
//! its own (`-c model_providers.viber=...`) with that URL (default: OpenAI's) and the key by
//! name; otherwise Codex uses its own login (`auth.json` in `CODEX_HOME`). `OPENAI_MODEL` or
//! the task's model picks the model. Codex reports tokens but no cost.

use std::collections::HashMap;
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};

use super::agent_process::AgentProcess;
use super::cli::{self, inside, Prompt, CODEX};
use super::jsonrpc::{CallError, Incoming, Rpc};
use super::llm::approval::{self, Approval};
use super::{Executor, Run, RunOutcome};
use crate::protocol::ui::UiChunk;
use crate::protocol::WorkingMode;

pub struct Codex;

impl Executor for Codex {
    fn name(&self) -> &'static str {
        "codex"
    }

    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, RunOutcome> {
        Box::pin(drive(run))
    }
}

/// Retries of a failed model request (Codex's default is 5 per stream plus 4 per request:
/// a refused key took 7 s to report, a server error 24 s).
const MODEL_RETRIES: u32 = 2;

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `app-server` and its `-c` settings for this run.
fn args(env: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut args = vec!["app-server".to_string()];
    let mut set = |kv: String| args.extend(["-c".to_string(), kv]);
    // Nothing but the model: no plugin sync from GitHub, no connectors, no analytics.
    for off in [
        "features.plugins",
        "features.remote_plugin",
        "features.apps",
        "analytics.enabled",
    ] {
        set(format!("{off}=false"));
    }
    if env.contains_key("OPENAI_BASE_URL") || env.contains_key("OPENAI_API_KEY") {
        let url = env
            .get("OPENAI_BASE_URL")
            .map(String::as_str)
            .unwrap_or("https://api.openai.com/v1");
        set(r#"model_provider="viber""#.to_string());
        set(format!(
            "model_providers.viber={{name=\"viber\",base_url={},env_key=\"OPENAI_API_KEY\",\
             wire_api=\"responses\",request_max_retries={MODEL_RETRIES},\
             stream_max_retries={MODEL_RETRIES}}}",
            toml_string(url.trim_end_matches('/'))
        ));
    }
    args
}

async fn drive(run: Run<'_>) -> RunOutcome {
    let Some(found) = CODEX.installed() else {
        return RunOutcome::Failed(CODEX.missing());
    };
    let mut env = run.env.clone();
    // Codex keeps its threads and login in CODEX_HOME: the agent home's `.codex` (a
    // container keeps its own home, where Codex finds `~/.codex` by itself).
    if let (Some(home), None) = (&run.confine.home, &run.options.container) {
        let codex_home = home.join(".codex");
        if let Err(e) = std::fs::create_dir_all(&codex_home) {
            return RunOutcome::Failed(format!("creating {}: {e}", codex_home.display()));
        }
        env.insert("CODEX_HOME".into(), codex_home.display().to_string());
    }
    let process = match AgentProcess::start(&run, &CODEX, &found.path, &args(&env), &env) {
        Ok(p) => p,
        Err(e) => return RunOutcome::Failed(e),
    };
    let mut rpc = Rpc::new(process);
    let outcome = turn(&run, &mut rpc, &env).await;
    rpc.close(&run, outcome).await
}

/// One turn, from the handshake to `turn/completed`.
async fn turn(
    run: &Run<'_>,
    rpc: &mut Rpc,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<RunOutcome, CallError> {
    rpc.call(
        "initialize",
        json!({"clientInfo": {"name": "viber", "title": "viber",
                              "version": env!("CARGO_PKG_VERSION")}}),
    )
    .await?;
    rpc.notify("initialized", json!({})).await;
    let model = run
        .options
        .model
        .clone()
        .or_else(|| env.get("OPENAI_MODEL").cloned());
    let policy = if asks(run) { "untrusted" } else { "never" };
    let mut params = json!({"cwd": run.cwd, "approvalPolicy": policy,
                            "sandbox": "danger-full-access"});
    if let Some(m) = &model {
        params["model"] = json!(m);
    }
    let started = match cli::session(run).await {
        Some(thread) => {
            let mut resume = params.clone();
            resume["threadId"] = json!(thread);
            match rpc.call("thread/resume", resume).await {
                Ok(r) => r,
                // A thread this home no longer has (its files were removed): a new one.
                Err(CallError::Refused(e)) => {
                    tracing::info!(error = %e, "cannot resume the Codex thread; starting anew");
                    rpc.call("thread/start", params).await?
                }
                Err(e) => return Err(e),
            }
        }
        None => rpc.call("thread/start", params).await?,
    };
    let thread = started["thread"]["id"].as_str().unwrap_or("").to_string();
    if !thread.is_empty() {
        cli::remember_session(run, &thread).await;
    }
    let model = started["model"].as_str().map(str::to_string).or(model);
    let turn = rpc
        .call(
            "turn/start",
            json!({"threadId": thread, "input": [{"type": "text", "text": run.input,
                                                  "text_elements": []}]}),
        )
        .await?;
    let turn_id = turn["turn"]["id"].as_str().unwrap_or("").to_string();
    let mut map = Mapper::new(run, model);
    let mut asking = FuturesUnordered::new();
    loop {
        tokio::select! {
            msg = rpc.next() => match msg.ok_or(CallError::Gone)? {
                Incoming::Notification { method, params } => {
                    if method == "turn/completed" {
                        map.finish();
                        return Ok(map.outcome(&params["turn"]));
                    }
                    map.notification(&method, &params);
                }
                Incoming::Request { id, method, params } => match method.as_str() {
                    "item/commandExecution/requestApproval" | "item/fileChange/requestApproval" => {
                        let prompt = map.approval(&params);
                        asking.push(async move { (id, decision(prompt.decide(run).await)) });
                    }
                    _ => rpc.refuse(id, &method).await,
                },
                Incoming::Response { .. } => {}
            },
            Some((id, decision)) = asking.next() => {
                rpc.respond(id, json!({"decision": decision})).await;
            }
            _ = run.abort.cancelled() => {
                rpc.request("turn/interrupt", json!({"threadId": thread, "turnId": turn_id}))
                    .await;
                // Codex ends an interrupted turn within milliseconds; one that does not
                // is ended with its process group.
                if tokio::time::timeout(run.stop_grace, wait_turn_end(rpc)).await.is_err() {
                    rpc.process.interrupt(run.stop_grace).await;
                }
                map.finish();
                return Ok(RunOutcome::Interrupted);
            }
        }
    }
}

/// Reads until the turn ends (or the CLI's output does).
async fn wait_turn_end(rpc: &mut Rpc) {
    while let Some(m) = rpc.next().await {
        if matches!(&m, Incoming::Notification { method, .. } if method == "turn/completed") {
            return;
        }
    }
}

/// Whether the operator may be asked anything in this task.
fn asks(run: &Run<'_>) -> bool {
    approval::asks(run.options) || !run.options.require_approval.is_empty()
}

/// Codex's decision for the answer: `decline` tells the model and the turn goes on;
/// `cancel` ends the turn (the run was stopped).
fn decision(answer: Approval) -> &'static str {
    match answer {
        Approval::Approved => "accept",
        Approval::Denied(_) => "decline",
        Approval::Interrupted => "cancel",
    }
}

/// What a tool item was started with (for the approval that may follow).
enum Started {
    Command(String),
    Patch(Vec<PathBuf>),
    /// A tool Codex does not ask about (MCP, web search).
    Other,
}

/// Turns Codex's notifications into UI chunks.
struct Mapper<'r, 'a> {
    run: &'r Run<'a>,
    model: Option<String>,
    in_step: bool,
    /// Text and reasoning parts open by item id.
    open: HashMap<String, PartKind>,
    /// Tool items by id: what they run, and the output they printed so far.
    tools: HashMap<String, (Started, String)>,
    input_tokens: i64,
    output_tokens: i64,
    /// The last error Codex reported for the turn.
    error: Option<String>,
}

#[derive(Clone, Copy)]
enum PartKind {
    Text,
    Reasoning,
}

impl<'r, 'a> Mapper<'r, 'a> {
    fn new(run: &'r Run<'a>, model: Option<String>) -> Self {
        Mapper {
            run,
            model,
            in_step: false,
            open: HashMap::new(),
            tools: HashMap::new(),
            input_tokens: 0,
            output_tokens: 0,
            error: None,
        }
    }

    fn chunk(&self, c: UiChunk) {
        self.run.emit.chunk(c);
    }

    fn part_id(&self, item: &str) -> String {
        format!("{}-{item}", self.run.part_id)
    }

    fn step(&mut self) {
        if !self.in_step {
            self.chunk(UiChunk::StartStep);
            self.in_step = true;
        }
    }

    fn notification(&mut self, method: &str, p: &Value) {
        let item_id = p["itemId"].as_str().unwrap_or("");
        match method {
            "item/started" => self.item_started(&p["item"]),
            "item/completed" => self.item_completed(&p["item"]),
            "item/agentMessage/delta" => {
                self.open_part(item_id, PartKind::Text);
                let delta = p["delta"].as_str().unwrap_or("");
                self.chunk(UiChunk::text_delta(&self.part_id(item_id), delta));
            }
            "item/reasoning/summaryTextDelta" | "item/reasoning/textDelta" => {
                self.open_part(item_id, PartKind::Reasoning);
                self.chunk(UiChunk::ReasoningDelta {
                    id: self.part_id(item_id),
                    delta: p["delta"].as_str().unwrap_or("").into(),
                });
            }
            "item/commandExecution/outputDelta" => {
                if let Some((_, out)) = self.tools.get_mut(item_id) {
                    if out.len() < OUTPUT_LIMIT {
                        out.push_str(p["delta"].as_str().unwrap_or(""));
                    }
                }
            }
            "thread/tokenUsage/updated" => {
                // `last` is the latest model response's; the task's usage is their sum.
                let last = &p["tokenUsage"]["last"];
                self.input_tokens += last["inputTokens"].as_i64().unwrap_or(0);
                self.output_tokens += last["outputTokens"].as_i64().unwrap_or(0);
            }
            // Retries are progress; the last error is the turn's.
            "error" if p["willRetry"] != true => {
                self.error = p["error"]["message"].as_str().map(str::to_string);
            }
            _ => {}
        }
    }

    fn open_part(&mut self, item: &str, kind: PartKind) {
        if self.open.contains_key(item) {
            return;
        }
        self.step();
        let id = self.part_id(item);
        self.chunk(match kind {
            PartKind::Text => UiChunk::TextStart { id },
            PartKind::Reasoning => UiChunk::ReasoningStart { id },
        });
        self.open.insert(item.to_string(), kind);
    }

    fn close_part(&mut self, item: &str) {
        if let Some(kind) = self.open.remove(item) {
            let id = self.part_id(item);
            self.chunk(match kind {
                PartKind::Text => UiChunk::TextEnd { id },
                PartKind::Reasoning => UiChunk::ReasoningEnd { id },
            });
        }
    }

    /// A tool item's name and input, when the item is a tool call.
    fn tool_of(&self, item: &Value) -> Option<(String, Value, Started)> {
        Some(match item["type"].as_str()? {
            "commandExecution" => {
                let command = command_of(item);
                (
                    "exec_command".into(),
                    json!({"command": command, "cwd": item["cwd"]}),
                    Started::Command(command),
                )
            }
            "fileChange" => {
                let changes = item["changes"].as_array().cloned().unwrap_or_default();
                let paths = changes
                    .iter()
                    .filter_map(|c| c["path"].as_str().map(PathBuf::from))
                    .collect();
                (
                    "apply_patch".into(),
                    json!({"changes": changes}),
                    Started::Patch(paths),
                )
            }
            "mcpToolCall" | "dynamicToolCall" => (
                item["tool"].as_str().unwrap_or("tool").into(),
                item["arguments"].clone(),
                Started::Other,
            ),
            "webSearch" => (
                "web_search".into(),
                json!({"query": item["query"]}),
                Started::Other,
            ),
            _ => return None,
        })
    }

    fn item_started(&mut self, item: &Value) {
        let id = item["id"].as_str().unwrap_or("").to_string();
        match item["type"].as_str() {
            Some("agentMessage") => self.open_part(&id, PartKind::Text),
            Some("reasoning") => self.open_part(&id, PartKind::Reasoning),
            _ => {
                let Some((name, input, started)) = self.tool_of(item) else {
                    return;
                };
                self.step();
                self.chunk(UiChunk::ToolInputStart {
                    tool_call_id: id.clone(),
                    tool_name: name.clone(),
                });
                self.chunk(UiChunk::ToolInputAvailable {
                    tool_call_id: id.clone(),
                    tool_name: name,
                    input,
                });
                self.tools.insert(id, (started, String::new()));
            }
        }
    }

    fn item_completed(&mut self, item: &Value) {
        let id = item["id"].as_str().unwrap_or("").to_string();
        match item["type"].as_str() {
            Some("agentMessage") => {
                // A message that came whole, without deltas.
                if !self.open.contains_key(&id) {
                    if let Some(text) = item["text"].as_str().filter(|t| !t.is_empty()) {
                        self.open_part(&id, PartKind::Text);
                        self.chunk(UiChunk::text_delta(&self.part_id(&id), text));
                    }
                }
                self.close_part(&id);
            }
            Some("reasoning") => self.close_part(&id),
            _ => {
                let Some((_, printed)) = self.tools.remove(&id) else {
                    return;
                };
                let status = item["status"].as_str().unwrap_or("completed");
                let output = item["aggregatedOutput"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or(printed);
                let output = self.run.emit.redact(&output);
                match status {
                    "declined" => self.chunk(UiChunk::ToolOutputDenied { tool_call_id: id }),
                    "failed" => self.chunk(UiChunk::ToolOutputError {
                        tool_call_id: id,
                        error_text: if output.is_empty() {
                            tool_error(item)
                        } else {
                            output
                        },
                    }),
                    _ => {
                        let mut out = json!({"output": output});
                        if let Some(code) = item["exitCode"].as_i64() {
                            out["exitCode"] = json!(code);
                        }
                        self.chunk(UiChunk::ToolOutputAvailable {
                            tool_call_id: id,
                            output: out,
                        });
                    }
                }
            }
        }
    }

    /// What to do about an approval request for a tool item this mapper saw start.
    fn approval(&self, p: &Value) -> Prompt {
        let call = p["itemId"].as_str().unwrap_or("").to_string();
        let opts = self.run.options;
        let mode = opts.working_mode.unwrap_or(WorkingMode::AlwaysExecute);
        let started = self.tools.get(&call).map(|(s, _)| s);
        let required = |names: &[&str]| opts.require_approval.iter().any(|t| names.contains(&&**t));
        let auto = match (mode, started) {
            (WorkingMode::AlwaysAsk, _) => false,
            (_, Some(Started::Command(cmd))) => {
                !required(&["exec_command", "bash", "Bash"])
                    && (mode == WorkingMode::AlwaysExecute
                        || !approval::needs_approval(opts, "bash", &json!({"command": cmd})))
            }
            (_, Some(Started::Patch(paths))) => {
                !required(&["apply_patch", "edit", "Edit"])
                    && (mode == WorkingMode::AlwaysExecute
                        || paths.iter().all(|p| inside(self.run.cwd, p)))
            }
            // A request for an item that never started, or of a kind it does not ask about:
            // the operator decides.
            (_, None | Some(Started::Other)) => false,
        };
        Prompt { call, auto }
    }

    /// Closes what is open at the turn's end.
    fn finish(&mut self) {
        let open: Vec<String> = self.open.keys().cloned().collect();
        for id in open {
            self.close_part(&id);
        }
        if self.in_step {
            self.chunk(UiChunk::FinishStep);
            self.in_step = false;
        }
        if self.input_tokens > 0 || self.output_tokens > 0 {
            let mut meta = json!({"usage": {"inputTokens": self.input_tokens,
                                            "outputTokens": self.output_tokens}});
            if let Some(m) = &self.model {
                meta["model"] = json!(m);
            }
            self.chunk(UiChunk::MessageMetadata {
                message_metadata: meta,
            });
            (self.input_tokens, self.output_tokens) = (0, 0);
        }
    }

    /// How a completed turn ended.
    fn outcome(&self, turn: &Value) -> RunOutcome {
        match turn["status"].as_str() {
            Some("completed") => RunOutcome::Exited(0),
            Some("interrupted") => RunOutcome::Interrupted,
            _ => {
                let why = turn["error"]["message"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| self.error.clone())
                    .unwrap_or_else(|| "Codex reported that the turn failed".into());
                RunOutcome::Failed(self.run.emit.redact(&why))
            }
        }
    }
}

/// Most output kept per command while it runs (Codex's own summary wins when it has one).
const OUTPUT_LIMIT: usize = 64 * 1024;

/// The command as the model wrote it (Codex shows it wrapped in `bash -lc '...'`).
fn command_of(item: &Value) -> String {
    let actions: Vec<&str> = item["commandActions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["command"].as_str())
        .collect();
    if actions.is_empty() {
        item["command"].as_str().unwrap_or("").to_string()
    } else {
        actions.join(" && ")
    }
}

fn tool_error(item: &Value) -> String {
    item["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| "the tool failed".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_with_openai_settings_gets_a_provider_of_its_own() {
        let mut env = std::collections::BTreeMap::new();
        assert!(!args(&env).iter().any(|a| a.contains("model_provider")));
        env.insert("OPENAI_BASE_URL".into(), "http://127.0.0.1:9/v1/".into());
        let a = args(&env).join(" ");
        assert!(a.contains(r#"model_provider="viber""#), "{a}");
        assert!(a.contains(r#"base_url="http://127.0.0.1:9/v1""#), "{a}");
        assert!(a.contains(r#"env_key="OPENAI_API_KEY""#), "{a}");
        // A quote in the URL cannot break out of the TOML string.
        env.insert("OPENAI_BASE_URL".into(), r#"http://x/"y"#.into());
        assert!(args(&env).join(" ").contains(r#"base_url="http://x/\"y""#));
    }
}
