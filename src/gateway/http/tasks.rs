//! `/api/tasks*`: create, list, inspect, stop, message and answer approvals of tasks.
//! The stream of a task is in `stream.rs`; its life cycle after creation is the task hub's.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde_json::Value;

use super::idempotency::idempotent;
use super::openapi::Errors;
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::commands;
use crate::gateway::envs::input::check_allowlist;
use crate::gateway::error::{ApiError, ApiResult, Body, Path, Query};
use crate::gateway::link::Outgoing;
use crate::gateway::App;
use crate::protocol::api::ApprovalScope;
use crate::protocol::api::{
    ApprovalAnswer, ApprovalAnswered, ChunkEvent, CreateTask, ErrorBody, MessageAccepted,
    MessageRequest, PendingApproval, TaskList, TaskListQuery, TaskUsage, TaskView,
};
use crate::protocol::ui::NETWORK_TOOL;
use crate::protocol::{ExecutorKind, Frame, InjectionMode, TaskOutcome, TaskState};
use crate::store::APPROVAL_CHUNK_TYPES;
use crate::store::{AllowedHosts, NewTask, TaskFinish, TaskRecord};

/// Largest goal or follow-up message, in bytes (it must fit in one frame).
pub const MAX_GOAL_BYTES: usize = 256 * 1024;

/// A task as the API shows it.
pub fn task_view(t: &TaskRecord) -> TaskView {
    TaskView {
        id: t.id.clone(),
        node_id: t.node_id.clone(),
        goal: t.goal.clone(),
        executor: t.executor,
        options: serde_json::from_str(&t.options).unwrap_or_default(),
        state: t.state,
        created_at: iso8601(t.created_at),
        last_seq: t.last_seq,
        started_at: t.started_at.map(iso8601),
        finished_at: t.finished_at.map(iso8601),
        exit_code: t.exit_code,
        error: t.error.clone(),
        result: t.result.clone(),
        usage: task_usage(t),
        environment_id: t.environment_id.clone(),
        thread_id: t.thread_id.clone(),
        output_pruned_at: t.output_pruned_at.map(iso8601),
        awaiting_approval: None,
        status: None,
        last_events: None,
        stop_requested: None,
        task_id: None,
        binding_id: None,
    }
}

/// The tokens a task used, when its agent reported any.
pub fn task_usage(t: &TaskRecord) -> Option<TaskUsage> {
    (t.input_tokens > 0 || t.output_tokens > 0 || t.cost_usd > 0.0).then(|| TaskUsage {
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        model: t.model.clone(),
        cost_usd: t.cost_usd,
    })
}

/// Tasks, newest first.
#[utoipa::path(
    get,
    path = "/tasks",
    operation_id = "listTasks",
    tag = "tasks",
    params(TaskListQuery),
    responses(
        (status = 200, description = "Tasks, newest first", body = TaskList),
        (status = 422, description = "Unknown state", body = ErrorBody),
        Errors,
    )
)]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<TaskListQuery>,
) -> ApiResult<Json<TaskList>> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<TaskState>()?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let tasks = app.store.list_tasks(q.node_id, state, limit).await?;
    Ok(Json(TaskList {
        tasks: tasks.iter().map(task_view).collect(),
    }))
}

/// Creates a task and sends it to a node (`nodeId`, or the least busy online node).
#[utoipa::path(
    post,
    path = "/tasks",
    operation_id = "createTask",
    tag = "tasks",
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key get the first response again (with `Idempotent-Replayed: true`); 1 to 255 characters")),
    request_body = CreateTask,
    responses(
        (status = 201, description = "Created and dispatched", body = TaskView),
        (status = 422, description = "Empty goal, unknown executor or nodeId", body = ErrorBody),
        (status = 503, description = "No online node can run it", body = ErrorBody),
        Errors,
    )
)]
pub async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    Body(req): Body<CreateTask>,
) -> ApiResult<Response> {
    idempotent(&app, &headers, "POST /api/tasks".into(), || {
        create_task(&app, req)
    })
    .await
}

/// A goal or message must say something and fit in one frame.
pub fn check_text(what: &str, text: &str) -> ApiResult<()> {
    if text.trim().is_empty() {
        return Err(ApiError::validation(format!("{what} must not be empty")));
    }
    if text.len() > MAX_GOAL_BYTES {
        return Err(ApiError::too_large(format!(
            "{what} is {} bytes; the limit is {MAX_GOAL_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

/// An executor named in a request.
pub fn parse_executor(name: &str) -> ApiResult<ExecutorKind> {
    name.parse().map_err(|_| {
        ApiError::validation(format!(
            "unknown executor {name:?} (available: {})",
            ExecutorKind::NAMES.join(", ")
        ))
    })
}

async fn create_task(app: &App, req: CreateTask) -> ApiResult<(StatusCode, TaskView)> {
    check_text("goal", &req.goal)?;
    let explicit = req.executor.as_deref().map(parse_executor).transpose()?;
    let node_id = match req.node_id {
        Some(id) => check_node(app, id, explicit.unwrap_or(ExecutorKind::Shell)).await?,
        None => route(app, explicit)?,
    };
    // Without an explicit executor: the agent when the node offers one, else shell.
    let executor = explicit.unwrap_or_else(|| {
        if offers(app, &node_id, ExecutorKind::Llm) {
            ExecutorKind::Llm
        } else {
            ExecutorKind::Shell
        }
    });
    let mut options = req.options;
    options.network_allowlist = check_allowlist(&options.network_allowlist)?;
    let options = serde_json::to_string(&options).map_err(anyhow::Error::from)?;
    let task = NewTask {
        id: crypto::new_id("task"),
        node_id: node_id.clone(),
        goal: req.goal,
        executor,
        options,
        created_at: now_ms(),
        environment_id: None,
        thread_id: None,
        binding_id: None,
    };
    let id = task.id.clone();
    app.store.insert_task(task).await?;
    let rec = app
        .store
        .task(id.clone())
        .await?
        .ok_or_else(|| anyhow::anyhow!("task vanished after insert"))?;
    app.tasks.created(&rec);
    crate::gateway::tasks::dispatch(app, &rec).await?;
    tracing::info!(task = %id, node = %node_id, "task created");
    Ok((StatusCode::CREATED, task_view(&rec)))
}

/// A node named in a request: enrolled, and offering `executor` when it is online.
async fn check_node(app: &App, id: String, executor: ExecutorKind) -> ApiResult<String> {
    match app.store.node(id.clone()).await? {
        Some(n) if n.revoked_at.is_none() => {}
        _ => return Err(ApiError::validation(format!("unknown nodeId {id:?}"))),
    }
    // `llm` is checked by the node, which explains how to configure a provider.
    if let Some(p) = app
        .registry
        .presence(&id)
        .filter(|_| executor != ExecutorKind::Llm)
    {
        if !p.info.offers(executor) {
            return Err(ApiError::validation(format!(
                "node {id} has no {:?} executor{}",
                executor.as_str(),
                executor
                    .install_hint()
                    .map(|h| format!(": install it on the node with `{h}` and restart the node"))
                    .unwrap_or_default()
            )));
        }
    }
    Ok(id)
}

/// The node a task without `nodeId` goes to.
fn route(app: &App, explicit: Option<ExecutorKind>) -> ApiResult<String> {
    match explicit {
        None => pick_node(app, ExecutorKind::Llm)
            .or_else(|| pick_node(app, ExecutorKind::Shell))
            .ok_or_else(|| ApiError::unavailable("no online node; start one with `viber node`")),
        // An explicit `llm` with no provider anywhere still goes to a node, which fails it
        // with the instructions for configuring one.
        Some(executor) => pick_node(app, executor)
            .or_else(|| {
                (executor == ExecutorKind::Llm)
                    .then(|| pick_node(app, ExecutorKind::Shell))
                    .flatten()
            })
            .ok_or_else(|| {
                ApiError::unavailable(format!(
                    "no online node can run {:?} tasks; start one with `viber node`",
                    executor.as_str()
                ))
            }),
    }
}

/// Whether an online node offers `executor`.
pub fn offers(app: &App, node_id: &str, executor: ExecutorKind) -> bool {
    app.registry
        .presence(node_id)
        .is_some_and(|p| p.info.offers(executor))
}

/// The online node with the fewest known tasks that offers `executor`.
fn pick_node(app: &App, executor: ExecutorKind) -> Option<String> {
    app.registry
        .least_busy(|info| info.offers(executor) && info.runs_tasks())
}

pub async fn load(app: &App, id: &str) -> ApiResult<TaskRecord> {
    app.store
        .task(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {id:?}")))
}

/// The approval-related chunks of a task, parsed, in order: the stored ones and those the
/// gateway has accepted and relayed but not stored yet (the writer gathers for a few
/// milliseconds), so a request a watcher has seen can be answered at once.
async fn approval_chunks(app: &App, task_id: &str) -> anyhow::Result<Vec<Value>> {
    // Most of the tail is text: only a chunk that may be one of the three is kept.
    let unstored = app
        .tasks
        .unstored(task_id, usize::MAX, |text| text.contains("tool-"));
    let stored = app.store.approval_chunks(task_id.to_string()).await?;
    Ok(with_unstored(stored, unstored)
        .into_iter()
        .map(|(_, text)| serde_json::from_str::<Value>(&text).unwrap_or(Value::Null))
        .filter(|c| APPROVAL_CHUNK_TYPES.iter().any(|t| c["type"] == *t))
        .collect())
}

/// Stored chunks with the unstored ones read just before them (see `TaskHub::unstored`):
/// a chunk in both is kept once, and the whole is in seq order.
fn with_unstored(
    mut stored: Vec<(u64, String)>,
    unstored: Vec<(u64, std::sync::Arc<str>)>,
) -> Vec<(u64, String)> {
    let seen: std::collections::HashSet<u64> = stored.iter().map(|(seq, _)| *seq).collect();
    for (seq, chunk) in unstored {
        if !seen.contains(&seq) {
            stored.push((seq, chunk.to_string()));
        }
    }
    stored.sort_unstable_by_key(|(seq, _)| *seq);
    stored
}

/// Approval requests of a task that have no answer yet, with the tool call they guard.
pub(crate) async fn awaiting_approvals(
    app: &App,
    task_id: &str,
) -> anyhow::Result<Vec<PendingApproval>> {
    let mut inputs: std::collections::HashMap<String, Value> = Default::default();
    let mut open: Vec<PendingApproval> = Vec::new();
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    for c in approval_chunks(app, task_id).await? {
        match c["type"].as_str() {
            Some("tool-input-available") => {
                inputs.insert(text(&c["toolCallId"]), c);
            }
            Some("tool-approval-request") => {
                let call = inputs.get(c["toolCallId"].as_str().unwrap_or(""));
                open.push(PendingApproval {
                    approval_id: text(&c["approvalId"]),
                    tool_call_id: text(&c["toolCallId"]),
                    tool_name: call.and_then(|i| i["toolName"].as_str().map(str::to_string)),
                    input: call.map(|i| i["input"].clone()).unwrap_or(Value::Null),
                });
            }
            Some("tool-approval-response") => {
                open.retain(|o| c["approvalId"] != o.approval_id.as_str())
            }
            _ => {}
        }
    }
    Ok(open)
}

/// A task that has not ended yet (409 when it has; `hint` follows the message).
async fn load_unfinished(app: &App, id: &str, hint: &str) -> ApiResult<TaskRecord> {
    let rec = load(app, id).await?;
    if rec.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "task {id} already ended ({}){hint}",
            rec.state.as_str()
        )));
    }
    Ok(rec)
}

/// A task, with its pending approval and most recent chunks.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    operation_id = "getTask",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 404, description = "No such task", body = ErrorBody),
        Errors,
    )
)]
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<TaskView>> {
    let rec = load(&app, &id).await?;
    let mut v = task_view(&rec);
    if rec.state == TaskState::Running {
        let open = awaiting_approvals(&app, &id).await?;
        if let Some(first) = open.into_iter().next() {
            v.awaiting_approval = Some(first);
            v.status = Some("awaiting approval".into());
        }
    }
    // The most recent chunks, oldest first, within a byte budget: a view of the task, not
    // its output (the stream has all of it). A running task's newest chunks may not be
    // stored yet (the writer gathers for a few milliseconds): they come from the hub, read
    // first, then SQLite, and repeats are dropped by seq.
    let unstored = app.tasks.unstored(&id, LAST_EVENTS, |_| true);
    let newest = unstored.last().map_or(-1, |(seq, _)| *seq as i64);
    let after = (newest.max(rec.last_seq) - LAST_EVENTS as i64).max(-1);
    let stored = app.store.chunks_after(id, after, 50).await?;
    let unstored = unstored.into_iter().filter(|(seq, _)| *seq as i64 > after);
    v.last_events = Some(last_events(with_unstored(stored, unstored.collect())));
    Ok(Json(v))
}

/// How many of a task's newest seqs a task view looks at for its chunks.
const LAST_EVENTS: usize = 20;

/// Bytes of chunk JSON a task view shows at most, and the most one chunk may take there.
const LAST_EVENTS_BYTES: usize = 64 * 1024;
const LAST_EVENT_BYTES: usize = 16 * 1024;

/// The newest chunks that fit [`LAST_EVENTS_BYTES`], oldest first; a chunk over
/// [`LAST_EVENT_BYTES`] is shown as its type and size.
fn last_events(chunks: Vec<(u64, String)>) -> Vec<ChunkEvent> {
    let mut budget = LAST_EVENTS_BYTES;
    let mut out = Vec::new();
    for (seq, c) in chunks.into_iter().rev() {
        let chunk = if c.len() > LAST_EVENT_BYTES {
            let v: Value = serde_json::from_str(&c).unwrap_or(Value::Null);
            serde_json::json!({"type": v["type"], "omitted": true, "bytes": c.len()})
        } else {
            serde_json::from_str(&c).unwrap_or(Value::Null)
        };
        let size = c.len().min(LAST_EVENT_BYTES);
        if size > budget {
            break;
        }
        budget -= size;
        out.push(ChunkEvent { seq, chunk });
    }
    out.reverse();
    out
}

/// Stops a task: at once when it has not started or its node is away, else by asking the node.
#[utoipa::path(
    post,
    path = "/tasks/{id}/stop",
    operation_id = "stopTask",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 202, description = "Stop requested", body = TaskView),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task already ended", body = ErrorBody),
        Errors,
    )
)]
pub async fn stop(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    let rec = load_unfinished(&app, &id, "").await?;
    let node_id = rec.node_id.clone().unwrap_or_default();
    let online = app.registry.sender(&node_id);
    if rec.state == TaskState::Pending || online.is_none() {
        // Not started, or its node is away: it ends now. A node that comes back with it
        // running is told to stop it.
        app.tasks
            .end_without_node(
                &app.store,
                &id,
                TaskFinish::now(TaskOutcome::stopped("stopped by operator")),
            )
            .await?;
    } else {
        app.tasks.request_stop(&id);
    }
    if let Some(tx) = online {
        let _ = tx
            .send(Outgoing::frame(Frame::TaskStop {
                task_id: id.clone(),
            }))
            .await;
    }
    tracing::info!(task = %id, "stop requested");
    let rec = load(&app, &id).await?;
    let mut v = task_view(&rec);
    v.stop_requested = Some(true);
    Ok((StatusCode::ACCEPTED, Json(v)))
}

/// A follow-up message for a running task.
#[utoipa::path(
    post,
    path = "/tasks/{id}/message",
    operation_id = "messageTask",
    tag = "tasks",
    params(("id" = String, Path, description = "Task id"), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key get the first response again (with `Idempotent-Replayed: true`); 1 to 255 characters")),
    request_body = MessageRequest,
    responses(
        (status = 202, description = "Accepted", body = MessageAccepted),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task already ended", body = ErrorBody),
        Errors,
    )
)]
pub async fn message(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(req): Body<MessageRequest>,
) -> ApiResult<Response> {
    let scope = format!("POST /api/tasks/{id}/message");
    idempotent(&app, &headers, scope, || send_message(&app, id, req)).await
}

/// Records a follow-up and sends it to the task's node as a command (stored until the node
/// acknowledges it, so a dropped connection or a gateway restart does not lose it). Returns
/// whether the node applied it already; a refusal from the node is a 409.
pub async fn follow_up(
    app: &App,
    task: &TaskRecord,
    message: String,
    mode: InjectionMode,
) -> ApiResult<bool> {
    let node_id = task.node_id.clone().unwrap_or_default();
    app.store
        .insert_task_message(task.id.clone(), message.clone(), mode, now_ms())
        .await?;
    let frame = Frame::TaskMessage {
        task_id: task.id.clone(),
        message,
        injection_mode: mode,
        command_id: None,
    };
    commands::send(app, &node_id, Some(&task.id), frame)
        .await?
        .answer()
}

async fn send_message(
    app: &App,
    id: String,
    req: MessageRequest,
) -> ApiResult<(StatusCode, MessageAccepted)> {
    let mode: InjectionMode = match req.injection_mode.as_deref() {
        None => InjectionMode::default(),
        Some(m) => m.parse()?,
    };
    check_text("message", &req.message)?;
    let rec = load_unfinished(app, &id, "; start a new task").await?;
    let delivered = follow_up(app, &rec, req.message, mode).await?;
    Ok((
        StatusCode::ACCEPTED,
        MessageAccepted {
            task_id: id,
            injection_mode: mode,
            accepted: true,
            delivered,
        },
    ))
}

/// `POST /api/tasks/:id/approvals/:approvalId {approve, reason?}`.
#[utoipa::path(
    post,
    path = "/tasks/{id}/approvals/{approval}",
    operation_id = "answerApproval",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "Task id"),
        ("approval" = String, Path, description = "Approval id (`awaitingApproval.approvalId`)"),
    ),
    request_body = ApprovalAnswer,
    responses(
        (status = 202, description = "Answer sent (or stored until the node is back)", body = ApprovalAnswered),
        (status = 404, description = "No such task or pending approval", body = ErrorBody),
        (status = 409, description = "The task already ended", body = ErrorBody),
        Errors,
    )
)]
pub async fn approve(
    State(app): State<App>,
    Path((id, approval)): Path<(String, String)>,
    Body(req): Body<ApprovalAnswer>,
) -> ApiResult<(StatusCode, Json<ApprovalAnswered>)> {
    let rec = load_unfinished(&app, &id, "").await?;
    let open = awaiting_approvals(&app, &id).await?;
    let Some(pending) = open.iter().find(|o| o.approval_id == approval) else {
        return Err(ApiError::not_found(format!(
            "task {id} has no pending approval {approval:?}"
        )));
    };
    if req.approve {
        remember_host(
            &app,
            &rec,
            pending,
            req.scope.unwrap_or(ApprovalScope::Once),
        )
        .await?;
    }
    let node = rec.node_id.clone().unwrap_or_default();
    let frame = Frame::TaskApproval {
        task_id: id.clone(),
        approval_id: approval.clone(),
        approved: req.approve,
        reason: req.reason.clone(),
        command_id: None,
    };
    let delivered = commands::send(&app, &node, Some(&id), frame)
        .await?
        .answer()?;
    tracing::info!(task = %id, approval = %approval, approved = req.approve, "approval answered");
    Ok((
        StatusCode::ACCEPTED,
        Json(ApprovalAnswered {
            task_id: id,
            approval_id: approval,
            approved: req.approve,
            delivered,
        }),
    ))
}

/// An approved network request with a scope wider than the task: the host joins the
/// thread's or the environment's allowlist (the node allows it for the rest of the task).
async fn remember_host(
    app: &App,
    task: &TaskRecord,
    pending: &PendingApproval,
    scope: ApprovalScope,
) -> ApiResult<()> {
    let (list, id) = match scope {
        ApprovalScope::Once => return Ok(()),
        ApprovalScope::Thread => (AllowedHosts::Thread, task.thread_id.clone()),
        ApprovalScope::Environment => (AllowedHosts::Environment, task.environment_id.clone()),
    };
    if pending.tool_name.as_deref() != Some(NETWORK_TOOL) {
        return Err(ApiError::validation(format!(
            "scope {scope} applies to network approvals only; this one is for {}",
            pending.tool_name.as_deref().unwrap_or("a tool call")
        )));
    }
    let Some(id) = id else {
        return Err(ApiError::validation(format!(
            "scope {scope}: task {} has no {scope}",
            task.id
        )));
    };
    // The host and the port asked about: approving example.com:443 does not open :22.
    let host = pending.input["host"]
        .as_str()
        .zip(pending.input["port"].as_u64())
        .and_then(|(h, p)| crate::protocol::allowlist_entry(&format!("{h}:{p}")).ok())
        .ok_or_else(|| {
            ApiError::validation(format!(
                "this network approval's host cannot be remembered beyond the task (answer \
                 with scope once): {}",
                pending.input
            ))
        })?;
    if !app.store.allow_host(list, id.clone(), host).await? {
        return Err(ApiError::not_found(format!("{scope} {id} is gone")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12, item 12: a task view's recent events stay small whatever the chunks hold.
    #[test]
    fn the_task_view_shows_a_bounded_summary() {
        let big =
            serde_json::json!({"type": "text-delta", "id": "t", "delta": "x".repeat(200_000)})
                .to_string();
        let small = |i: u64| {
            serde_json::json!({"type": "text-delta", "id": "t", "delta": format!("line {i}")})
                .to_string()
        };
        let mut chunks: Vec<(u64, String)> = (0..10).map(|i| (i, big.clone())).collect();
        chunks.extend((10..20).map(|i| (i, small(i))));
        let last = last_events(chunks);
        let size: usize = last.iter().map(|e| e.chunk.to_string().len()).sum();
        assert!(size <= LAST_EVENTS_BYTES, "{size}");
        assert_eq!(last.last().unwrap().seq, 19);
        assert!(last.windows(2).all(|w| w[0].seq < w[1].seq));
        let omitted = last.iter().find(|e| e.chunk["omitted"] == true).unwrap();
        assert_eq!(omitted.chunk["type"], "text-delta");
        assert_eq!(omitted.chunk["bytes"], big.len());
    }
}
