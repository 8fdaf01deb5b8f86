//! `/api/threads*`: work streams inside an environment. A thread's first message prepares
//! the environment on a node when needed, then runs a task in its working directory; later
//! messages feed the running task (injection modes) or start the next one.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::environments::{binding_status, load_env, send_prepare};
use super::error::{ApiError, ApiResult, Body};
use super::registry::Outgoing;
use super::task_api::{check_text, idempotent};
use super::tasks::{submit_frame, task_json};
use super::App;
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::protocol::{Frame, InjectionMode, TaskOptions};
use crate::store::{BindingRecord, NewTask, TaskState, ThreadRecord};

const STATUSES: &[&str] = &["active", "paused", "archived"];
/// Output shown per task in a thread's history.
const OUTPUT_LIMIT: usize = 64 * 1024;

fn thread_json(t: &ThreadRecord) -> Value {
    let mut v = json!({
        "id": t.id,
        "environmentId": t.environment_id,
        "title": t.title,
        "status": t.status,
        "createdAt": iso8601(t.created_at),
        "updatedAt": iso8601(t.updated_at),
    });
    if let Some(n) = &t.active_node_id {
        v["activeNodeId"] = json!(n);
    }
    if let Some(m) = t.last_message_at {
        v["lastMessageAt"] = json!(iso8601(m));
    }
    if let Some((task, state)) = &t.last_task {
        v["lastTaskId"] = json!(task);
        v["lastTaskState"] = json!(state);
    }
    v
}

/// The title of a thread created without one, until its first message names it.
const DEFAULT_TITLE: &str = "New thread";

/// A thread title from its first message: the first line, cut at a word near 60 characters.
fn title_from(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() <= 60 {
        return line.to_string();
    }
    let cut: String = line.chars().take(60).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > 30 => &cut[..i],
        _ => &cut,
    };
    format!("{}…", cut.trim_end())
}

async fn load(app: &App, id: &str) -> ApiResult<ThreadRecord> {
    app.store
        .thread(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no thread {id:?}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateThread {
    environment_id: String,
    #[serde(default)]
    title: Option<String>,
}

pub async fn create(
    State(app): State<App>,
    Body(req): Body<CreateThread>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let env = app
        .store
        .environment(req.environment_id.clone())
        .await?
        .ok_or_else(|| {
            ApiError::validation(format!("unknown environmentId {:?}", req.environment_id))
        })?;
    let now = now_ms();
    let title = req
        .title
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_TITLE.into());
    if title.len() > 200 {
        return Err(ApiError::validation("title must be at most 200 characters"));
    }
    let t = ThreadRecord {
        id: crypto::new_id("thr"),
        environment_id: env.id,
        title,
        active_node_id: None,
        status: "active".into(),
        last_message_at: None,
        created_at: now,
        updated_at: now,
        last_task: None,
    };
    app.store.insert_thread(t.clone()).await?;
    app.events
        .publish("thread.changed", json!({"threadId": t.id}));
    Ok((StatusCode::CREATED, Json(thread_json(&t))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    #[serde(default)]
    environment_id: Option<String>,
}

pub async fn list(State(app): State<App>, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let env_id = match q.environment_id {
        Some(e) => Some(load_env(&app, &e).await?.id),
        None => None,
    };
    let threads: Vec<Value> = app
        .store
        .list_threads(env_id)
        .await?
        .iter()
        .map(thread_json)
        .collect();
    Ok(Json(json!({ "threads": threads })))
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let t = load(&app, &id).await?;
    Ok(Json(thread_json(&t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchThread {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

pub async fn patch(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<PatchThread>,
) -> ApiResult<Json<Value>> {
    let mut t = load(&app, &id).await?;
    if let Some(title) = req.title {
        let title = title.trim().to_string();
        if title.is_empty() || title.len() > 200 {
            return Err(ApiError::validation("title must be 1 to 200 characters"));
        }
        t.title = title;
    }
    if let Some(s) = req.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::validation(format!(
                "unknown status {s:?} (active, paused, archived)"
            )));
        }
        t.status = s;
    }
    t.updated_at = now_ms();
    app.store.update_thread(t.clone()).await?;
    app.events
        .publish("thread.changed", json!({"threadId": t.id}));
    Ok(Json(thread_json(&t)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SendMessage {
    message: String,
    #[serde(default)]
    injection_mode: Option<String>,
    #[serde(default)]
    executor: Option<String>,
}

pub async fn send(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(req): Body<SendMessage>,
) -> ApiResult<Response> {
    let scope = format!("POST /api/threads/{id}/messages");
    idempotent(&app, &headers, scope, || send_message(&app, id, req)).await
}

async fn send_message(app: &App, id: String, req: SendMessage) -> ApiResult<(StatusCode, Value)> {
    let mut thread = load(app, &id).await?;
    if thread.status == "archived" {
        return Err(ApiError::conflict(
            "thread is archived; set it active to continue",
        ));
    }
    check_text("message", &req.message)?;
    let mode: Option<InjectionMode> = match req.injection_mode.as_deref() {
        None => None,
        Some(m) => Some(m.parse().map_err(ApiError::validation)?),
    };
    let env = load_env(app, &thread.environment_id).await?;
    let now = now_ms();

    // A running task of this thread takes the message as a follow-up.
    let history = app.store.thread_messages(id.clone()).await?;
    if let Some(last) = history.last() {
        if let Some(task) = app.store.task(last.task_id.clone()).await? {
            if task.state == TaskState::Running {
                let node = task.node_id.clone().unwrap_or_default();
                let tx = app.registry.sender(&node).ok_or_else(|| {
                    ApiError::unavailable(format!("the thread's node {node} is offline"))
                })?;
                let mode = mode.unwrap_or_default();
                let _ = tx
                    .send(Outgoing::Frame(Frame::TaskMessage {
                        task_id: task.id.clone(),
                        message: req.message.clone(),
                        injection_mode: mode,
                    }))
                    .await;
                app.store
                    .insert_task_message(
                        task.id.clone(),
                        req.message.clone(),
                        json!(mode).as_str().unwrap_or("").into(),
                        now,
                    )
                    .await?;
                app.store
                    .insert_thread_message(
                        id.clone(),
                        req.message,
                        task.id.clone(),
                        json!(mode).as_str().map(str::to_string),
                        now,
                    )
                    .await?;
                return Ok((
                    StatusCode::ACCEPTED,
                    json!({"threadId": id, "taskId": task.id, "followUp": true}),
                ));
            }
            if task.state == TaskState::Pending {
                return Err(ApiError::conflict(
                    "the previous message is still waiting for its environment to be ready",
                ));
            }
        }
    }

    // Otherwise a new task on the thread's binding.
    let binding = pick_binding(app, &env.id, thread.active_node_id.as_deref()).await?;
    let vars = app.store.environment_vars(env.id.clone()).await?;
    // The message's executor, else the environment's, else the agent when the node offers one.
    let node_has_llm = app
        .registry
        .presence(&binding.node_id)
        .is_some_and(|p| p.info.capabilities.iter().any(|c| c == "llm"));
    let executor = req
        .executor
        .or(env.default_executor.clone())
        .unwrap_or_else(|| if node_has_llm { "llm" } else { "shell" }.into());
    if crate::node::executor::by_name(&executor).is_none() {
        return Err(ApiError::validation(format!(
            "unknown executor {executor:?}"
        )));
    }
    let ready =
        binding_status(&binding, env.version) == "ready" && binding.resolved_working_dir.is_some();
    // The environment may set the agent's working mode (metadata.workingMode).
    let working_mode = serde_json::from_str::<Value>(&env.metadata)
        .ok()
        .and_then(|m| serde_json::from_value(m["workingMode"].clone()).ok());
    let options = TaskOptions {
        cwd: binding.resolved_working_dir.clone(),
        env: vars,
        working_mode,
        ..TaskOptions::default()
    };
    let task = NewTask {
        id: crypto::new_id("task"),
        node_id: binding.node_id.clone(),
        goal: req.message.clone(),
        executor,
        options: serde_json::to_string(&options).map_err(anyhow::Error::from)?,
        created_at: now,
        environment_id: Some(env.id.clone()),
        thread_id: Some(id.clone()),
        binding_id: Some(binding.id.clone()),
    };
    let task_id = task.id.clone();
    app.store.insert_task(task).await?;
    if history.is_empty() && thread.title == DEFAULT_TITLE {
        thread.title = title_from(&req.message);
    }
    app.store
        .insert_thread_message(id.clone(), req.message, task_id.clone(), None, now)
        .await?;
    thread.active_node_id = Some(binding.node_id.clone());
    thread.last_message_at = Some(now);
    thread.updated_at = now;
    app.store.update_thread(thread).await?;
    app.events
        .publish("thread.changed", json!({"threadId": id}));
    let rec = app
        .store
        .task(task_id.clone())
        .await?
        .expect("just inserted");
    app.tasks.created(&rec);
    if ready {
        dispatch(app, &rec).await?;
    } else if binding.status != "preparing" {
        // Not ready, stale or failed: prepare now; the task starts when the binding is ready.
        send_prepare(app, &env, &binding, false).await?;
    }
    let mut v = task_json(&rec);
    v["threadId"] = json!(id);
    v["taskId"] = json!(task_id);
    v["bindingId"] = json!(binding.id);
    Ok((StatusCode::CREATED, v))
}

/// The binding a thread's new task runs on: the thread's node if it has one, else a ready
/// binding on an online node, else any binding.
async fn pick_binding(app: &App, env_id: &str, node: Option<&str>) -> ApiResult<BindingRecord> {
    let all = app
        .store
        .bindings_of_environment(env_id.to_string())
        .await?;
    if all.is_empty() {
        return Err(ApiError::conflict(
            "the environment is not mapped to any node; bind it first (POST /api/environments/:id/bindings)",
        ));
    }
    let online = |b: &BindingRecord| app.registry.presence(&b.node_id).is_some();
    let pick = node
        .and_then(|n| all.iter().find(|b| b.node_id == n))
        .or_else(|| all.iter().find(|b| b.status == "ready" && online(b)))
        .or_else(|| all.iter().find(|b| online(b)))
        .unwrap_or(&all[0]);
    Ok(pick.clone())
}

/// Sends a task to its node with its environment's runtime secrets attached.
pub async fn dispatch(app: &App, rec: &crate::store::TaskRecord) -> anyhow::Result<()> {
    let node = rec.node_id.clone().unwrap_or_default();
    if let Some(tx) = app.registry.sender(&node) {
        let frame = submit_frame(app, rec).await?;
        let _ = tx.send(Outgoing::Frame(frame)).await;
    }
    Ok(())
}

/// A binding became ready: start the tasks that waited for it, in its working directory.
pub async fn dispatch_waiting(app: &App, binding_id: &str) -> anyhow::Result<()> {
    let Some(b) = app.store.binding(binding_id.to_string()).await? else {
        return Ok(());
    };
    for id in app
        .store
        .pending_tasks_of_binding(binding_id.to_string())
        .await?
    {
        let Some(mut rec) = app.store.task(id).await? else {
            continue;
        };
        let mut options: TaskOptions = serde_json::from_str(&rec.options).unwrap_or_default();
        options.cwd = b.resolved_working_dir.clone();
        rec.options = serde_json::to_string(&options)?;
        app.store
            .set_task_options(rec.id.clone(), rec.options.clone())
            .await?;
        dispatch(app, &rec).await?;
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    /// `false` leaves out each task's output text (the board streams it instead).
    #[serde(default)]
    output: Option<bool>,
}

/// `GET /api/threads/:id/messages`: the conversation with each task's state and output.
pub async fn messages(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    load(&app, &id).await?;
    let with_output = q.output.unwrap_or(true);
    let mut out = Vec::new();
    for m in app.store.thread_messages(id).await? {
        let mut v = json!({
            "id": m.id,
            "message": m.message,
            "taskId": m.task_id,
            "createdAt": iso8601(m.created_at),
        });
        if let Some(mode) = &m.injection_mode {
            v["injectionMode"] = json!(mode);
        }
        if let Some(task) = app.store.task(m.task_id.clone()).await? {
            v["task"] = json!({
                "state": task.state,
                "executor": task.executor,
                "exitCode": task.exit_code,
                "error": task.error,
            });
            if task.input_tokens > 0 || task.output_tokens > 0 {
                v["task"]["usage"] = json!({"inputTokens": task.input_tokens, "outputTokens": task.output_tokens, "model": task.model});
            }
            if with_output && m.injection_mode.is_none() {
                v["output"] = json!(app.store.task_text(task.id, OUTPUT_LIMIT).await?);
            }
        }
        out.push(v);
    }
    Ok(Json(json!({ "messages": out })))
}

#[cfg(test)]
mod tests {
    use super::title_from;

    #[test]
    fn titles_come_from_the_first_line_cut_at_a_word() {
        assert_eq!(title_from("\n  npm test \nmore"), "npm test");
        let long = "please refactor the connection module so that reconnects back off properly";
        let t = title_from(long);
        assert!(t.ends_with('…') && t.chars().count() <= 61, "{t}");
        assert!(long.starts_with(t.trim_end_matches('…')), "{t}");
        let no_spaces = "x".repeat(100);
        assert_eq!(title_from(&no_spaces).chars().count(), 61);
    }
}
