//! Payloads of the environment and config frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an environment's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvKind {
    /// A GitHub repository (cloned over https).
    Github,
    /// Any git URL: https, ssh, git://, file://.
    Git,
    /// A directory that already exists on the node.
    Local,
    /// An empty directory the user fills by hand (or by the setup script).
    Manual,
}

impl EnvKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvKind::Github => "github",
            EnvKind::Git => "git",
            EnvKind::Local => "local",
            EnvKind::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindingStrategy {
    /// Clone (or fetch) under the node's workspace and run setup.
    Auto,
    /// Use a directory that already exists on the node.
    ExistingPath,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretScope {
    /// Only the setup script sees it.
    Setup,
    /// The setup script and every task.
    Runtime,
}

/// A secret's plaintext, only ever inside an authenticated frame to the node that needs it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    pub name: String,
    pub value: String,
    pub scope: SecretScope,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({}, {:?}, ***)", self.name, self.scope)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSource {
    pub kind: EnvKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// For `local`: the directory on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Gateway -> node: materialize a binding and run its setup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepareEnvironment {
    pub binding_id: String,
    pub environment_id: String,
    pub name: String,
    /// The environment version this prepare brings the binding to.
    pub version: i64,
    pub source: EnvironmentSource,
    pub strategy: BindingStrategy,
    /// For `existing-path`: the directory on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Relative to the materialized directory.
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub setup_script: String,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: Vec<SecretValue>,
    /// Run setup even when nothing changed since the last success.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingStatus {
    Pending,
    Preparing,
    Ready,
    Error,
}

impl BindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingStatus::Pending => "pending",
            BindingStatus::Preparing => "preparing",
            BindingStatus::Ready => "ready",
            BindingStatus::Error => "error",
        }
    }
}

/// Node -> gateway: where a binding stands.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BindingState {
    pub binding_id: String,
    pub status: BindingStatus,
    /// The step that failed (resolve, clone, fetch, workdir, setup) or is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Absolute working directory tasks run in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The environment version the binding was prepared at.
    pub version: i64,
    #[serde(default)]
    pub setup_skipped: bool,
}

/// Node -> gateway: the result of checking the pulled config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigAck {
    pub config_version: String,
    pub validations: Vec<ConfigValidation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValidation {
    /// llm_keys, oauth, env_secrets, skills, binary_deps, setup_script
    pub category: String,
    /// verified, failed or unchecked
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub checked_at: String,
}
