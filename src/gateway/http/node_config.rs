//! `GET /api/nodes/:id/config` (alias `/api/vibers/:id/config`): a node's configuration,
//! served only to that node (its own node token, not an operator's).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use super::openapi::Errors;
use crate::crypto;
use crate::gateway::error::{ApiError, ApiResult, Path};
use crate::gateway::App;
use crate::protocol::api::ErrorBody;
use crate::protocol::node_config::{
    NodeConfig, NodeConfigBinding, NodeConfigEnvironment, NodeConfigSecret,
};

/// The node's environments and bindings, pulled by the node itself after `config:push`.
#[utoipa::path(
    get,
    path = "/api/nodes/{id}/config",
    operation_id = "nodeConfig",
    tag = "nodes",
    params(("id" = String, Path, description = "Node id")),
    security(("nodeToken" = [])),
    responses(
        (status = 200, description = "The node's configuration (no secret values)", body = NodeConfig),
        (status = 401, description = "Not this node's token", body = ErrorBody),
        Errors,
    )
)]
pub async fn node_config(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<NodeConfig>> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let node = app.store.node(id.clone()).await?;
    let ok = node.as_ref().is_some_and(|n| {
        n.revoked_at.is_none()
            && !token.is_empty()
            && n.token_hash == crypto::sha256_hex(token.as_bytes())
    });
    if !ok {
        return Err(ApiError::unauthorized(
            "node token required: this endpoint serves only the node itself",
        ));
    }
    let mut environments = Vec::new();
    let mut bindings = Vec::new();
    for b in app.store.bindings_of_node(id.clone()).await? {
        let Some(e) = app.store.environment(b.environment_id.clone()).await? else {
            continue;
        };
        let secrets = app
            .store
            .effective_secrets(e.id.clone())
            .await?
            .into_iter()
            .map(|(s, _)| NodeConfigSecret {
                name: s.key,
                scope: s.scope,
                set: !s.sealed.ciphertext.is_empty(),
            })
            .collect();
        let vars = app
            .store
            .effective_vars(e.id.clone())
            .await?
            .into_keys()
            .collect();
        bindings.push(NodeConfigBinding {
            id: b.id,
            environment_id: b.environment_id,
            strategy: b.strategy,
            path: b.path,
            environment_version: e.version,
        });
        environments.push(NodeConfigEnvironment {
            id: e.id,
            name: e.name,
            kind: e.kind,
            version: e.version,
            repo_url: e.repo_url,
            repo_branch: e.repo_branch,
            working_dir: e.working_dir,
            setup_script: e.setup_script,
            vars,
            secrets,
        });
    }
    Ok(Json(NodeConfig::new(id, environments, bindings)))
}

#[utoipa::path(
    get,
    path = "/api/vibers/{id}/config",
    operation_id = "viberConfig",
    tag = "nodes",
    description = "Alias of `GET /api/nodes/{id}/config` (OpenViber compatibility).",
    params(("id" = String, Path, description = "Node id")),
    security(("nodeToken" = [])),
    responses((status = 200, description = "The node's configuration", body = NodeConfig), Errors)
)]
#[deprecated = "use GET /api/nodes/{id}/config"]
pub async fn node_config_viber(
    app: State<App>,
    id: Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<NodeConfig>> {
    node_config(app, id, headers).await
}
