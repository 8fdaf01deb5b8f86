//! `config:push`: the node pulls its configuration from the gateway (authenticated with its
//! node token), checks it, and answers with `config:ack`.

use super::executor::bash_syntax;
use super::identity::Credentials;
use super::runtime::Runtime;
use crate::clock::{iso8601, now_ms};
use crate::protocol::node_config::NodeConfig;
use crate::protocol::{ConfigAck, ConfigValidation, ValidationStatus};

fn validation(category: &str, ok: Option<bool>, message: impl Into<String>) -> ConfigValidation {
    ConfigValidation {
        category: category.into(),
        status: match ok {
            Some(true) => ValidationStatus::Verified,
            Some(false) => ValidationStatus::Failed,
            None => ValidationStatus::Unchecked,
        },
        message: Some(message.into()).filter(|m: &String| !m.is_empty()),
        checked_at: iso8601(now_ms()),
    }
}

/// Pulls `/api/vibers/:id/config` and validates it.
pub async fn check(rt: &Runtime) -> ConfigAck {
    let config = match pull(rt).await {
        Ok(c) => c,
        Err(e) => {
            return ConfigAck {
                config_version: String::new(),
                validations: vec![validation(
                    "config",
                    Some(false),
                    format!("cannot pull config: {e:#}"),
                )],
            }
        }
    };
    let mut validations = Vec::new();
    let envs = &config.environments;

    // Setup scripts parse.
    let mut bad = Vec::new();
    for env in envs {
        if let Err(e) = bash_syntax(&env.setup_script).await {
            bad.push(format!(
                "{}: line {}: {}",
                env.name,
                e.line.map(|l| l.to_string()).unwrap_or("?".into()),
                e.message
            ));
        }
    }
    validations.push(validation(
        "setup_script",
        Some(bad.is_empty()),
        bad.join("; "),
    ));

    // Every declared secret has a value.
    let mut missing = Vec::new();
    for env in envs {
        for s in env.secrets.iter().filter(|s| !s.set) {
            missing.push(format!("{}.{}", env.name, s.name));
        }
    }
    validations.push(validation(
        "env_secrets",
        Some(missing.is_empty()),
        if missing.is_empty() {
            String::new()
        } else {
            format!("missing: {}", missing.join(", "))
        },
    ));

    // Binaries the node needs.
    let bash = tokio::process::Command::new("bash")
        .arg("--version")
        .output()
        .await;
    validations.push(validation(
        "binary_deps",
        Some(bash.as_ref().is_ok_and(|o| o.status.success())),
        if bash.is_ok() {
            "bash found"
        } else {
            "bash not found on PATH"
        },
    ));
    validations.push(validation(
        "llm_keys",
        None,
        "no LLM provider configured on this node",
    ));

    ConfigAck {
        config_version: config.version,
        validations,
    }
}

async fn pull(rt: &Runtime) -> anyhow::Result<NodeConfig> {
    let creds = Credentials::load_for(rt.data_dir(), rt.gateway())?
        .ok_or_else(|| anyhow::anyhow!("this node has no node token yet"))?;
    let base = rt
        .gateway()
        .trim_end_matches('/')
        .replacen("ws://", "http://", 1)
        .replacen("wss://", "https://", 1);
    let base = base.strip_suffix("/ws").unwrap_or(&base).to_string();
    let url = format!("{base}/api/vibers/{}/config", rt.node_id());
    let res = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&creds.node_token)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await?;
    let status = res.status();
    let body = res.bytes().await?;
    if !status.is_success() {
        anyhow::bail!("{}", crate::cli::api_error_message(status, &body));
    }
    Ok(serde_json::from_slice(&body)?)
}
