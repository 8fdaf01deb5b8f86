//! `/api/nodes*` (alias `/api/vibers*`): list and inspect nodes, enroll new ones, revoke, and
//! ask a node to pull its config. Presence comes from the link registry, the rest from SQL.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::openapi::Errors;
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::commands;
use crate::gateway::error::{ApiError, ApiResult, Body, Path};
use crate::gateway::link::{self, ENROLLMENT_PREFIX};
use crate::gateway::App;
use crate::protocol::api::ErrorBody;
use crate::protocol::api::{
    ConfigPushed, EnrollRequest, Enrollment, NodeList, NodePresence, NodeView,
};
use crate::protocol::names::valid_node_name;
use crate::protocol::{close, ErrorCode, Frame};
use crate::store::NodeRecord;

/// The sandbox a node advertised (`sandbox:bwrap` -> `bwrap`); none from older nodes.
fn sandbox_of(capabilities: &[String]) -> Option<String> {
    capabilities
        .iter()
        .find_map(|c| c.strip_prefix(crate::protocol::SANDBOX_CAPABILITY))
        .map(str::to_string)
}

/// A node as the API shows it: what it reported on this connection when online, what was
/// stored at its last connection otherwise.
fn node_view(app: &App, n: &NodeRecord) -> NodeView {
    let presence = app.registry.presence(&n.id);
    let config = n
        .config_state
        .as_deref()
        .and_then(|c| serde_json::from_str(c).ok());
    match presence {
        Some(p) => NodeView {
            id: n.id.clone(),
            name: n.name.clone(),
            version: p.info.version,
            platform: p.info.platform,
            sandbox: sandbox_of(&p.info.capabilities),
            capabilities: p.info.capabilities,
            status: NodePresence::Online,
            running_tasks: p.status.running_tasks,
            enrolled_at: iso8601(n.created_at),
            last_seen: Some(iso8601(p.last_seen)),
            connected_at: Some(iso8601(p.connected_at)),
            memory_rss_bytes: Some(p.status.memory_rss_bytes),
            uptime_secs: Some(p.status.uptime_secs),
            load: Some(p.status.load),
            config,
        },
        None => NodeView {
            id: n.id.clone(),
            name: n.name.clone(),
            version: n.version.clone(),
            platform: n.platform.clone(),
            sandbox: sandbox_of(&n.capabilities),
            capabilities: n.capabilities.clone(),
            status: NodePresence::Offline,
            running_tasks: Vec::new(),
            enrolled_at: iso8601(n.created_at),
            last_seen: n.last_seen_at.map(iso8601),
            connected_at: None,
            memory_rss_bytes: None,
            uptime_secs: None,
            load: None,
            config,
        },
    }
}

#[utoipa::path(
    get,
    path = "/nodes",
    operation_id = "listNodes",
    tag = "nodes",
    responses((status = 200, description = "Enrolled nodes", body = NodeList), Errors)
)]
pub async fn list(State(app): State<App>) -> ApiResult<Json<NodeList>> {
    let nodes = app.store.list_nodes().await?;
    Ok(Json(NodeList {
        nodes: nodes.iter().map(|n| node_view(&app, n)).collect(),
    }))
}

/// An enrolled node that was not revoked, or 404.
async fn load(app: &App, id: &str) -> ApiResult<NodeRecord> {
    match app.store.node(id.to_string()).await? {
        Some(n) if n.revoked_at.is_none() => Ok(n),
        _ => Err(ApiError::not_found(format!("no node {id:?}"))),
    }
}

#[utoipa::path(
    get,
    path = "/nodes/{id}",
    operation_id = "getNode",
    tag = "nodes",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 200, description = "The node", body = NodeView),
        (status = 404, description = "No such node (or revoked)", body = ErrorBody),
        Errors,
    )
)]
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<NodeView>> {
    let n = load(&app, &id).await?;
    Ok(Json(node_view(&app, &n)))
}

/// A token that enrolls a new node (or `uses` nodes: a fleet), and the command that uses it.
#[utoipa::path(
    post,
    path = "/nodes/enroll",
    operation_id = "enrollNode",
    tag = "nodes",
    request_body = EnrollRequest,
    responses(
        (status = 201, description = "Enrollment token created", body = Enrollment),
        (status = 422, description = "Bad name or lifetime", body = ErrorBody),
        Errors,
    )
)]
pub async fn enroll(
    State(app): State<App>,
    Body(req): Body<EnrollRequest>,
) -> ApiResult<(StatusCode, Json<Enrollment>)> {
    let name = req.name.trim().to_string();
    validate_node_name(&name)?;
    let ttl = req
        .expires_in_secs
        .map(Duration::from_secs)
        .unwrap_or(app.config.enrollment_ttl);
    if ttl.is_zero() || ttl > Duration::from_secs(30 * 24 * 3600) {
        return Err(ApiError::validation(
            "expiresInSecs must be between 1 and 2592000",
        ));
    }
    let uses = req.uses.unwrap_or(1);
    if !(1..=100_000).contains(&uses) {
        return Err(ApiError::validation("uses must be between 1 and 100000"));
    }
    let (token, expires_at) = create_enrollment(&app, &name, ttl, uses).await?;
    let command = format!(
        "viber node --gateway {} --token {} --name {}",
        app.base_url,
        token,
        shell_quote(&name)
    );
    Ok((
        StatusCode::CREATED,
        Json(Enrollment {
            name,
            token,
            expires_at: iso8601(expires_at),
            command,
            uses,
        }),
    ))
}

/// Creates an enrollment token for `uses` nodes; returns it and its expiry (epoch ms).
pub async fn create_enrollment(
    app: &App,
    name: &str,
    ttl: Duration,
    uses: u32,
) -> anyhow::Result<(String, i64)> {
    let token = crypto::new_token(ENROLLMENT_PREFIX);
    let now = now_ms();
    let expires_at = now + ttl.as_millis() as i64;
    app.store
        .create_enrollment(
            crypto::sha256_hex(token.as_bytes()),
            name.to_string(),
            now,
            expires_at,
            uses,
        )
        .await?;
    Ok((token, expires_at))
}

pub(super) fn validate_node_name(name: &str) -> ApiResult<()> {
    if valid_node_name(name) {
        Ok(())
    } else {
        Err(ApiError::validation(
            "name must be 1 to 64 letters, digits, '-', '_' and '.'",
        ))
    }
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Revokes a node: its token stops working and its connection is closed.
#[utoipa::path(
    delete,
    path = "/nodes/{id}",
    operation_id = "revokeNode",
    tag = "nodes",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such node", body = ErrorBody),
        Errors,
    )
)]
pub async fn revoke(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if !app.store.revoke_node(id.clone(), now_ms()).await? {
        return Err(ApiError::not_found(format!("no node {id:?}")));
    }
    tracing::info!(node = %id, "node revoked");
    link::kick(
        &app,
        &id,
        close::REVOKED,
        Frame::error(ErrorCode::Revoked, "this node was revoked by an operator"),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/nodes/:id/config-push`: asks the node to pull and validate its config.
#[utoipa::path(
    post,
    path = "/nodes/{id}/config-push",
    operation_id = "pushNodeConfig",
    tag = "nodes",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 202, description = "Sent (or stored until the node is back)", body = ConfigPushed),
        (status = 404, description = "No such node", body = ErrorBody),
        Errors,
    )
)]
pub async fn config_push(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<ConfigPushed>)> {
    load(&app, &id).await?;
    let frame = Frame::ConfigPush { command_id: None };
    let delivered = commands::send(&app, &id, None, frame).await?.answer()?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ConfigPushed {
            node_id: id,
            pushed: true,
            delivered,
        }),
    ))
}

// ---- `/api/vibers*`: OpenViber's names for the same routes ----

#[utoipa::path(
    get,
    path = "/vibers",
    operation_id = "listVibers",
    tag = "nodes",
    description = "Alias of `GET /api/nodes` (OpenViber compatibility).",
    responses((status = 200, description = "Enrolled nodes", body = NodeList), Errors)
)]
#[deprecated = "use GET /api/nodes"]
pub async fn list_vibers(app: State<App>) -> ApiResult<Json<NodeList>> {
    list(app).await
}

#[utoipa::path(
    get,
    path = "/vibers/{id}",
    operation_id = "getViber",
    tag = "nodes",
    description = "Alias of `GET /api/nodes/{id}` (OpenViber compatibility).",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 200, description = "The node", body = NodeView), Errors)
)]
#[deprecated = "use GET /api/nodes/{id}"]
pub async fn get_viber(app: State<App>, id: Path<String>) -> ApiResult<Json<NodeView>> {
    get(app, id).await
}

#[utoipa::path(
    delete,
    path = "/vibers/{id}",
    operation_id = "revokeViber",
    tag = "nodes",
    description = "Alias of `DELETE /api/nodes/{id}` (OpenViber compatibility).",
    params(("id" = String, Path, description = "Node id")),
    responses((status = 204, description = "Revoked"), Errors)
)]
#[deprecated = "use DELETE /api/nodes/{id}"]
pub async fn revoke_viber(app: State<App>, id: Path<String>) -> ApiResult<StatusCode> {
    revoke(app, id).await
}

#[utoipa::path(
    post,
    path = "/vibers/{id}/config-push",
    operation_id = "pushViberConfig",
    tag = "nodes",
    description = "Alias of `POST /api/nodes/{id}/config-push` (OpenViber compatibility).",
    params(("id" = String, Path, description = "Node id")),
    responses(
        (status = 202, description = "Sent (or stored until the node is back)", body = ConfigPushed),
        Errors,
    )
)]
#[deprecated = "use POST /api/nodes/{id}/config-push"]
pub async fn config_push_viber(
    app: State<App>,
    id: Path<String>,
) -> ApiResult<(StatusCode, Json<ConfigPushed>)> {
    config_push(app, id).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(super::shell_quote("build-01"), "build-01");
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
    }
}
