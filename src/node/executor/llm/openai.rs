//! The OpenAI-compatible Chat Completions wire API, streaming (OpenAI, OpenRouter, vLLM,
//! llama.cpp server, Ollama).
//!
//! Owns: this API's settings names and defaults, its endpoint and `Authorization` header, its
//! request body, and the decoding of its stream chunks into [`StepAssembler`] calls.
//!
//! Must not touch: UI chunks (only the assembler emits them), retries, the conversation (the
//! loop's message list is already in this API's format and is sent as it is).

use serde_json::{json, Value};

use super::provider::{Settings, WireApi};
use super::stream::StepAssembler;
use crate::node::executor::tools;

pub(super) struct OpenAi;

const SETTINGS: Settings = Settings {
    base_url_var: "OPENAI_BASE_URL",
    api_key_var: "OPENAI_API_KEY",
    model_var: "OPENAI_MODEL",
    default_base_url: "https://api.openai.com/v1",
    default_model: "gpt-4o-mini",
};

impl WireApi for OpenAi {
    fn settings(&self) -> &'static Settings {
        &SETTINGS
    }

    fn url(&self, base_url: &str) -> String {
        format!("{base_url}/chat/completions")
    }

    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match api_key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    fn request_body(&self, model: &str, messages: &[Value]) -> Value {
        json!({
            "model": model,
            "messages": messages,
            "tools": tools::definitions(),
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    }

    /// One Chat Completions stream chunk: usage, then the first choice's reasoning, text and
    /// tool call pieces (tool calls arrive in pieces, numbered by `index`).
    fn on_event(&self, step: &mut StepAssembler<'_, '_>, v: &Value) -> Result<(), String> {
        if let Some(err) = v.get("error") {
            return Err(format!("the model provider reported an error: {err}"));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            step.usage.input = u["prompt_tokens"].as_u64().unwrap_or(step.usage.input);
            step.usage.output = u["completion_tokens"].as_u64().unwrap_or(step.usage.output);
        }
        let Some(choice) = v["choices"].get(0) else {
            return Ok(());
        };
        let delta = &choice["delta"];
        step.reasoning(
            delta["reasoning_content"]
                .as_str()
                .or(delta["reasoning"].as_str())
                .unwrap_or(""),
        );
        step.text(delta["content"].as_str().unwrap_or(""));
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = tc["index"].as_u64().unwrap_or(step.call_count() as u64) as usize;
            step.tool(index, tc["id"].as_str(), tc["function"]["name"].as_str());
            step.tool_args(index, tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if choice["finish_reason"].is_string() {
            step.finished = true;
        }
        Ok(())
    }
}
