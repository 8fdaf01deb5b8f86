//! The Anthropic Messages wire API, streaming.
//!
//! Owns: this API's settings names and defaults, its endpoint and headers (`x-api-key`,
//! `anthropic-version`), the conversion of the conversation (kept in the OpenAI format) into
//! a Messages request, and the decoding of its stream events into [`StepAssembler`] calls.
//!
//! Must not touch: UI chunks (only the assembler emits them), retries, the conversation
//! itself (it is converted for each request, never rewritten).

use serde_json::{json, Value};

use super::provider::{Settings, WireApi};
use super::stream::StepAssembler;
use crate::node::executor::tools;

pub(super) struct Anthropic;

const SETTINGS: Settings = Settings {
    base_url_var: "ANTHROPIC_BASE_URL",
    api_key_var: "ANTHROPIC_API_KEY",
    model_var: "ANTHROPIC_MODEL",
    default_base_url: "https://api.anthropic.com",
    default_model: "claude-sonnet-4-5",
};

const API_VERSION: &str = "2023-06-01";
const MAX_TOKENS: u32 = 8192;

impl WireApi for Anthropic {
    fn settings(&self) -> &'static Settings {
        &SETTINGS
    }

    fn url(&self, base_url: &str) -> String {
        format!("{base_url}/v1/messages")
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let req = match api_key {
            Some(k) => req.header("x-api-key", k),
            None => req,
        };
        req.header("anthropic-version", API_VERSION)
    }

    fn request_body(&self, model: &str, messages: &[Value]) -> Value {
        let system = messages
            .iter()
            .filter(|m| m["role"] == "system")
            .filter_map(|m| m["content"].as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let tools: Vec<Value> = tools::definitions()
            .into_iter()
            .map(|t| json!({"name": t["function"]["name"], "description": t["function"]["description"], "input_schema": t["function"]["parameters"]}))
            .collect();
        json!({"model": model, "max_tokens": MAX_TOKENS, "system": system, "messages": messages_of(messages), "tools": tools, "stream": true})
    }

    /// One Messages stream event. Block indexes count text and tool blocks alike; tool calls
    /// are numbered by their block index.
    fn on_event(&self, step: &mut StepAssembler<'_, '_>, v: &Value) -> Result<(), String> {
        match v["type"].as_str() {
            Some("message_start") => {
                step.usage.input = v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
            }
            Some("content_block_start") => {
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                let block = &v["content_block"];
                if block["type"] == "tool_use" {
                    step.tool(index, block["id"].as_str(), block["name"].as_str());
                } else if block["type"] == "text" {
                    step.text(block["text"].as_str().unwrap_or(""));
                }
            }
            Some("content_block_delta") => {
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => step.text(d["text"].as_str().unwrap_or("")),
                    Some("thinking_delta") => step.reasoning(d["thinking"].as_str().unwrap_or("")),
                    Some("input_json_delta") => {
                        step.tool_args(index, d["partial_json"].as_str().unwrap_or(""))
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                step.usage.output = v["usage"]["output_tokens"]
                    .as_u64()
                    .unwrap_or(step.usage.output);
            }
            Some("message_stop") => step.finished = true,
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

/// The conversation without its system messages, as Messages API turns.
fn messages_of(messages: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for m in messages.iter().filter(|m| m["role"] != "system") {
        match m["role"].as_str() {
            Some("assistant") => out.push(assistant_turn(m)),
            Some("tool") => push_tool_result(&mut out, m),
            _ => out.push(json!({"role": "user", "content": m["content"]})),
        }
    }
    out
}

/// An assistant message: its text, then its tool calls as `tool_use` blocks.
fn assistant_turn(m: &Value) -> Value {
    let mut blocks = Vec::new();
    if let Some(t) = m["content"].as_str().filter(|t| !t.is_empty()) {
        blocks.push(json!({"type": "text", "text": t}));
    }
    for c in m["tool_calls"].as_array().into_iter().flatten() {
        let input: Value =
            serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("{}"))
                .unwrap_or_else(|_| json!({}));
        blocks.push(json!({"type": "tool_use", "id": c["id"], "name": c["function"]["name"], "input": input}));
    }
    json!({"role": "assistant", "content": blocks})
}

/// A tool result becomes a `tool_result` block; consecutive results travel in one user
/// message.
fn push_tool_result(out: &mut Vec<Value>, m: &Value) {
    let block =
        json!({"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m["content"]});
    match out.last_mut() {
        Some(last) if last["role"] == "user" && last["content"].is_array() => {
            last["content"].as_array_mut().expect("array").push(block);
        }
        _ => out.push(json!({"role": "user", "content": [block]})),
    }
}
