//! Environments, their secrets, bindings, setup logs and validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::protocol::names::wire_enum;
use crate::protocol::{
    BindingStrategy, EnvKind, ExecutorKind, NetworkAccess, SecretScope, ValidationCheck,
};

/// A secret in a request: a bare value (runtime scope), `{value, scope}`, or null to remove.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SecretInput {
    Value(String),
    Scoped {
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<SecretScope>,
        /// Deliver the value as this file, a path relative to the agent CLI's home (such as
        /// `.claude/.credentials.json` or `.codex/auth.json`), written 0600 for each run of
        /// an agent CLI, instead of as a variable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
}

/// The schema (only) of one entry of `secrets` in an [`EnvironmentInput`]: a
/// [`SecretInput`], or null to remove the secret.
pub struct SecretChange;

impl utoipa::PartialSchema for SecretChange {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Ref, Type};
        use utoipa::ToSchema;
        OneOfBuilder::new()
            .item(Ref::from_schema_name(SecretInput::name()))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}

impl utoipa::ToSchema for SecretChange {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::{PartialSchema, ToSchema};
        schemas.push((SecretInput::name().into(), SecretInput::schema()));
        <SecretInput as ToSchema>::schemas(schemas);
    }
}

/// `POST /api/environments` and `PUT /api/environments/:id`: absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parsed by the gateway so an unknown type gets a 422 that lists the known ones.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_script: Option<String>,
    /// `on`, `off` or `allowlist` (`true`/`false` are accepted for `on`/`off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_access: Option<NetworkAccessInput>,
    /// Hosts a task may reach under `networkAccess: allowlist`: `example.com`,
    /// `*.example.com` (its subdomains), an IPv4 address, each with an optional `:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_allowlist: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_volume: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_executor: Option<String>,
    /// Merged key by key; a null value removes a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Replaces all variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<BTreeMap<String, String>>,
    /// Changes by name; a null value removes the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, SecretChange>>)]
    pub secrets: Option<BTreeMap<String, Option<SecretInput>>>,
}

/// `networkAccess` in a request: a mode, or the boolean older clients send.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum NetworkAccessInput {
    Flag(bool),
    Mode(NetworkAccess),
}

impl NetworkAccessInput {
    pub fn mode(self) -> NetworkAccess {
        match self {
            NetworkAccessInput::Flag(on) => NetworkAccess::from_flag(on),
            NetworkAccessInput::Mode(m) => m,
        }
    }
}

/// A secret as shown: never its value, only a mask.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SecretView {
    pub value: String,
    pub scope: SecretScope,
    pub updated_at: String,
    /// Delivered as this file in the agent home instead of as a variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub file: Option<String>,
}

wire_enum! {
    /// A binding's status as shown: the stored status, or `stale` for a ready binding whose
    /// environment changed after its last prepare.
    pub enum BindingPhase ("status") {
        Pending = "pending",
        Preparing = "preparing",
        Ready = "ready",
        Stale = "stale",
        Error = "error",
    }
}

/// An environment mapped onto one node.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct BindingView {
    pub id: String,
    pub environment_id: String,
    pub node_id: String,
    pub node_online: bool,
    pub strategy: BindingStrategy,
    pub status: BindingPhase,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub resolved_working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub prepared_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_prepare_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct BindingList {
    pub bindings: Vec<BindingView>,
}

/// An environment as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct EnvironmentView {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub kind: EnvKind,
    pub working_dir: String,
    pub setup_script: String,
    pub network_access: NetworkAccess,
    pub network_allowlist: Vec<String>,
    pub persist_volume: bool,
    #[cfg_attr(test, ts(type = "Record<string, unknown>"))]
    pub metadata: Value,
    pub version: i64,
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretView>,
    pub bindings: Vec<BindingView>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub repo_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub repo_org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub repo_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub repo_branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub local_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub container_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub default_executor: Option<ExecutorKind>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct EnvironmentList {
    pub environments: Vec<EnvironmentView>,
}

/// `POST /api/environments/:id/bindings`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BindRequest {
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<BindingStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `POST /api/environments/:id/bindings/:bid/prepare` (the body is optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// Re-run setup even when nothing changed.
    #[serde(default)]
    pub force: bool,
}

/// `GET .../logs?after=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
}

/// One line of a binding's setup output (already redacted on the node).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LogLine {
    pub seq: i64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct LogList {
    pub logs: Vec<LogLine>,
}

/// `POST /api/environments/:id/validate`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ValidationResult {
    pub ok: bool,
    pub checks: Vec<ValidationCheck>,
}

/// `GET /api/config`: the shared credentials every environment inherits unless it sets the
/// same name (or, for a file, the same path) itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct SharedConfig {
    /// Plain variables (`var.NAME`).
    pub vars: std::collections::BTreeMap<String, String>,
    /// Secrets, masked: variables (`env.NAME`) and files (`file.PATH`, named
    /// `FILE_<PATH IN CAPITALS>`).
    pub secrets: std::collections::BTreeMap<String, SecretView>,
}

/// `PUT /api/config/:key`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct SetShared {
    pub value: String,
    /// For a secret: `runtime` (setup and tasks, the default) or `setup` (setup only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scope: Option<SecretScope>,
}
