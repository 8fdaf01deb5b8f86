//! Where the model lives, and the seam between the agent loop and a provider's wire format.
//!
//! Owns: [`Provider`] (which wire API, base URL, key, model), resolved from the task's
//! environment, the node's `<data-dir>/llm.json`, then the process environment; and the
//! [`WireApi`] trait that each wire format implements, one file each (`openai.rs`,
//! `anthropic.rs`). Adding a provider API means one new file and one arm in [`Api::wire`].
//!
//! Must not touch: sending requests and retrying them (`retry.rs`), UI chunks (`stream.rs`),
//! the conversation or the tools (`mod.rs`). The API key leaves this module only towards
//! [`WireApi::authorize`]: never in a prompt, a log line (see the `Debug` impl) or a chunk.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

use super::anthropic::Anthropic;
use super::openai::OpenAi;
use super::stream::StepAssembler;

/// Which wire format the provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// OpenAI-compatible Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Api {
    /// The implementation of this wire format.
    pub(super) fn wire(self) -> &'static dyn WireApi {
        match self {
            Api::OpenAi => &OpenAi,
            Api::Anthropic => &Anthropic,
        }
    }
}

/// The settings names and defaults of one wire API.
pub(super) struct Settings {
    pub base_url_var: &'static str,
    pub api_key_var: &'static str,
    pub model_var: &'static str,
    pub default_base_url: &'static str,
    pub default_model: &'static str,
}

/// One provider wire format: how a streaming model call is addressed, authorized and
/// written, and how its stream events are read. The conversation itself is always kept in
/// the OpenAI Chat Completions format; an implementation converts it for its request.
pub(super) trait WireApi: Sync {
    fn settings(&self) -> &'static Settings;
    /// The endpoint of one model call.
    fn url(&self, base_url: &str) -> String;
    /// Adds the key and any headers the API requires.
    fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder;
    /// The body of one streaming model call.
    fn request_body(&self, model: &str, messages: &[Value]) -> Value;
    /// Feeds one event of the response stream (an SSE `data` payload) to the step being
    /// assembled. An error ends the step.
    fn on_event(&self, step: &mut StepAssembler<'_, '_>, event: &Value) -> Result<(), String>;
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
static NODE_CONFIG: OnceLock<BTreeMap<String, String>> = OnceLock::new();

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
        let configured = |api: Api| {
            let s = api.wire().settings();
            get(s.base_url_var).is_some() || get(s.api_key_var).is_some()
        };
        let api = match get("VIBER_LLM_PROVIDER").as_deref() {
            Some("anthropic") => Api::Anthropic,
            Some("openai") => Api::OpenAi,
            _ if configured(Api::OpenAi) => Api::OpenAi,
            _ if configured(Api::Anthropic) => Api::Anthropic,
            _ => return None,
        };
        let s = api.wire().settings();
        Some(Provider {
            api,
            base_url: get(s.base_url_var)
                .unwrap_or_else(|| s.default_base_url.into())
                .trim_end_matches('/')
                .to_string(),
            api_key: get(s.api_key_var),
            model: model
                .map(str::to_string)
                .or_else(|| get(s.model_var))
                .or_else(|| get("VIBER_MODEL"))
                .unwrap_or_else(|| s.default_model.into()),
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
