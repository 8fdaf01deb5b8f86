//! `/api/environments/:id/bindings*`: mapping an environment onto nodes, preparing it there
//! and reading the setup output. The prepare frames themselves are `envs/prepare.rs`'s.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::environments::load_env;
use super::openapi::Errors;
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::envs::{binding_phase, send_prepare};
use crate::gateway::error::{parse_json, ApiError, ApiResult, Body, Path, Query};
use crate::gateway::App;
use crate::protocol::api::{
    BindRequest, BindingList, BindingView, ErrorBody, LogLine, LogList, LogQuery, PrepareRequest,
};
use crate::protocol::{absolute_clean, BindingStatus, BindingStrategy};
use crate::store::{BindingRecord, EnvironmentRecord};

pub fn binding_view(app: &App, b: &BindingRecord, env_version: i64) -> BindingView {
    BindingView {
        id: b.id.clone(),
        environment_id: b.environment_id.clone(),
        node_id: b.node_id.clone(),
        node_online: app.registry.presence(&b.node_id).is_some(),
        strategy: b.strategy,
        status: binding_phase(b, env_version),
        created_at: iso8601(b.created_at),
        path: b.path.clone(),
        resolved_working_dir: b.resolved_working_dir.clone(),
        step: b.step.clone(),
        last_error: b.last_error.clone(),
        commit: b.commit_sha.clone(),
        prepared_version: b.prepared_version,
        last_prepare_at: b.last_prepare_at.map(iso8601),
    }
}

/// Maps the environment onto a node and prepares it there (replacing the node's binding).
#[utoipa::path(
    post,
    path = "/environments/{id}/bindings",
    operation_id = "bindEnvironment",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name")),
    request_body = BindRequest,
    responses(
        (status = 201, description = "Bound; preparing when the node is online", body = BindingView),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 422, description = "Unknown node or bad path", body = ErrorBody),
        Errors,
    )
)]
pub async fn bind(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<BindRequest>,
) -> ApiResult<(StatusCode, Json<BindingView>)> {
    let env = load_env(&app, &id).await?;
    match app.store.node(req.node_id.clone()).await? {
        Some(n) if n.revoked_at.is_none() => {}
        _ => {
            return Err(ApiError::validation(format!(
                "unknown nodeId {:?}",
                req.node_id
            )))
        }
    }
    let strategy = req.strategy.unwrap_or(BindingStrategy::Auto);
    let path = match strategy {
        BindingStrategy::ExistingPath => {
            let p = req
                .path
                .as_deref()
                .ok_or_else(|| ApiError::validation("strategy existing-path needs a path"))?;
            absolute_clean(p).map_err(|e| ApiError::validation(format!("path {e}")))?;
            Some(p.to_string())
        }
        BindingStrategy::Auto => None,
    };
    let binding = app
        .store
        .upsert_binding(BindingRecord {
            id: crypto::new_id("bind"),
            environment_id: env.id.clone(),
            node_id: req.node_id.clone(),
            strategy,
            path,
            resolved_working_dir: None,
            status: BindingStatus::Pending,
            step: None,
            last_error: None,
            commit_sha: None,
            prepared_version: None,
            last_prepare_at: None,
            created_at: now_ms(),
        })
        .await?;
    send_prepare(&app, &env, &binding, false).await?;
    let binding = reload(&app, &env, binding.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(binding_view(&app, &binding, env.version)),
    ))
}

#[utoipa::path(
    get,
    path = "/environments/{id}/bindings",
    operation_id = "listBindings",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name")),
    responses(
        (status = 200, description = "The environment's bindings", body = BindingList),
        (status = 404, description = "No such environment", body = ErrorBody),
        Errors,
    )
)]
pub async fn bindings(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<BindingList>> {
    let env = load_env(&app, &id).await?;
    let bindings = app
        .store
        .bindings_of_environment(env.id.clone())
        .await?
        .iter()
        .map(|b| binding_view(&app, b, env.version))
        .collect();
    Ok(Json(BindingList { bindings }))
}

/// A binding read back after a change; a 404 when the environment was deleted meanwhile.
async fn reload(app: &App, env: &EnvironmentRecord, id: String) -> ApiResult<BindingRecord> {
    app.store.binding(id.clone()).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "binding {id:?} was removed (environment {} deleted)",
            env.name
        ))
    })
}

async fn load_binding(app: &App, env: &EnvironmentRecord, bid: &str) -> ApiResult<BindingRecord> {
    match app.store.binding(bid.to_string()).await? {
        Some(b) if b.environment_id == env.id => Ok(b),
        _ => Err(ApiError::not_found(format!(
            "no binding {bid:?} in environment {}",
            env.name
        ))),
    }
}

/// Prepares a binding again on its node (setup runs when something changed, or `force`).
#[utoipa::path(
    post,
    path = "/environments/{id}/bindings/{bid}/prepare",
    operation_id = "prepareBinding",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name"), ("bid" = String, Path, description = "Binding id")),
    request_body(content = Option<PrepareRequest>, description = "Optional (no body, or null: `force` false)", content_type = "application/json"),
    responses(
        (status = 202, description = "Sent to the node", body = BindingView),
        (status = 404, description = "No such environment or binding", body = ErrorBody),
        (status = 503, description = "The node is offline", body = ErrorBody),
        Errors,
    )
)]
pub async fn prepare(
    State(app): State<App>,
    Path((id, bid)): Path<(String, String)>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<BindingView>)> {
    let env = load_env(&app, &id).await?;
    let binding = load_binding(&app, &env, &bid).await?;
    // The body is optional (none, or null): `{"force": true}` re-runs setup even when
    // nothing changed.
    let force = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        parse_json::<Option<PrepareRequest>>(&body)?.is_some_and(|r| r.force)
    };
    if !send_prepare(&app, &env, &binding, force).await? {
        return Err(ApiError::unavailable(format!(
            "node {} is offline; the binding prepares when it connects",
            binding.node_id
        )));
    }
    let binding = reload(&app, &env, binding.id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(binding_view(&app, &binding, env.version)),
    ))
}

/// A binding's setup output (redacted on the node).
#[utoipa::path(
    get,
    path = "/environments/{id}/bindings/{bid}/logs",
    operation_id = "bindingLogs",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name"), ("bid" = String, Path, description = "Binding id"), LogQuery),
    responses(
        (status = 200, description = "Lines after `after`", body = LogList),
        (status = 404, description = "No such environment or binding", body = ErrorBody),
        Errors,
    )
)]
pub async fn logs(
    State(app): State<App>,
    Path((id, bid)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<LogList>> {
    let env = load_env(&app, &id).await?;
    let binding = load_binding(&app, &env, &bid).await?;
    let logs = app
        .store
        .binding_logs(binding.id, q.after.unwrap_or(0))
        .await?
        .into_iter()
        .map(|(seq, text)| LogLine { seq, text })
        .collect();
    Ok(Json(LogList { logs }))
}
