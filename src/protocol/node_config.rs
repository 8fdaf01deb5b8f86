//! `GET /api/nodes/:id/config`: what a node is configured with, as the node itself pulls it
//! (authenticated with its node token) after `config:push`, to check it and answer with
//! `config:ack`.
//!
//! Only what configures the node is in it (no statuses or timestamps), so `version`, a hash
//! of the content, changes exactly when there is something to act on. Secret values never
//! appear: only their names, scopes and whether a value is set.

use serde::{Deserialize, Serialize};

use super::{BindingStrategy, EnvKind, SecretScope};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    pub environments: Vec<NodeConfigEnvironment>,
    pub bindings: Vec<NodeConfigBinding>,
    /// 16 hex digits of the SHA-256 of the environments and bindings.
    pub version: String,
    pub node_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfigEnvironment {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EnvKind,
    pub version: i64,
    #[schema(required = true)]
    pub repo_url: Option<String>,
    #[schema(required = true)]
    pub repo_branch: Option<String>,
    pub working_dir: String,
    pub setup_script: String,
    /// Variable names.
    pub vars: Vec<String>,
    pub secrets: Vec<NodeConfigSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfigSecret {
    pub name: String,
    pub scope: SecretScope,
    /// Whether a value is stored.
    pub set: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfigBinding {
    pub id: String,
    pub environment_id: String,
    pub strategy: BindingStrategy,
    #[schema(required = true)]
    pub path: Option<String>,
    pub environment_version: i64,
}

impl NodeConfig {
    /// The config of `node_id` with its content version computed.
    pub fn new(
        node_id: String,
        environments: Vec<NodeConfigEnvironment>,
        bindings: Vec<NodeConfigBinding>,
    ) -> NodeConfig {
        #[derive(Serialize)]
        struct Content<'a> {
            environments: &'a [NodeConfigEnvironment],
            bindings: &'a [NodeConfigBinding],
        }
        let content = serde_json::to_string(&Content {
            environments: &environments,
            bindings: &bindings,
        })
        .expect("config serializes");
        let version = crate::crypto::sha256_hex(content.as_bytes())[..16].to_string();
        NodeConfig {
            environments,
            bindings,
            version,
            node_id,
        }
    }
}
