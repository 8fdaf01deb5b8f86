//! The `opencode` executor: OpenCode driven over the Agent Client Protocol (`opencode acp`:
//! JSON-RPC over stdio), inside the task's sandbox with a home of the working dir's own.
//!
//! Why ACP and not `opencode serve`: the server is reached over HTTP, and a task whose
//! network is off or allowlisted runs in a network namespace of its own that the node cannot
//! reach into; stdio crosses any sandbox. `opencode run --format json` cannot answer
//! permission prompts. ACP carries all a run needs: streamed text and reasoning, tool calls
//! with their input and output, permission prompts we answer, `session/resume`, cancel, and
//! tokens and cost.
//!
//! - A run is one `session/prompt` on a new session or the resumed one; it ends with the
//!   prompt's response (its `stopReason` and the last model call's tokens). A
//!   `usage_update` before it carries the session's total cost; the run reports the
//!   difference since the session's previous turn.
//! - Working modes become OpenCode's permission config: always-execute `allow`, always-ask
//!   `ask`, agent-decides asks about bash, web fetches and paths outside the working dir, and
//!   answers bash itself when the command is allowlisted. A denial lets the turn go on
//!   (`experimental.continue_loop_on_deny`): the model is told.
//! - OpenCode keeps its data under `HOME` (the agent home): XDG dirs point there, and the
//!   plugin package it would install from npm at start-up is marked as present, so a run
//!   needs no network but the model's. Model list fetches, auto-update and LSP downloads are
//!   off. Its internal HTTP server (it talks to itself over loopback) gets a password of
//!   the run's own.
//!
//! Credentials: with `OPENAI_BASE_URL` in the task's environment, the run gets an
//! OpenAI-compatible provider `viber` at that URL with the key from `OPENAI_API_KEY` (by
//! reference: `{env:OPENAI_API_KEY}`), and `OPENAI_MODEL` (or the task's model) as its model;
//! otherwise OpenCode finds its providers itself (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, its
//! own login) and the task's model is `provider/model`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};

use super::agent_process::AgentProcess;
use super::cli::{self, inside, Prompt, OPENCODE};
use super::jsonrpc::{CallError, Incoming, Rpc};
use super::llm::approval::{self, Approval};
use super::{Executor, Run, RunOutcome};
use crate::protocol::ui::UiChunk;
use crate::protocol::WorkingMode;

pub struct OpenCode;

impl Executor for OpenCode {
    fn name(&self) -> &'static str {
        "opencode"
    }

    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, RunOutcome> {
        Box::pin(drive(run))
    }
}

/// OpenCode's configuration for this run (`OPENCODE_CONFIG_CONTENT`), and the model it runs.
fn config(run: &Run<'_>, env: &BTreeMap<String, String>) -> (Value, Option<String>) {
    let permission = match run
        .options
        .working_mode
        .unwrap_or(WorkingMode::AlwaysExecute)
    {
        WorkingMode::AlwaysExecute if run.options.require_approval.is_empty() => json!("allow"),
        WorkingMode::AlwaysAsk => json!("ask"),
        _ => json!({"bash": "ask", "webfetch": "ask", "external_directory": "ask"}),
    };
    let mut config = json!({
        "autoupdate": false,
        "share": "disabled",
        "permission": permission,
        "experimental": {"continue_loop_on_deny": true},
    });
    let mut model = run.options.model.clone();
    if let Some(url) = env.get("OPENAI_BASE_URL") {
        let name = model
            .take()
            .or_else(|| env.get("OPENAI_MODEL").cloned())
            .unwrap_or_else(|| "gpt-4o".into());
        let mut options = json!({"baseURL": url.trim_end_matches('/')});
        if env.contains_key("OPENAI_API_KEY") {
            options["apiKey"] = json!("{env:OPENAI_API_KEY}");
        }
        config["provider"] = json!({"viber": {
            "npm": "@ai-sdk/openai-compatible",
            "name": "viber",
            "options": options,
            "models": {(name.clone()): {"name": name}},
        }});
        model = Some(format!("viber/{name}"));
    }
    if let Some(m) = &model {
        config["model"] = json!(m);
        config["small_model"] = json!(m);
    }
    (config, model)
}

/// The process environment: OpenCode's data in the agent home, nothing fetched at start.
fn prepare_home(
    run: &Run<'_>,
    env: &mut BTreeMap<String, String>,
    version: &str,
) -> Result<(), String> {
    for (k, v) in [
        ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
        ("OPENCODE_DISABLE_AUTOUPDATE", "1"),
        ("OPENCODE_DISABLE_LSP_DOWNLOAD", "1"),
        ("OPENCODE_DISABLE_DEFAULT_PLUGINS", "1"),
        ("OPENCODE_DISABLE_CLAUDE_CODE", "1"),
    ] {
        env.entry(k.into()).or_insert_with(|| v.into());
    }
    env.insert(
        "OPENCODE_SERVER_PASSWORD".into(),
        crate::crypto::new_id("oc"),
    );
    let (Some(home), None) = (&run.confine.home, &run.options.container) else {
        return Ok(());
    };
    let dirs = [
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_STATE_HOME", ".local/state"),
        ("TMPDIR", ".tmp"),
    ];
    for (var, dir) in dirs {
        let path = home.join(dir);
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        env.insert(var.into(), path.display().to_string());
    }
    // At start-up OpenCode installs its plugin package into its config dir from npm (about
    // 100 MB) unless the dir says it has it; the built-in tools need none of it.
    let config_dir = home.join(".config/opencode");
    let write = |name: &str, body: String| -> Result<(), String> {
        let path = config_dir.join(name);
        if path.exists() {
            return Ok(());
        }
        std::fs::write(&path, body).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    std::fs::create_dir_all(config_dir.join("node_modules"))
        .map_err(|e| format!("creating {}: {e}", config_dir.display()))?;
    let deps = json!({"@opencode-ai/plugin": version});
    write("package.json", json!({ "dependencies": deps }).to_string())?;
    write(
        "package-lock.json",
        json!({"lockfileVersion": 3, "packages": {"": {"dependencies": deps}}}).to_string(),
    )?;
    Ok(())
}

async fn drive(run: Run<'_>) -> RunOutcome {
    let Some(found) = OPENCODE.installed() else {
        return RunOutcome::Failed(OPENCODE.missing());
    };
    let mut env = run.env.clone();
    if let Err(e) = prepare_home(&run, &mut env, &found.version) {
        return RunOutcome::Failed(e);
    }
    let (config, model) = config(&run, &env);
    env.insert("OPENCODE_CONFIG_CONTENT".into(), config.to_string());
    let args = vec!["acp".to_string()];
    let process = match AgentProcess::start(&run, &OPENCODE, &found.path, &args, &env) {
        Ok(p) => p,
        Err(e) => return RunOutcome::Failed(e),
    };
    let mut rpc = Rpc::new(process);
    let outcome = turn(&run, &mut rpc, model).await;
    rpc.close(&run, outcome).await
}

/// One prompt, from the handshake to its response.
async fn turn(
    run: &Run<'_>,
    rpc: &mut Rpc,
    model: Option<String>,
) -> Result<RunOutcome, CallError> {
    rpc.call(
        "initialize",
        json!({"protocolVersion": 1,
               "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false},
                                      "terminal": false},
               "clientInfo": {"name": "viber", "version": env!("CARGO_PKG_VERSION")}}),
    )
    .await?;
    let open = json!({"cwd": run.cwd, "mcpServers": []});
    let mut baseline = None;
    let session = match cli::session(run).await {
        Some(id) => {
            let mut params = open.clone();
            params["sessionId"] = json!(id);
            match rpc.call("session/resume", params).await {
                Ok(_) => {
                    baseline = Some(cost_so_far(run, &id));
                    id
                }
                // A session this home no longer has: a new one.
                Err(CallError::Refused(e)) => {
                    tracing::info!(error = %e, "cannot resume the OpenCode session; starting anew");
                    new_session(rpc, open).await?
                }
                Err(e) => return Err(e),
            }
        }
        None => new_session(rpc, open).await?,
    };
    cli::remember_session(run, &session).await;
    let prompt = rpc
        .request(
            "session/prompt",
            json!({"sessionId": session, "prompt": [{"type": "text", "text": run.input}]}),
        )
        .await
        .ok_or(CallError::Gone)?;
    let mut map = Mapper::new(run, model, baseline.unwrap_or(0.0));
    let mut asking = FuturesUnordered::new();
    loop {
        tokio::select! {
            msg = rpc.next() => match msg.ok_or(CallError::Gone)? {
                Incoming::Response { id, result } if id == prompt => {
                    map.finish(&session, result.as_ref().ok());
                    return Ok(match result {
                        Ok(r) => outcome(&r),
                        Err(e) => RunOutcome::Failed(run.emit.redact(e.trim_start_matches("Internal error: "))),
                    });
                }
                Incoming::Response { .. } => {}
                Incoming::Notification { method, params } => {
                    if method == "session/update" {
                        map.update(&params["update"]);
                    }
                }
                Incoming::Request { id, method, params } => match method.as_str() {
                    "session/request_permission" => {
                        let prompt = map.permission(&params["toolCall"]);
                        asking.push(async move { (id, outcome_of(prompt.decide(run).await)) });
                    }
                    // Sent for an approved edit although we said we do not write files: the
                    // edit tool writes the file itself.
                    "fs/write_text_file" => rpc.respond(id, json!({})).await,
                    _ => rpc.refuse(id, &method).await,
                },
            },
            Some((id, answer)) = asking.next() => rpc.respond(id, answer).await,
            _ = run.abort.cancelled() => {
                rpc.notify("session/cancel", json!({"sessionId": session})).await;
                // OpenCode answers the prompt as cancelled within milliseconds; one that does
                // not is ended with its process group.
                let answered = tokio::time::timeout(run.stop_grace, async {
                    while let Some(m) = rpc.next().await {
                        if matches!(m, Incoming::Response { id, .. } if id == prompt) {
                            return;
                        }
                    }
                });
                if answered.await.is_err() {
                    rpc.process.interrupt(run.stop_grace).await;
                }
                map.finish(&session, None);
                return Ok(RunOutcome::Interrupted);
            }
        }
    }
}

async fn new_session(rpc: &mut Rpc, params: Value) -> Result<String, CallError> {
    let r = rpc.call("session/new", params).await?;
    r["sessionId"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CallError::Refused("session/new returned no sessionId".into()))
}

fn outcome(r: &Value) -> RunOutcome {
    match r["stopReason"].as_str() {
        Some("cancelled") => RunOutcome::Interrupted,
        Some("refusal") => RunOutcome::Failed("the model refused to go on".into()),
        _ => RunOutcome::Exited(0),
    }
}

/// Each session's total cost as OpenCode last reported it, kept in the agent home (where
/// the session lives) so a resumed session's next turn reports only its own cost.
const COSTS_FILE: &str = ".viber-opencode-costs.json";

fn costs_path(run: &Run<'_>) -> Option<std::path::PathBuf> {
    run.confine.home.as_ref().map(|h| h.join(COSTS_FILE))
}

fn cost_so_far(run: &Run<'_>, session: &str) -> f64 {
    costs_path(run)
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v[session].as_f64())
        .unwrap_or(0.0)
}

fn save_cost(run: &Run<'_>, session: &str, total: f64) {
    let Some(path) = costs_path(run) else { return };
    let mut all = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    all[session] = json!(total);
    if let Err(e) = std::fs::write(&path, all.to_string()) {
        tracing::warn!(error = %e, "cannot keep OpenCode's session cost");
    }
}

/// ACP's answer to a permission prompt. A rejection cannot carry a reason.
fn outcome_of(answer: Approval) -> Value {
    let selected = |option: &str| json!({"outcome": {"outcome": "selected", "optionId": option}});
    match answer {
        Approval::Approved => selected("once"),
        Approval::Denied(_) => selected("reject"),
        Approval::Interrupted => json!({"outcome": {"outcome": "cancelled"}}),
    }
}

/// A tool call as the stream has shown it so far.
struct Tool {
    name: String,
    /// Whether `tool-input-available` went out.
    announced: bool,
}

/// Turns ACP session updates into UI chunks.
struct Mapper<'r, 'a> {
    run: &'r Run<'a>,
    model: Option<String>,
    in_step: bool,
    /// The open text or reasoning part: (ACP message id, UI part id, is reasoning).
    open: Option<(String, String, bool)>,
    parts: u32,
    tools: HashMap<String, Tool>,
    /// The session's total cost before this turn, and as last reported.
    cost_before: f64,
    cost_now: Option<f64>,
}

impl<'r, 'a> Mapper<'r, 'a> {
    fn new(run: &'r Run<'a>, model: Option<String>, cost_before: f64) -> Self {
        Mapper {
            run,
            model,
            in_step: false,
            open: None,
            parts: 0,
            tools: HashMap::new(),
            cost_before,
            cost_now: None,
        }
    }

    fn chunk(&self, c: UiChunk) {
        self.run.emit.chunk(c);
    }

    fn step(&mut self) {
        if !self.in_step {
            self.chunk(UiChunk::StartStep);
            self.in_step = true;
        }
    }

    fn close_part(&mut self) {
        match self.open.take() {
            Some((_, id, false)) => self.chunk(UiChunk::TextEnd { id }),
            Some((_, id, true)) => self.chunk(UiChunk::ReasoningEnd { id }),
            None => {}
        }
    }

    /// Text or reasoning for ACP message `message`: continues the open part or opens one.
    fn part(&mut self, message: &str, reasoning: bool) -> String {
        if let Some((m, id, r)) = &self.open {
            if m == message && *r == reasoning {
                return id.clone();
            }
        }
        self.close_part();
        self.step();
        self.parts += 1;
        let id = format!("{}-{}", self.run.part_id, self.parts);
        self.chunk(if reasoning {
            UiChunk::ReasoningStart { id: id.clone() }
        } else {
            UiChunk::TextStart { id: id.clone() }
        });
        self.open = Some((message.to_string(), id.clone(), reasoning));
        id
    }

    fn update(&mut self, u: &Value) {
        let text = || u["content"]["text"].as_str().unwrap_or("").to_string();
        match u["sessionUpdate"].as_str() {
            Some("agent_message_chunk") => {
                let id = self.part(u["messageId"].as_str().unwrap_or(""), false);
                self.chunk(UiChunk::text_delta(&id, text()));
            }
            Some("agent_thought_chunk") => {
                let id = self.part(u["messageId"].as_str().unwrap_or(""), true);
                self.chunk(UiChunk::ReasoningDelta { id, delta: text() });
            }
            Some("tool_call") => self.tool_started(u),
            Some("tool_call_update") => self.tool_updated(u),
            Some("usage_update") => {
                if let Some(total) = u["cost"]["amount"].as_f64().filter(|c| c.is_finite()) {
                    self.cost_now = Some(total);
                }
            }
            _ => {}
        }
    }

    fn tool_started(&mut self, u: &Value) {
        let id = u["toolCallId"].as_str().unwrap_or("").to_string();
        if self.tools.contains_key(&id) {
            return;
        }
        self.close_part();
        self.step();
        let name = u["title"].as_str().unwrap_or("tool").to_string();
        self.chunk(UiChunk::ToolInputStart {
            tool_call_id: id.clone(),
            tool_name: name.clone(),
        });
        self.tools.insert(
            id,
            Tool {
                name,
                announced: false,
            },
        );
    }

    /// Sends the tool's input once it is known (the first update has it; a `tool_call`
    /// carries only the working dir).
    fn announce(&mut self, id: &str, input: &Value) {
        let Some(tool) = self.tools.get_mut(id) else {
            return;
        };
        if tool.announced {
            return;
        }
        tool.announced = true;
        let mut input = input.clone();
        if let Some(o) = input.as_object_mut() {
            o.remove("cwd");
        }
        let name = tool.name.clone();
        self.chunk(UiChunk::ToolInputAvailable {
            tool_call_id: id.to_string(),
            tool_name: name,
            input,
        });
    }

    fn tool_updated(&mut self, u: &Value) {
        let id = u["toolCallId"].as_str().unwrap_or("").to_string();
        if !self.tools.contains_key(&id) {
            self.tool_started(u);
        }
        let has_input = u["rawInput"]
            .as_object()
            .is_some_and(|o| o.keys().any(|k| k != "cwd"));
        let status = u["status"].as_str().unwrap_or("");
        if has_input || matches!(status, "completed" | "failed") {
            self.announce(&id, &u["rawInput"]);
        }
        let output = || {
            let raw = &u["rawOutput"];
            raw["output"]
                .as_str()
                .or(raw["error"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| content_text(&u["content"]))
        };
        match status {
            "completed" => {
                let Some(_) = self.tools.remove(&id) else {
                    return;
                };
                let mut out = json!({"output": self.run.emit.redact(&output())});
                if let Some(code) = u["rawOutput"]["metadata"]["exit"].as_i64() {
                    out["exitCode"] = json!(code);
                }
                self.chunk(UiChunk::ToolOutputAvailable {
                    tool_call_id: id,
                    output: out,
                });
            }
            "failed" => {
                if self.tools.remove(&id).is_none() {
                    return;
                }
                let error = output();
                self.chunk(if error.contains("rejected permission") {
                    UiChunk::ToolOutputDenied { tool_call_id: id }
                } else {
                    UiChunk::ToolOutputError {
                        tool_call_id: id,
                        error_text: self.run.emit.redact(&error),
                    }
                });
            }
            _ => {}
        }
    }

    /// What to do about a permission prompt for `call` (the prompt's `toolCall`).
    fn permission(&mut self, call: &Value) -> Prompt {
        let id = call["toolCallId"].as_str().unwrap_or("").to_string();
        if !self.tools.contains_key(&id) {
            self.tool_started(call);
        }
        self.announce(&id, &call["rawInput"]);
        let opts = self.run.options;
        let auto = match opts.working_mode.unwrap_or(WorkingMode::AlwaysExecute) {
            WorkingMode::AlwaysAsk => false,
            WorkingMode::AlwaysExecute => opts.require_approval.is_empty(),
            WorkingMode::AgentDecides => match call["kind"].as_str() {
                Some("execute") => !approval::needs_approval(
                    opts,
                    "bash",
                    &json!({"command": call["rawInput"]["command"]}),
                ),
                Some("edit") => call["rawInput"]["filepath"]
                    .as_str()
                    .is_some_and(|p| inside(self.run.cwd, Path::new(p))),
                _ => false,
            },
        };
        Prompt { call: id, auto }
    }

    /// The turn's end: open parts and the step closed, tokens and cost reported.
    fn finish(&mut self, session: &str, result: Option<&Value>) {
        self.close_part();
        if self.in_step {
            self.chunk(UiChunk::FinishStep);
            self.in_step = false;
        }
        let usage = result.map(|r| &r["usage"]).unwrap_or(&Value::Null);
        let (input, output) = (
            usage["inputTokens"].as_i64().unwrap_or(0),
            usage["outputTokens"].as_i64().unwrap_or(0),
        );
        let cost = self
            .cost_now
            .map(|now| (now - self.cost_before).max(0.0))
            .unwrap_or(0.0);
        if let Some(now) = self.cost_now {
            save_cost(self.run, session, now);
            self.cost_before = now;
        }
        if input > 0 || output > 0 || cost > 0.0 {
            let mut meta = json!({"usage": {"inputTokens": input, "outputTokens": output}});
            if let Some(m) = &self.model {
                meta["model"] = json!(m);
            }
            if cost > 0.0 {
                meta["costUsd"] = json!(cost);
            }
            self.chunk(UiChunk::MessageMetadata {
                message_metadata: meta,
            });
        }
    }
}

/// The text of ACP tool content blocks.
fn content_text(content: &Value) -> String {
    content
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["content"]["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}
