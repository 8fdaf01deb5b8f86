//! Payloads of the environment and config frames, and the path rules that both the gateway
//! (validating a request) and the node (materializing it) apply to environment fields.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names::wire_enum;

wire_enum! {
    /// Where an environment's code comes from.
    pub enum EnvKind ("type") {
        /// A GitHub repository (cloned over https).
        Github = "github",
        /// Any git URL: https, ssh, git://, file://.
        Git = "git",
        /// A directory that already exists on the node.
        Local = "local",
        /// An empty directory the user fills by hand (or by the setup script).
        Manual = "manual",
    }
}

impl EnvKind {
    /// Kinds whose code comes from a git repository.
    pub fn is_git(self) -> bool {
        matches!(self, EnvKind::Github | EnvKind::Git)
    }
}

wire_enum! {
    /// How a binding materializes its environment on the node.
    pub enum BindingStrategy ("strategy") {
        /// Clone (or fetch) under the node's workspace and run setup.
        Auto = "auto",
        /// Use a directory that already exists on the node.
        ExistingPath = "existing-path",
    }
}

wire_enum! {
    /// Who sees a secret.
    pub enum SecretScope ("scope") {
        /// Only the setup script sees it.
        Setup = "setup",
        /// The setup script and every task.
        Runtime = "runtime",
    }
}

wire_enum! {
    /// What outbound network a task's processes get (the environment's `networkAccess`).
    pub enum NetworkAccess ("network access") {
        /// The host's network, as the node itself has it.
        On = "on",
        /// Loopback only: the sandbox has its own network namespace.
        Off = "off",
        /// Only through the node's HTTP(S) proxy, to the listed hosts.
        Allowlist = "allowlist",
    }
}

impl NetworkAccess {
    /// The mode an older `networkAccess: true|false` meant.
    pub fn from_flag(on: bool) -> NetworkAccess {
        if on {
            NetworkAccess::On
        } else {
            NetworkAccess::Off
        }
    }
}

/// Checks one `networkAllowlist` entry: a host name (`example.com`), a wildcard for its
/// subdomains (`*.example.com`) or an IP address, each with an optional `:port`. Returns it
/// lowercased.
pub fn allowlist_entry(entry: &str) -> Result<String, String> {
    let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
    let (host, port) = match e.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (e.as_str(), None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{entry:?}: the port must be 1-65535"));
        }
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(format!(
            "{entry:?} is not a host name, a *.wildcard or an IPv4 address (with an optional :port)"
        ));
    }
    Ok(e)
}

/// A secret's plaintext, only ever inside an authenticated frame to the node that needs it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretValue {
    pub name: String,
    pub value: String,
    pub scope: SecretScope,
    /// A path relative to an agent CLI's home to write the value to (0600), instead of a
    /// variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
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
    /// Run the setup script in a container of this image (the environment's
    /// `containerImage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
}

/// Checks a container image reference (`debian:12`, `ghcr.io/org/img@sha256:...`): the
/// characters an image name may hold, and no leading `-` (it is an engine argument).
pub fn image_reference(image: &str) -> Result<(), String> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && !image.starts_with('-')
        && image
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/:@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{image:?} is not an image reference (like debian:12 or ghcr.io/org/image:tag)"
        ))
    }
}

/// A container that an environment's processes run in, through the node's podman or docker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    pub image: String,
    /// A named volume mounted as the home directory and kept between runs
    /// (`persistVolume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_volume: Option<String>,
}

wire_enum! {
    /// Where a binding stands, as stored and as its node reports it.
    pub enum BindingStatus ("status") {
        Pending = "pending",
        Preparing = "preparing",
        Ready = "ready",
        Error = "error",
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ConfigAck {
    pub config_version: String,
    pub validations: Vec<ConfigValidation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct ConfigValidation {
    /// llm_keys, oauth, env_secrets, skills, binary_deps, setup_script
    pub category: String,
    pub status: ValidationStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
    pub checked_at: String,
}

wire_enum! {
    /// The result of one config check on a node.
    pub enum ValidationStatus ("validation status") {
        Verified = "verified",
        Failed = "failed",
        Unchecked = "unchecked",
    }
}

/// Gateway -> node: check an environment's setup script and repository from the node (the
/// gateway never runs scripts or opens repository URLs itself). Answered with
/// `environment:validated` carrying the same `requestId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateEnvironment {
    pub request_id: String,
    #[serde(default)]
    pub setup_script: String,
    /// Checked for reachability (and `branch` for presence) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// Node -> gateway: the checks of one `environment:validate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    pub request_id: String,
    pub checks: Vec<ValidationCheck>,
}

/// One check of an environment (`setupScript`, `repository`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ValidationCheck {
    pub name: String,
    pub ok: bool,
    pub message: String,
    /// The script line a syntax error is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, ts(optional))]
    #[schema(nullable = false)]
    pub line: Option<u32>,
}

/// A relative path that stays inside its base (`workingDir`): not absolute, no `..`.
pub fn relative_inside(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if path.is_absolute() {
        return Err(format!("{p:?} must be relative"));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("{p:?} must not leave its directory (no `..`)"));
    }
    Ok(path.to_path_buf())
}

/// An absolute path without `..` components (a `localPath`, an existing-path binding).
pub fn absolute_clean(p: &str) -> Result<PathBuf, String> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(format!("{p:?} must be an absolute path"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{p:?} must not contain `..`"));
    }
    Ok(path.to_path_buf())
}
