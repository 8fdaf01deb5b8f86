//! REST routes. Every `/api/*` route requires an operator token; `/health`, `/ws` (which
//! authenticates nodes itself) and the board do not.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Body, MAX_BODY_BYTES};
use super::link::{self, ENROLLMENT_PREFIX};
use super::{auth, board, environments, task_api, threads, App};
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::protocol::{close, ErrorCode, Frame};

pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/vibers", get(list_nodes))
        .route("/nodes", get(list_nodes))
        .route("/nodes/enroll", post(enroll))
        .route("/nodes/{id}", get(get_node).delete(revoke_node))
        .route("/vibers/{id}", get(get_node).delete(revoke_node))
        .route("/tasks", get(task_api::list).post(task_api::create))
        .route("/tasks/{id}", get(task_api::get))
        .route("/tasks/{id}/stop", post(task_api::stop))
        .route("/tasks/{id}/message", post(task_api::message))
        .route("/tasks/{id}/stream", get(task_api::stream))
        .route("/tasks/{id}/approvals/{approval}", post(task_api::approve))
        .route("/events", get(task_api::events))
        .route("/usage", get(task_api::usage))
        .route(
            "/environments",
            get(environments::list).post(environments::create),
        )
        .route(
            "/environments/{id}",
            get(environments::get)
                .put(environments::update)
                .delete(environments::delete),
        )
        .route("/environments/{id}/validate", post(environments::validate))
        .route(
            "/environments/{id}/bindings",
            get(environments::bindings).post(environments::bind),
        )
        .route(
            "/environments/{id}/bindings/{bid}/prepare",
            post(environments::prepare),
        )
        .route(
            "/environments/{id}/bindings/{bid}/logs",
            get(environments::logs),
        )
        .route("/vibers/{id}/config-push", post(environments::config_push))
        .route("/nodes/{id}/config-push", post(environments::config_push))
        .route("/threads", get(threads::list).post(threads::create))
        .route("/threads/{id}", get(threads::get).patch(threads::patch))
        .route(
            "/threads/{id}/messages",
            get(threads::messages).post(threads::send),
        )
        .fallback(api_not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_operator,
        ));
    Router::new()
        .route("/health", get(health))
        // Authenticated with the node's own token, not an operator token.
        .route("/api/vibers/{id}/config", get(environments::node_config))
        .route("/api/nodes/{id}/config", get(environments::node_config))
        // Authenticated with the token in the body (login) or the cookie itself.
        .route(
            "/api/session",
            get(auth::session).post(auth::login).delete(auth::logout),
        )
        .route("/ws", get(link::upgrade))
        .nest("/api", api)
        .merge(board::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn api_not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

async fn health(State(app): State<App>) -> ApiResult<Json<Value>> {
    let (nodes, tasks) = app.store.counts().await?;
    Ok(Json(json!({
        "status": "ok",
        "version": crate::VERSION,
        "uptimeSecs": app.started.elapsed().as_secs(),
        "nodes": nodes,
        "nodesOnline": app.registry.online_count(),
        "tasks": tasks,
    })))
}

/// A node as the API shows it.
fn node_json(app: &App, n: &crate::store::NodeRecord) -> Value {
    let presence = app.registry.presence(&n.id);
    let online = presence.is_some();
    let (version, platform, capabilities, running, last_seen, load) = match &presence {
        Some(p) => (
            p.info.version.clone(),
            p.info.platform.clone(),
            p.info.capabilities.clone(),
            p.status.running_tasks.clone(),
            Some(p.last_seen),
            Some(p.status.load),
        ),
        None => (
            n.version.clone(),
            n.platform.clone(),
            n.capabilities.clone(),
            Vec::new(),
            n.last_seen_at,
            None,
        ),
    };
    let mut v = json!({
        "id": n.id,
        "name": n.name,
        "version": version,
        "platform": platform,
        "capabilities": capabilities,
        "status": if online { "online" } else { "offline" },
        "runningTasks": running,
        "enrolledAt": iso8601(n.created_at),
    });
    if let Some(ls) = last_seen {
        v["lastSeen"] = json!(iso8601(ls));
    }
    if let Some(p) = &presence {
        v["connectedAt"] = json!(iso8601(p.connected_at));
        v["memoryRssBytes"] = json!(p.status.memory_rss_bytes);
        v["uptimeSecs"] = json!(p.status.uptime_secs);
    }
    if let Some(load) = load {
        v["load"] = json!(load);
    }
    if let Some(cfg) = n
        .config_state
        .as_deref()
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
    {
        v["config"] = cfg;
    }
    v
}

async fn list_nodes(State(app): State<App>) -> ApiResult<Json<Value>> {
    let nodes = app.store.list_nodes().await?;
    let list: Vec<Value> = nodes.iter().map(|n| node_json(&app, n)).collect();
    Ok(Json(json!({ "nodes": list })))
}

async fn get_node(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    match app.store.node(id.clone()).await? {
        Some(n) if n.revoked_at.is_none() => Ok(Json(node_json(&app, &n))),
        _ => Err(ApiError::not_found(format!("no node {id:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnrollRequest {
    name: String,
    /// Lifetime of the token in seconds (default: the gateway's enrollment TTL).
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

async fn enroll(
    State(app): State<App>,
    Body(req): Body<EnrollRequest>,
) -> ApiResult<impl IntoResponse> {
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
    let (token, expires_at) = create_enrollment(&app, &name, ttl).await?;
    let command = format!(
        "viber node --gateway {} --token {} --name {}",
        app.base_url,
        token,
        shell_quote(&name)
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "name": name,
            "token": token,
            "expiresAt": iso8601(expires_at),
            "command": command,
        })),
    ))
}

/// Creates a one-time enrollment token; returns it and its expiry (epoch ms).
pub async fn create_enrollment(
    app: &App,
    name: &str,
    ttl: Duration,
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
        )
        .await?;
    Ok((token, expires_at))
}

fn validate_node_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::validation("name must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::validation(
            "name may contain only letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
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

async fn revoke_node(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
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

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(super::shell_quote("build-01"), "build-01");
        assert_eq!(super::shell_quote("a b"), "'a b'");
        assert_eq!(super::shell_quote("it's"), r"'it'\''s'");
    }
}
