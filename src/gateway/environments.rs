//! `/api/environments*` and node config: environments with vars and sealed secrets,
//! validation, bindings to nodes and their preparation.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Body};
use super::registry::Outgoing;
use super::App;
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::node::environments::{absolute_clean, relative_inside};
use crate::protocol::{
    BindingState, BindingStatus, BindingStrategy, EnvKind, EnvironmentSource, Frame,
    PrepareEnvironment, SecretScope, SecretValue,
};
use crate::secrets::redact::MIN_SECRET_LEN;
use crate::store::{
    BindingRecord, BindingUpdate, EnvironmentRecord, SecretChange, TaskFinish, TaskState,
};

const MAX_SCRIPT_BYTES: usize = 64 * 1024;
const MAX_VALUE_BYTES: usize = 32 * 1024;

/// A secret in a request: a bare value (runtime scope), `{value, scope}`, or null to remove.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum SecretInput {
    Value(String),
    Scoped {
        value: String,
        #[serde(default)]
        scope: Option<SecretScope>,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvInput {
    name: Option<String>,
    description: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    repo_url: Option<String>,
    repo_org: Option<String>,
    repo_name: Option<String>,
    repo_branch: Option<String>,
    local_path: Option<String>,
    container_image: Option<String>,
    working_dir: Option<String>,
    setup_script: Option<String>,
    network_access: Option<bool>,
    persist_volume: Option<bool>,
    default_executor: Option<String>,
    metadata: Option<Value>,
    vars: Option<BTreeMap<String, String>>,
    secrets: Option<BTreeMap<String, Option<SecretInput>>>,
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && k.len() <= 128
}

fn opt_trim(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Applies `input` over `env` (a new one or the stored one) and checks the result.
fn apply(env: &mut EnvironmentRecord, input: &mut EnvInput) -> ApiResult<()> {
    if let Some(n) = input.name.take() {
        env.name = n.trim().to_string();
    }
    if env.name.is_empty() || env.name.len() > 64 {
        return Err(ApiError::validation("name must be 1 to 64 characters"));
    }
    if !env
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " -_.".contains(c))
    {
        return Err(ApiError::validation(
            "name may contain letters, digits, spaces, '-', '_' and '.'",
        ));
    }
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = input.$field.take() {
                env.$field = opt_trim(Some(v));
            }
        };
    }
    if let Some(d) = input.description.take() {
        env.description = d;
    }
    if let Some(k) = input.kind.take() {
        env.kind = k;
    }
    set!(repo_url);
    set!(repo_org);
    set!(repo_name);
    set!(repo_branch);
    set!(local_path);
    set!(container_image);
    set!(default_executor);
    if let Some(w) = input.working_dir.take() {
        env.working_dir = w.trim().to_string();
    }
    if let Some(s) = input.setup_script.take() {
        env.setup_script = s;
    }
    if let Some(b) = input.network_access.take() {
        env.network_access = b;
    }
    if let Some(b) = input.persist_volume.take() {
        env.persist_volume = b;
    }
    if let Some(m) = input.metadata.take() {
        let Value::Object(changes) = m else {
            return Err(ApiError::validation("metadata must be an object"));
        };
        // Merged key by key like the other fields; a null removes a key.
        let mut merged = match serde_json::from_str::<Value>(&env.metadata) {
            Ok(Value::Object(old)) => old,
            _ => serde_json::Map::new(),
        };
        for (k, v) in changes {
            if v.is_null() {
                merged.remove(&k);
            } else {
                merged.insert(k, v);
            }
        }
        if let Some(mode) = merged.get("workingMode") {
            if serde_json::from_value::<crate::protocol::WorkingMode>(mode.clone()).is_err() {
                return Err(ApiError::validation(
                    "metadata.workingMode must be always-ask, agent-decides or always-execute",
                ));
            }
        }
        env.metadata = Value::Object(merged).to_string();
    }

    let kind: EnvKind = serde_json::from_value(json!(env.kind)).map_err(|_| {
        ApiError::validation(format!(
            "unknown type {:?} (github, git, local, manual)",
            env.kind
        ))
    })?;
    match kind {
        EnvKind::Github => match (&env.repo_url, &env.repo_org, &env.repo_name) {
            (Some(url), _, _) => {
                let (org, name) = parse_github(url).ok_or_else(|| {
                    ApiError::validation("repoUrl must look like https://github.com/ORG/NAME")
                })?;
                env.repo_org = Some(org);
                env.repo_name = Some(name);
            }
            (None, Some(org), Some(name)) => {
                env.repo_url = Some(format!("https://github.com/{org}/{name}.git"));
            }
            _ => {
                return Err(ApiError::validation(
                    "a github environment needs repoUrl, or repoOrg and repoName",
                ))
            }
        },
        EnvKind::Git => {
            let url = env
                .repo_url
                .as_deref()
                .ok_or_else(|| ApiError::validation("a git environment needs repoUrl"))?;
            if !(url.contains("://") || url.contains('@') || url.starts_with('/')) {
                return Err(ApiError::validation(
                    "repoUrl must be a git URL (https://, ssh://, git://, file://)",
                ));
            }
        }
        EnvKind::Local => {
            let p = env
                .local_path
                .as_deref()
                .ok_or_else(|| ApiError::validation("a local environment needs localPath"))?;
            absolute_clean(p).map_err(|e| ApiError::validation(format!("localPath {e}")))?;
        }
        EnvKind::Manual => {}
    }
    relative_inside(&env.working_dir)
        .map_err(|e| ApiError::validation(format!("workingDir {e}")))?;
    if env.setup_script.len() > MAX_SCRIPT_BYTES {
        return Err(ApiError::too_large(format!(
            "setupScript is over {MAX_SCRIPT_BYTES} bytes"
        )));
    }
    if let Some(e) = &env.default_executor {
        if crate::node::executor::by_name(e).is_none() {
            return Err(ApiError::validation(format!(
                "unknown defaultExecutor {e:?}"
            )));
        }
    }
    Ok(())
}

fn parse_github(url: &str) -> Option<(String, String)> {
    let rest = url
        .trim_end_matches('/')
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("git@github.com:"))?;
    let mut parts = rest.trim_end_matches(".git").split('/');
    let (org, name) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && !org.is_empty() && !name.is_empty())
        .then(|| (org.to_string(), name.to_string()))
}

fn check_vars(vars: &BTreeMap<String, String>) -> ApiResult<()> {
    for (k, v) in vars {
        if !valid_key(k) {
            return Err(ApiError::validation(format!(
                "variable name {k:?} must match [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        if v.len() > MAX_VALUE_BYTES {
            return Err(ApiError::too_large(format!(
                "variable {k} is over {MAX_VALUE_BYTES} bytes"
            )));
        }
    }
    Ok(())
}

/// Seals the secrets of a request; returns the changes and warnings for short values.
fn seal_secrets(
    app: &App,
    env_id: &str,
    input: BTreeMap<String, Option<SecretInput>>,
) -> ApiResult<(BTreeMap<String, SecretChange>, Vec<String>)> {
    let mut changes = BTreeMap::new();
    let mut warnings = Vec::new();
    for (k, v) in input {
        if !valid_key(&k) {
            return Err(ApiError::validation(format!(
                "secret name {k:?} must match [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        let (value, scope) = match v {
            None => {
                changes.insert(k, SecretChange::Remove);
                continue;
            }
            Some(SecretInput::Value(v)) => (v, SecretScope::Runtime),
            Some(SecretInput::Scoped { value, scope }) => {
                (value, scope.unwrap_or(SecretScope::Runtime))
            }
        };
        if value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::too_large(format!(
                "secret {k} is over {MAX_VALUE_BYTES} bytes"
            )));
        }
        if value.len() < MIN_SECRET_LEN {
            warnings.push(format!(
                "secret {k} is shorter than {MIN_SECRET_LEN} characters and cannot be redacted from output"
            ));
        }
        let sealed = app.keyring.seal(value.as_bytes(), &secret_aad(env_id, &k));
        let scope = if scope == SecretScope::Setup {
            "setup"
        } else {
            "runtime"
        };
        changes.insert(
            k,
            SecretChange::Set {
                scope: scope.into(),
                sealed,
            },
        );
    }
    Ok((changes, warnings))
}

fn secret_aad(env_id: &str, key: &str) -> String {
    format!("env:{env_id}:{key}")
}

/// The plaintext secrets of an environment, for a frame to a node.
pub async fn unseal_secrets(
    app: &App,
    env_id: &str,
    runtime_only: bool,
) -> anyhow::Result<Vec<SecretValue>> {
    let mut out = Vec::new();
    for s in app.store.environment_secrets(env_id.to_string()).await? {
        let scope = if s.scope == "setup" {
            SecretScope::Setup
        } else {
            SecretScope::Runtime
        };
        if runtime_only && scope == SecretScope::Setup {
            continue;
        }
        let plain = app.keyring.open(&s.sealed, &secret_aad(env_id, &s.key))?;
        out.push(SecretValue {
            name: s.key,
            value: String::from_utf8_lossy(&plain).into_owned(),
            scope,
        });
    }
    Ok(out)
}

/// A binding's status as shown: `stale` when its environment changed after the last prepare.
pub fn binding_status(b: &BindingRecord, env_version: i64) -> &str {
    if b.status == "ready" && b.prepared_version.is_some_and(|v| v < env_version) {
        "stale"
    } else {
        &b.status
    }
}

pub fn binding_json(app: &App, b: &BindingRecord, env_version: i64) -> Value {
    let mut v = json!({
        "id": b.id,
        "environmentId": b.environment_id,
        "nodeId": b.node_id,
        "nodeOnline": app.registry.presence(&b.node_id).is_some(),
        "strategy": b.strategy,
        "status": binding_status(b, env_version),
        "createdAt": iso8601(b.created_at),
    });
    let opt = |v: &mut Value, k: &str, x: &Option<String>| {
        if let Some(x) = x {
            v[k] = json!(x);
        }
    };
    opt(&mut v, "path", &b.path);
    opt(&mut v, "resolvedWorkingDir", &b.resolved_working_dir);
    opt(&mut v, "step", &b.step);
    opt(&mut v, "lastError", &b.last_error);
    opt(&mut v, "commit", &b.commit_sha);
    if let Some(p) = b.prepared_version {
        v["preparedVersion"] = json!(p);
    }
    if let Some(t) = b.last_prepare_at {
        v["lastPrepareAt"] = json!(iso8601(t));
    }
    v
}

async fn env_json(app: &App, e: &EnvironmentRecord, warnings: Vec<String>) -> ApiResult<Value> {
    let vars = app.store.environment_vars(e.id.clone()).await?;
    let secrets: serde_json::Map<String, Value> = app
        .store
        .environment_secrets(e.id.clone())
        .await?
        .into_iter()
        .map(|s| {
            (
                s.key,
                json!({"value": crate::secrets::mask(s.sealed.ciphertext.len()), "scope": s.scope, "updatedAt": iso8601(s.updated_at)}),
            )
        })
        .collect();
    let bindings: Vec<Value> = app
        .store
        .bindings_of_environment(e.id.clone())
        .await?
        .iter()
        .map(|b| binding_json(app, b, e.version))
        .collect();
    let mut v = json!({
        "id": e.id,
        "name": e.name,
        "description": e.description,
        "type": e.kind,
        "workingDir": e.working_dir,
        "setupScript": e.setup_script,
        "networkAccess": e.network_access,
        "persistVolume": e.persist_volume,
        "metadata": serde_json::from_str::<Value>(&e.metadata).unwrap_or(json!({})),
        "version": e.version,
        "vars": vars,
        "secrets": secrets,
        "bindings": bindings,
        "createdAt": iso8601(e.created_at),
        "updatedAt": iso8601(e.updated_at),
    });
    for (k, x) in [
        ("repoUrl", &e.repo_url),
        ("repoOrg", &e.repo_org),
        ("repoName", &e.repo_name),
        ("repoBranch", &e.repo_branch),
        ("localPath", &e.local_path),
        ("containerImage", &e.container_image),
        ("defaultExecutor", &e.default_executor),
    ] {
        if let Some(x) = x {
            v[k] = json!(x);
        }
    }
    if !warnings.is_empty() {
        v["warnings"] = json!(warnings);
    }
    Ok(v)
}

pub async fn load_env(app: &App, id: &str) -> ApiResult<EnvironmentRecord> {
    app.store
        .environment(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no environment {id:?}")))
}

pub async fn create(
    State(app): State<App>,
    Body(mut input): Body<EnvInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let now = now_ms();
    let mut env = EnvironmentRecord {
        id: crypto::new_id("env"),
        kind: String::new(),
        metadata: "{}".into(),
        network_access: true,
        version: 1,
        created_at: now,
        updated_at: now,
        ..Default::default()
    };
    if input.kind.is_none() {
        return Err(ApiError::validation(
            "type is required (github, git, local, manual)",
        ));
    }
    apply(&mut env, &mut input)?;
    let vars = input.vars.take().unwrap_or_default();
    check_vars(&vars)?;
    let (secrets, warnings) =
        seal_secrets(&app, &env.id, input.secrets.take().unwrap_or_default())?;
    if !app
        .store
        .insert_environment(env.clone(), vars, secrets)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "an environment named {:?} already exists",
            env.name
        )));
    }
    tracing::info!(environment = %env.id, name = %env.name, "environment created");
    app.events
        .publish("environment.changed", json!({"environmentId": env.id}));
    Ok((
        StatusCode::CREATED,
        Json(env_json(&app, &env, warnings).await?),
    ))
}

pub async fn list(State(app): State<App>) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for e in app.store.list_environments().await? {
        out.push(env_json(&app, &e, vec![]).await?);
    }
    Ok(Json(json!({ "environments": out })))
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let e = load_env(&app, &id).await?;
    Ok(Json(env_json(&app, &e, vec![]).await?))
}

pub async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(mut input): Body<EnvInput>,
) -> ApiResult<Json<Value>> {
    let mut env = load_env(&app, &id).await?;
    apply(&mut env, &mut input)?;
    env.updated_at = now_ms();
    let vars = input.vars.take();
    if let Some(v) = &vars {
        check_vars(v)?;
    }
    let (secrets, warnings) =
        seal_secrets(&app, &env.id, input.secrets.take().unwrap_or_default())?;
    if !app
        .store
        .update_environment(env.clone(), vars, secrets)
        .await?
    {
        return Err(ApiError::conflict(format!(
            "an environment named {:?} already exists",
            env.name
        )));
    }
    let env = load_env(&app, &env.id).await?;
    app.events
        .publish("environment.changed", json!({"environmentId": env.id}));
    Ok(Json(env_json(&app, &env, warnings).await?))
}

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
    app.store.delete_environment(env.id.clone()).await?;
    app.events.publish(
        "environment.changed",
        json!({"environmentId": env.id, "deleted": true}),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/environments/:id/validate`: setup script syntax and repository reachability.
pub async fn validate(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let env = load_env(&app, &id).await?;
    let mut checks = Vec::new();
    match crate::node::executor::bash_syntax(&env.setup_script).await {
        Ok(()) => checks.push(json!({"name": "setupScript", "ok": true, "message": "syntax ok"})),
        Err(e) => {
            let mut c = json!({"name": "setupScript", "ok": false, "message": e.message});
            if let Some(l) = e.line {
                c["line"] = json!(l);
                c["message"] = json!(format!("line {l}: {}", e.message));
            }
            checks.push(c);
        }
    }
    if let Some(url) = env
        .repo_url
        .clone()
        .filter(|_| env.kind == "git" || env.kind == "github")
    {
        let branch = env.repo_branch.clone();
        let result = tokio::task::spawn_blocking(move || {
            crate::node::git::remote_has_branch(&url, branch.as_deref(), Duration::from_secs(20))
        })
        .await
        .map_err(anyhow::Error::from)?;
        checks.push(match result {
            Ok(()) => {
                json!({"name": "repository", "ok": true, "message": "reachable; branch present"})
            }
            Err(e) => json!({"name": "repository", "ok": false, "message": format!("{e:#}")}),
        });
    }
    let ok = checks.iter().all(|c| c["ok"] == true);
    Ok(Json(json!({ "ok": ok, "checks": checks })))
}

// ---- bindings ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BindInput {
    node_id: String,
    #[serde(default)]
    strategy: Option<BindingStrategy>,
    #[serde(default)]
    path: Option<String>,
}

pub async fn bind(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(input): Body<BindInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let env = load_env(&app, &id).await?;
    match app.store.node(input.node_id.clone()).await? {
        Some(n) if n.revoked_at.is_none() => {}
        _ => {
            return Err(ApiError::validation(format!(
                "unknown nodeId {:?}",
                input.node_id
            )))
        }
    }
    let strategy = input.strategy.unwrap_or(BindingStrategy::Auto);
    let path = match strategy {
        BindingStrategy::ExistingPath => {
            let p = input
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
            node_id: input.node_id.clone(),
            strategy: if strategy == BindingStrategy::Auto {
                "auto"
            } else {
                "existing-path"
            }
            .into(),
            path,
            resolved_working_dir: None,
            status: "pending".into(),
            step: None,
            last_error: None,
            commit_sha: None,
            prepared_version: None,
            last_prepare_at: None,
            created_at: now_ms(),
        })
        .await?;
    send_prepare(&app, &env, &binding, false).await?;
    let binding = app.store.binding(binding.id).await?.expect("just written");
    Ok((
        StatusCode::CREATED,
        Json(binding_json(&app, &binding, env.version)),
    ))
}

pub async fn bindings(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let env = load_env(&app, &id).await?;
    let list: Vec<Value> = app
        .store
        .bindings_of_environment(env.id.clone())
        .await?
        .iter()
        .map(|b| binding_json(&app, b, env.version))
        .collect();
    Ok(Json(json!({ "bindings": list })))
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PrepareInput {
    #[serde(default)]
    force: bool,
}

pub async fn prepare(
    State(app): State<App>,
    Path((id, bid)): Path<(String, String)>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let env = load_env(&app, &id).await?;
    let binding = load_binding(&app, &env, &bid).await?;
    // The body is optional: `{"force": true}` re-runs setup even when nothing changed.
    let force = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        super::error::parse_json::<PrepareInput>(&body)?.force
    };
    if !send_prepare(&app, &env, &binding, force).await? {
        return Err(ApiError::unavailable(format!(
            "node {} is offline; the binding prepares when it connects",
            binding.node_id
        )));
    }
    let binding = app.store.binding(binding.id).await?.expect("exists");
    Ok((
        StatusCode::ACCEPTED,
        Json(binding_json(&app, &binding, env.version)),
    ))
}

#[derive(Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    after: Option<i64>,
}

pub async fn logs(
    State(app): State<App>,
    Path((id, bid)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Value>> {
    let env = load_env(&app, &id).await?;
    let binding = load_binding(&app, &env, &bid).await?;
    let lines: Vec<Value> = app
        .store
        .binding_logs(binding.id, q.after.unwrap_or(0))
        .await?
        .into_iter()
        .map(|(seq, text)| json!({"seq": seq, "text": text}))
        .collect();
    Ok(Json(json!({ "logs": lines })))
}

/// Builds and sends `environment:prepare` when the node is online (marking the binding
/// `preparing`); returns false when it is offline (the binding stays pending and prepares on
/// connect).
pub async fn send_prepare(
    app: &App,
    env: &EnvironmentRecord,
    b: &BindingRecord,
    force: bool,
) -> anyhow::Result<bool> {
    let Some(tx) = app.registry.sender(&b.node_id) else {
        return Ok(false);
    };
    let vars = app.store.environment_vars(env.id.clone()).await?;
    let secrets = unseal_secrets(app, &env.id, false).await?;
    let kind: EnvKind = serde_json::from_value(json!(env.kind))?;
    let frame = Frame::EnvironmentPrepare(PrepareEnvironment {
        binding_id: b.id.clone(),
        environment_id: env.id.clone(),
        name: env.name.clone(),
        version: env.version,
        source: EnvironmentSource {
            kind,
            url: env.repo_url.clone(),
            branch: env.repo_branch.clone(),
            path: env.local_path.clone(),
        },
        strategy: if b.strategy == "existing-path" {
            BindingStrategy::ExistingPath
        } else {
            BindingStrategy::Auto
        },
        path: b.path.clone(),
        working_dir: env.working_dir.clone(),
        setup_script: env.setup_script.clone(),
        vars,
        secrets,
        force,
    });
    app.store
        .update_binding(
            b.id.clone(),
            BindingUpdate {
                status: "preparing".into(),
                step: Some("queued".into()),
                error: None,
                working_dir: None,
                commit: None,
                prepared_version: None,
                at: now_ms(),
            },
        )
        .await?;
    app.events.publish(
        "binding.status",
        json!({"bindingId": b.id, "environmentId": env.id, "nodeId": b.node_id, "status": "preparing"}),
    );
    let _ = tx.send(Outgoing::Frame(frame)).await;
    Ok(true)
}

/// Applies a binding state reported by `node_id`; dispatches or fails the tasks waiting on it.
pub async fn apply_state(
    app: &App,
    node_id: &str,
    s: BindingState,
) -> anyhow::Result<Option<Frame>> {
    let Some(b) = app.store.binding(s.binding_id.clone()).await? else {
        return Ok(Some(Frame::error(
            crate::protocol::ErrorCode::InvalidFrame,
            format!("no binding {}", s.binding_id),
        )));
    };
    if b.node_id != node_id {
        tracing::warn!(node = %node_id, binding = %b.id, "refused a binding state from a node that does not own it");
        return Ok(Some(Frame::error(
            crate::protocol::ErrorCode::NotOwner,
            format!("binding {} does not belong to this node", b.id),
        )));
    }
    app.store
        .update_binding(
            b.id.clone(),
            BindingUpdate {
                status: s.status.as_str().into(),
                step: s.step.clone(),
                error: s
                    .message
                    .clone()
                    .filter(|_| s.status == BindingStatus::Error),
                working_dir: s.working_dir.clone(),
                commit: s.commit.clone(),
                prepared_version: (s.status == BindingStatus::Ready).then_some(s.version),
                at: now_ms(),
            },
        )
        .await?;
    let mut ev = json!({"bindingId": b.id, "environmentId": b.environment_id, "nodeId": node_id, "status": s.status});
    if let Some(step) = &s.step {
        ev["step"] = json!(step);
    }
    if let Some(m) = &s.message {
        ev["message"] = json!(m);
    }
    app.events.publish("binding.status", ev);
    match s.status {
        BindingStatus::Ready => super::threads::dispatch_waiting(app, &b.id).await?,
        BindingStatus::Error => {
            let why = format!(
                "environment prepare failed at step {}: {}",
                s.step.as_deref().unwrap_or("?"),
                s.message.as_deref().unwrap_or("")
            );
            for task in app.store.pending_tasks_of_binding(b.id.clone()).await? {
                app.tasks
                    .end_without_node(
                        &app.store,
                        &task,
                        TaskFinish::without_node(TaskState::Error, why.clone()),
                    )
                    .await?;
            }
        }
        _ => {}
    }
    Ok(None)
}

/// When a node connects: prepare its bindings that never were.
pub async fn on_node_connected(app: &App, node_id: &str) -> anyhow::Result<()> {
    for b in app.store.bindings_of_node(node_id.to_string()).await? {
        if b.status == "pending" || (b.status == "preparing" && b.step.as_deref() == Some("queued"))
        {
            if let Some(env) = app.store.environment(b.environment_id.clone()).await? {
                send_prepare(app, &env, &b, false).await?;
            }
        }
    }
    Ok(())
}

// ---- node config ----

/// `GET /api/vibers/:id/config`, authenticated with that node's token.
pub async fn node_config(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
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
    let mut envs = Vec::new();
    let mut bindings = Vec::new();
    for b in app.store.bindings_of_node(id.clone()).await? {
        let Some(e) = app.store.environment(b.environment_id.clone()).await? else {
            continue;
        };
        let secrets: Vec<Value> = app
            .store
            .environment_secrets(e.id.clone())
            .await?
            .into_iter()
            .map(|s| json!({"name": s.key, "scope": s.scope, "set": !s.sealed.ciphertext.is_empty()}))
            .collect();
        let vars: Vec<String> = app
            .store
            .environment_vars(e.id.clone())
            .await?
            .into_keys()
            .collect();
        // Only what configures the node: status and timestamps would change the version
        // without any change to act on.
        bindings.push(json!({
            "id": b.id, "environmentId": b.environment_id, "strategy": b.strategy,
            "path": b.path, "environmentVersion": e.version,
        }));
        envs.push(json!({
            "id": e.id, "name": e.name, "type": e.kind, "version": e.version,
            "repoUrl": e.repo_url, "repoBranch": e.repo_branch, "workingDir": e.working_dir,
            "setupScript": e.setup_script, "vars": vars, "secrets": secrets,
        }));
    }
    let body = json!({ "environments": envs, "bindings": bindings });
    let version = crypto::sha256_hex(body.to_string().as_bytes())[..16].to_string();
    let mut out = body;
    out["version"] = json!(version);
    out["nodeId"] = json!(id);
    Ok(Json(out))
}

/// `POST /api/vibers/:id/config-push`: asks the node to pull and validate its config.
pub async fn config_push(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    match app.store.node(id.clone()).await? {
        Some(n) if n.revoked_at.is_none() => {}
        _ => return Err(ApiError::not_found(format!("no node {id:?}"))),
    }
    let tx = app
        .registry
        .sender(&id)
        .ok_or_else(|| ApiError::unavailable(format!("node {id} is offline")))?;
    let _ = tx.send(Outgoing::Frame(Frame::ConfigPush {})).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"nodeId": id, "pushed": true})),
    ))
}
