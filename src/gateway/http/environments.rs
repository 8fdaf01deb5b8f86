//! `/api/environments[/:id][/validate]`: environments with vars and sealed secrets. Checking
//! and sealing is `envs/`'s; this file turns requests into records and records into views.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;

use super::bindings::binding_view;
use super::openapi::Errors;
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::envs::{self, input};
use crate::gateway::error::{ApiError, ApiResult, Body, Path};
use crate::gateway::App;
use crate::protocol::api::{
    EnvironmentInput, EnvironmentList, EnvironmentView, ErrorBody, SecretView, ValidationResult,
};
use crate::protocol::events::Event;
use crate::store::{EnvironmentRecord, SecretRecord};

/// A stored secret as the API shows it: masked.
pub(super) fn secret_view(s: &SecretRecord) -> SecretView {
    SecretView {
        value: crate::secrets::mask(s.sealed.ciphertext.len()),
        scope: s.scope,
        updated_at: iso8601(s.updated_at),
        file: s.file.clone(),
    }
}

async fn env_view(app: &App, e: &EnvironmentRecord) -> ApiResult<EnvironmentView> {
    let vars = app.store.environment_vars(e.id.clone()).await?;
    let secrets = app
        .store
        .environment_secrets(e.id.clone())
        .await?
        .into_iter()
        .map(|s| (s.key.clone(), secret_view(&s)))
        .collect();
    let bindings = app
        .store
        .bindings_of_environment(e.id.clone())
        .await?
        .iter()
        .map(|b| binding_view(app, b, e.version))
        .collect();
    Ok(EnvironmentView {
        id: e.id.clone(),
        name: e.name.clone(),
        description: e.description.clone(),
        kind: e.kind,
        working_dir: e.working_dir.clone(),
        setup_script: e.setup_script.clone(),
        network_access: e.network_access,
        network_allowlist: crate::gateway::envs::input::allowlist_of(e),
        persist_volume: e.persist_volume,
        metadata: serde_json::from_str(&e.metadata)
            .unwrap_or_else(|_| Value::Object(Default::default())),
        version: e.version,
        vars,
        secrets,
        bindings,
        created_at: iso8601(e.created_at),
        updated_at: iso8601(e.updated_at),
        repo_url: e.repo_url.clone(),
        repo_org: e.repo_org.clone(),
        repo_name: e.repo_name.clone(),
        repo_branch: e.repo_branch.clone(),
        local_path: e.local_path.clone(),
        container_image: e.container_image.clone(),
        default_executor: e.default_executor,
    })
}

pub async fn load_env(app: &App, id: &str) -> ApiResult<EnvironmentRecord> {
    app.store
        .environment(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no environment {id:?}")))
}

fn changed(app: &App, id: &str, deleted: Option<bool>) {
    app.events.publish(Event::EnvironmentChanged {
        environment_id: id.to_string(),
        deleted,
    });
}

fn name_taken(name: &str) -> ApiError {
    ApiError::conflict(format!("an environment named {name:?} already exists"))
}

/// Creates an environment (`type` is required).
#[utoipa::path(
    post,
    path = "/environments",
    operation_id = "createEnvironment",
    tag = "environments",
    request_body = EnvironmentInput,
    responses(
        (status = 201, description = "Created", body = EnvironmentView),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid", body = ErrorBody),
        Errors,
    )
)]
pub async fn create(
    State(app): State<App>,
    Body(mut req): Body<EnvironmentInput>,
) -> ApiResult<(StatusCode, Json<EnvironmentView>)> {
    let Some(kind) = req.kind.as_deref() else {
        return Err(ApiError::validation(
            "type is required (github, git, local, manual)",
        ));
    };
    let kind = input::parse_kind(kind)?;
    let mut env = input::new_record(crypto::new_id("env"), kind, now_ms());
    input::apply(&mut env, &mut req)?;
    let vars = req.vars.take().unwrap_or_default();
    input::check_vars(&vars)?;
    let secrets = envs::seal_secrets(
        &app,
        envs::Owner::Environment(&env.id),
        req.secrets.take().unwrap_or_default(),
    )?;
    if !app
        .store
        .insert_environment(env.clone(), vars, secrets)
        .await?
    {
        return Err(name_taken(&env.name));
    }
    tracing::info!(environment = %env.id, name = %env.name, "environment created");
    changed(&app, &env.id, None);
    Ok((StatusCode::CREATED, Json(env_view(&app, &env).await?)))
}

#[utoipa::path(
    get,
    path = "/environments",
    operation_id = "listEnvironments",
    tag = "environments",
    responses((status = 200, description = "Environments", body = EnvironmentList), Errors)
)]
pub async fn list(State(app): State<App>) -> ApiResult<Json<EnvironmentList>> {
    let mut environments = Vec::new();
    for e in app.store.list_environments().await? {
        environments.push(env_view(&app, &e).await?);
    }
    Ok(Json(EnvironmentList { environments }))
}

#[utoipa::path(
    get,
    path = "/environments/{id}",
    operation_id = "getEnvironment",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name")),
    responses(
        (status = 200, description = "The environment", body = EnvironmentView),
        (status = 404, description = "No such environment", body = ErrorBody),
        Errors,
    )
)]
pub async fn get(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<EnvironmentView>> {
    let e = load_env(&app, &id).await?;
    Ok(Json(env_view(&app, &e).await?))
}

/// Changes an environment; absent fields keep their value.
#[utoipa::path(
    put,
    path = "/environments/{id}",
    operation_id = "updateEnvironment",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name")),
    request_body = EnvironmentInput,
    responses(
        (status = 200, description = "Updated", body = EnvironmentView),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
        Errors,
    )
)]
pub async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(mut req): Body<EnvironmentInput>,
) -> ApiResult<Json<EnvironmentView>> {
    let mut env = load_env(&app, &id).await?;
    input::apply(&mut env, &mut req)?;
    env.updated_at = now_ms();
    let vars = req.vars.take();
    if let Some(v) = &vars {
        input::check_vars(v)?;
    }
    let secrets = envs::seal_secrets(
        &app,
        envs::Owner::Environment(&env.id),
        req.secrets.take().unwrap_or_default(),
    )?;
    if !app
        .store
        .update_environment(env.clone(), vars, secrets)
        .await?
    {
        return Err(name_taken(&env.name));
    }
    let env = load_env(&app, &env.id).await?;
    changed(&app, &env.id, None);
    Ok(Json(env_view(&app, &env).await?))
}

/// Deletes an environment, its bindings and threads.
#[utoipa::path(
    delete,
    path = "/environments/{id}",
    operation_id = "deleteEnvironment",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 409, description = "It has running threads", body = ErrorBody),
        Errors,
    )
)]
pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let env = load_env(&app, &id).await?;
    let busy = app.store.busy_threads(env.id.clone()).await?;
    if !busy.is_empty() {
        return Err(ApiError::conflict(format!(
            "environment {} has running threads ({}); stop them first",
            env.name,
            busy.join(", ")
        )));
    }
    // Its threads' worktrees go with it (a node offline now removes them when its
    // heartbeat lists them).
    for wt in app.store.worktrees_of_environment(env.id.clone()).await? {
        crate::gateway::worktrees::remove(&app, &wt, false).await;
    }
    app.store.delete_environment(env.id.clone()).await?;
    changed(&app, &env.id, Some(true));
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/environments/:id/validate`: setup script syntax and repository reachability,
/// checked by a node.
#[utoipa::path(
    post,
    path = "/environments/{id}/validate",
    operation_id = "validateEnvironment",
    tag = "environments",
    params(("id" = String, Path, description = "Environment id or name")),
    responses(
        (status = 200, description = "The checks", body = ValidationResult),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 503, description = "No online node to check it", body = ErrorBody),
        Errors,
    )
)]
pub async fn validate(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<ValidationResult>> {
    let env = load_env(&app, &id).await?;
    Ok(Json(envs::validate(&app, &env).await?))
}
