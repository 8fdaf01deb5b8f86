//! `/api/tasks*` and `/api/events`: create, list, inspect, stop and message tasks; stream
//! a task's chunks as an AI SDK UI message stream; stream gateway events.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use super::error::{ApiError, ApiResult, Body};
use super::registry::Outgoing;
use super::tasks::{task_json, Live};
use super::App;
use crate::clock::now_ms;
use crate::crypto;
use crate::protocol::ui::STREAM_HEADER;
use crate::protocol::{Frame, InjectionMode, TaskOptions};
use crate::store::{NewTask, TaskFinish, TaskState};

/// Largest goal or follow-up message, in bytes (it must fit in one frame).
pub const MAX_GOAL_BYTES: usize = 256 * 1024;
/// Chunks read from SQLite per replay page.
const REPLAY_PAGE: u32 = 2000;
/// Comment sent on an idle SSE stream so proxies keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateTask {
    #[serde(default)]
    node_id: Option<String>,
    goal: String,
    #[serde(default)]
    executor: Option<String>,
    #[serde(default)]
    options: TaskOptions,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    #[serde(default)]
    node_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn list(State(app): State<App>, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::validation(format!(
                "unknown state {s:?} (pending, running, completed, error, stopped)"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let tasks = app.store.list_tasks(q.node_id, state, limit).await?;
    Ok(Json(
        json!({ "tasks": tasks.iter().map(task_json).collect::<Vec<_>>() }),
    ))
}

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
pub(super) fn check_text(what: &str, text: &str) -> ApiResult<()> {
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

async fn create_task(app: &App, req: CreateTask) -> ApiResult<(StatusCode, Value)> {
    check_text("goal", &req.goal)?;
    let explicit = req.executor.clone();
    let executor = req.executor.unwrap_or_else(|| "shell".to_string());
    if crate::node::executor::by_name(&executor).is_none() {
        return Err(ApiError::validation(format!(
            "unknown executor {executor:?} (available: {})",
            crate::node::executor::names().join(", ")
        )));
    }
    let node_id = match req.node_id {
        Some(id) => {
            match app.store.node(id.clone()).await? {
                Some(n) if n.revoked_at.is_none() => {}
                _ => return Err(ApiError::validation(format!("unknown nodeId {id:?}"))),
            }
            // `llm` is checked by the node, which explains how to configure a provider.
            if let Some(p) = app.registry.presence(&id).filter(|_| executor != "llm") {
                if !p.info.capabilities.contains(&executor) {
                    return Err(ApiError::validation(format!(
                        "node {id} has no {executor:?} executor"
                    )));
                }
            }
            id
        }
        None if explicit.is_none() => pick_node(app, "llm")
            .or_else(|| pick_node(app, "shell"))
            .ok_or_else(|| ApiError::unavailable("no online node; start one with `viber node`"))?,
        // An explicit `llm` with no provider anywhere still goes to a node, which fails it
        // with the instructions for configuring one.
        None => pick_node(app, &executor)
            .or_else(|| {
                (executor == "llm")
                    .then(|| pick_node(app, "shell"))
                    .flatten()
            })
            .ok_or_else(|| {
                ApiError::unavailable(format!(
                    "no online node can run {executor:?} tasks; start one with `viber node`"
                ))
            })?,
    };
    // Without an explicit executor: the agent when the node offers one, else shell.
    let executor = match explicit {
        Some(e) => e,
        None if app
            .registry
            .presence(&node_id)
            .is_some_and(|p| p.info.capabilities.iter().any(|c| c == "llm")) =>
        {
            "llm".to_string()
        }
        None => executor,
    };
    let options = serde_json::to_string(&req.options).map_err(anyhow::Error::from)?;
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
    super::threads::dispatch(app, &rec).await?;
    tracing::info!(task = %id, node = %node_id, "task created");
    Ok((StatusCode::CREATED, task_json(&rec)))
}

/// The online node with the fewest known tasks that offers `executor`.
fn pick_node(app: &App, executor: &str) -> Option<String> {
    app.registry
        .online_ids()
        .into_iter()
        .filter_map(|id| app.registry.presence(&id))
        .filter(|p| p.info.capabilities.iter().any(|c| c == executor))
        .min_by_key(|p| (p.status.running_tasks.len(), p.info.id.clone()))
        .map(|p| p.info.id)
}

/// Runs `f` once per `Idempotency-Key`: a retry with the same key gets the stored response.
pub(super) async fn idempotent<F, Fut>(
    app: &App,
    headers: &HeaderMap,
    scope: String,
    f: F,
) -> ApiResult<Response>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ApiResult<(StatusCode, Value)>>,
{
    let key = match headers.get("idempotency-key") {
        None => {
            let (status, body) = f().await?;
            return Ok((status, Json(body)).into_response());
        }
        Some(v) => v
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .ok_or_else(|| {
                ApiError::bad_request("Idempotency-Key must be 1 to 255 visible characters")
            })?
            .to_string(),
    };
    let _serial = app.idempotency.lock().await;
    if let Some((status, body)) = app
        .store
        .idempotent_response(scope.clone(), key.clone())
        .await?
    {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let mut res = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(res);
    }
    let (status, body) = f().await?;
    app.store
        .save_idempotent_response(scope, key, status.as_u16(), body.to_string(), now_ms())
        .await?;
    Ok((status, Json(body)).into_response())
}

async fn load(app: &App, id: &str) -> ApiResult<crate::store::TaskRecord> {
    app.store
        .task(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no task {id:?}")))
}

/// Approval requests of a task that have no answer yet, with the tool call they guard.
async fn awaiting_approvals(app: &App, task_id: &str) -> anyhow::Result<Vec<Value>> {
    let mut inputs: std::collections::HashMap<String, Value> = Default::default();
    let mut open: Vec<Value> = Vec::new();
    for text in app.store.approval_chunks(task_id.to_string()).await? {
        let c: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match c["type"].as_str() {
            Some("tool-input-available") => {
                inputs.insert(c["toolCallId"].as_str().unwrap_or("").to_string(), c);
            }
            Some("tool-approval-request") => {
                let call = inputs.get(c["toolCallId"].as_str().unwrap_or(""));
                open.push(json!({
                    "approvalId": c["approvalId"],
                    "toolCallId": c["toolCallId"],
                    "toolName": call.map(|i| i["toolName"].clone()).unwrap_or(Value::Null),
                    "input": call.map(|i| i["input"].clone()).unwrap_or(Value::Null),
                }));
            }
            Some("tool-approval-response") => open.retain(|o| o["approvalId"] != c["approvalId"]),
            _ => {}
        }
    }
    Ok(open)
}

/// A task that has not ended yet (409 when it has; `hint` follows the message).
async fn load_unfinished(app: &App, id: &str, hint: &str) -> ApiResult<crate::store::TaskRecord> {
    let rec = load(app, id).await?;
    if rec.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "task {id} already ended ({}){hint}",
            rec.state.as_str()
        )));
    }
    Ok(rec)
}

pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let rec = load(&app, &id).await?;
    let mut v = task_json(&rec);
    if rec.state == TaskState::Running {
        let open = awaiting_approvals(&app, &id).await?;
        if let Some(first) = open.first() {
            v["awaitingApproval"] = first.clone();
            v["status"] = json!("awaiting approval");
        }
    }
    // The most recent chunks, oldest first.
    let after = (rec.last_seq - 20).max(-1);
    let last: Vec<Value> = app
        .store
        .chunks_after(id, after, 50)
        .await?
        .into_iter()
        .map(|(seq, c)| json!({"seq": seq, "chunk": serde_json::from_str::<Value>(&c).unwrap_or(Value::Null)}))
        .collect();
    v["lastEvents"] = Value::Array(last);
    Ok(Json(v))
}

pub async fn stop(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
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
                TaskFinish::without_node(TaskState::Stopped, "stopped by operator"),
            )
            .await?;
    } else {
        app.tasks.request_stop(&id);
    }
    if let Some(tx) = online {
        let _ = tx
            .send(Outgoing::Frame(Frame::TaskStop {
                task_id: id.clone(),
            }))
            .await;
    }
    tracing::info!(task = %id, "stop requested");
    let rec = load(&app, &id).await?;
    let mut v = task_json(&rec);
    v["stopRequested"] = json!(true);
    Ok((StatusCode::ACCEPTED, Json(v)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MessageRequest {
    message: String,
    #[serde(default)]
    injection_mode: Option<String>,
}

pub async fn message(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(req): Body<MessageRequest>,
) -> ApiResult<Response> {
    let scope = format!("POST /api/tasks/{id}/message");
    idempotent(&app, &headers, scope, || send_message(&app, id, req)).await
}

async fn send_message(
    app: &App,
    id: String,
    req: MessageRequest,
) -> ApiResult<(StatusCode, Value)> {
    let mode: InjectionMode = match req.injection_mode.as_deref() {
        None => InjectionMode::default(),
        Some(m) => m.parse().map_err(ApiError::validation)?,
    };
    check_text("message", &req.message)?;
    let rec = load_unfinished(app, &id, "; start a new task").await?;
    let node_id = rec.node_id.clone().unwrap_or_default();
    let tx = app.registry.sender(&node_id).ok_or_else(|| {
        ApiError::unavailable(format!(
            "the task's node {node_id} is offline; retry when it is back"
        ))
    })?;
    app.store
        .insert_task_message(
            id.clone(),
            req.message.clone(),
            mode_name(mode).into(),
            now_ms(),
        )
        .await?;
    let _ = tx
        .send(Outgoing::Frame(Frame::TaskMessage {
            task_id: id.clone(),
            message: req.message,
            injection_mode: mode,
        }))
        .await;
    Ok((
        StatusCode::ACCEPTED,
        json!({"taskId": id, "injectionMode": mode_name(mode), "accepted": true}),
    ))
}

fn mode_name(m: InjectionMode) -> &'static str {
    match m {
        InjectionMode::Collect => "collect",
        InjectionMode::Steer => "steer",
        InjectionMode::Followup => "followup",
    }
}

#[derive(Deserialize)]
pub struct UsageQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

/// `GET /api/usage?from=&to=`: tokens of `llm` tasks created in the range (default: the last
/// 30 days), summed by node, environment and model.
pub async fn usage(State(app): State<App>, Query(q): Query<UsageQuery>) -> ApiResult<Json<Value>> {
    let parse = |v: &Option<String>, name: &str, default: i64| -> ApiResult<i64> {
        match v {
            None => Ok(default),
            Some(s) => crate::clock::parse_time(s).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be epoch milliseconds or an RFC 3339 time"
                ))
            }),
        }
    };
    let now = now_ms();
    let to = parse(&q.to, "to", now + 1)?;
    let from = parse(&q.from, "from", to - 30 * 86_400_000)?;
    if from >= to {
        return Err(ApiError::validation("from must be before to"));
    }
    let mut out = json!({"from": crate::clock::iso8601(from), "to": crate::clock::iso8601(to)});
    let mut total = (0i64, 0i64, 0i64);
    for (key, field) in [
        ("node_id", "byNode"),
        ("environment_id", "byEnvironment"),
        ("model", "byModel"),
    ] {
        let rows = app.store.usage_by(key, from, to).await?;
        if key == "node_id" {
            total = rows
                .iter()
                .fold((0, 0, 0), |t, r| (t.0 + r.1, t.1 + r.2, t.2 + r.3));
        }
        out[field] = Value::Array(
            rows.into_iter()
                .map(|(k, tasks, input, output)| json!({"key": k, "tasks": tasks, "inputTokens": input, "outputTokens": output}))
                .collect(),
        );
    }
    out["total"] = json!({"tasks": total.0, "inputTokens": total.1, "outputTokens": total.2});
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalAnswer {
    approve: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /api/tasks/:id/approvals/:approvalId {approve, reason?}`.
pub async fn approve(
    State(app): State<App>,
    Path((id, approval)): Path<(String, String)>,
    Body(req): Body<ApprovalAnswer>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let rec = load_unfinished(&app, &id, "").await?;
    let open = awaiting_approvals(&app, &id).await?;
    if !open.iter().any(|o| o["approvalId"] == approval.as_str()) {
        return Err(ApiError::not_found(format!(
            "task {id} has no pending approval {approval:?}"
        )));
    }
    let node = rec.node_id.clone().unwrap_or_default();
    let tx = app.registry.sender(&node).ok_or_else(|| {
        ApiError::unavailable(format!(
            "the task's node {node} is offline; answer again when it is back"
        ))
    })?;
    let _ = tx
        .send(Outgoing::Frame(Frame::TaskApproval {
            task_id: id.clone(),
            approval_id: approval.clone(),
            approved: req.approve,
            reason: req.reason.clone(),
        }))
        .await;
    tracing::info!(task = %id, approval = %approval, approved = req.approve, "approval answered");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"taskId": id, "approvalId": approval, "approved": req.approve})),
    ))
}

#[derive(Deserialize)]
pub struct StreamQuery {
    /// `false`: replay what is stored and close, without waiting for more.
    #[serde(default)]
    follow: Option<bool>,
}

/// `GET /api/tasks/:id/stream`: the task's chunks as an AI SDK UI message stream.
pub async fn stream(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let after: i64 = match headers.get("last-event-id") {
        None => -1,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|n| n as i64)
            .ok_or_else(|| {
                ApiError::bad_request("Last-Event-ID must be a chunk sequence number")
            })?,
    };
    load(&app, &id).await?;
    let follow = q.follow.unwrap_or(true);
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let tracked = app.connections.token();
    tokio::spawn(async move {
        let _tracked = tracked;
        tokio::select! {
            r = pump_task(&app, &id, after, follow, &tx) => {
                if let Err(e) = r {
                    tracing::error!(task = %id, error = format!("{e:#}"), "task stream failed");
                }
            }
            _ = app.shutdown.cancelled() => {}
        }
    });
    Ok(sse_response(rx, true))
}

fn sse_response(mut rx: mpsc::Receiver<Bytes>, ui_stream: bool) -> Response {
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    });
    let mut res = Response::new(HttpBody::from_stream(body));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if ui_stream {
        h.insert(STREAM_HEADER.0, HeaderValue::from_static(STREAM_HEADER.1));
    }
    res
}

fn put_event(buf: &mut BytesMut, seq: u64, chunk: &str) {
    buf.put_slice(b"id: ");
    buf.put_slice(seq.to_string().as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(chunk.as_bytes());
    buf.put_slice(b"\n\n");
}

/// Sends `buf` if it holds anything; false when the client went away.
async fn flush(tx: &mpsc::Sender<Bytes>, buf: &mut BytesMut) -> bool {
    if buf.is_empty() {
        return true;
    }
    tx.send(buf.split().freeze()).await.is_ok()
}

/// Replays stored chunks with seq in (`after`, `upto`] and returns the last seq sent.
async fn replay(
    app: &App,
    id: &str,
    mut after: i64,
    upto: i64,
    tx: &mpsc::Sender<Bytes>,
) -> anyhow::Result<Option<i64>> {
    loop {
        let rows = app
            .store
            .chunks_after(id.to_string(), after, REPLAY_PAGE)
            .await?;
        if rows.is_empty() {
            return Ok(Some(after));
        }
        let mut buf = BytesMut::new();
        for (seq, chunk) in &rows {
            if *seq as i64 > upto {
                break;
            }
            put_event(&mut buf, *seq, chunk);
            after = *seq as i64;
        }
        if !flush(tx, &mut buf).await {
            return Ok(None);
        }
        if rows.len() < REPLAY_PAGE as usize || rows.last().is_some_and(|(s, _)| *s as i64 > upto) {
            return Ok(Some(after));
        }
    }
}

/// Streams a task's chunks after `after`: stored ones, then live ones, then `[DONE]`.
async fn pump_task(
    app: &App,
    id: &str,
    mut after: i64,
    follow: bool,
    tx: &mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let done = Bytes::from_static(b"data: [DONE]\n\n");
    loop {
        let Some(sub) = (if follow {
            app.tasks.subscribe(id)
        } else {
            None
        }) else {
            // Not live here. Either it ended, or this gateway restarted and its node has not
            // spoken of it yet: load it so the node's frames reach us, then subscribe.
            let rec = app.store.task(id.to_string()).await?;
            let ended = rec.as_ref().is_none_or(|r| r.state.is_terminal());
            if ended || !follow {
                let Some(_) = replay(app, id, after, i64::MAX, tx).await? else {
                    return Ok(());
                };
                if ended {
                    let _ = tx.send(done).await;
                }
                return Ok(());
            }
            app.tasks.live(&app.store, id).await?;
            continue;
        };
        let mut rx = sub.rx;
        match replay(app, id, after, sub.committed, tx).await? {
            Some(a) => after = a,
            None => return Ok(()),
        }
        let mut buf = BytesMut::new();
        for (seq, chunk) in &sub.pending {
            if *seq as i64 > after {
                put_event(&mut buf, *seq, chunk);
                after = *seq as i64;
            }
        }
        if !flush(tx, &mut buf).await {
            return Ok(());
        }
        // Live: coalesce whatever is already queued into one write.
        loop {
            let first = tokio::select! {
                r = rx.recv() => r,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            };
            let mut next = Some(first);
            let mut ended = false;
            let mut lagged = false;
            while let Some(item) = next.take() {
                match item {
                    Ok(Live::Chunk(seq, chunk)) => {
                        if seq as i64 > after {
                            put_event(&mut buf, seq, &chunk);
                            after = seq as i64;
                        }
                    }
                    Ok(Live::End) => ended = true,
                    Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                    Err(broadcast::error::RecvError::Closed) => ended = true,
                }
                if ended || lagged || buf.len() > 256 * 1024 {
                    break;
                }
                next = match rx.try_recv() {
                    Ok(v) => Some(Ok(v)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(_) => None,
                };
            }
            if !flush(tx, &mut buf).await {
                return Ok(());
            }
            if ended {
                // Chunks committed but broadcast before we subscribed are already sent;
                // anything after `after` that only reached SQLite is replayed here.
                if replay(app, id, after, i64::MAX, tx).await?.is_none() {
                    return Ok(());
                }
                let _ = tx.send(done).await;
                return Ok(());
            }
            if lagged {
                // Fell behind the live buffer: catch up from SQLite and resubscribe.
                break;
            }
        }
    }
}

/// `GET /api/events`: push-only gateway events as SSE (`event: <type>`).
pub async fn events(State(app): State<App>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut sub = app.events.subscribe();
    let tracked = app.connections.token();
    tokio::spawn(async move {
        let _tracked = tracked;
        let hello = format!(
            "event: ready\ndata: {}\n\n",
            json!({"type": "ready", "nodesOnline": app.registry.online_count()})
        );
        if tx.send(Bytes::from(hello)).await.is_err() {
            return;
        }
        loop {
            let msg = tokio::select! {
                r = sub.recv() => r,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() { return; }
                    continue;
                }
                _ = app.shutdown.cancelled() => return,
            };
            let bytes = match msg {
                Ok(ev) => Bytes::from(format!("event: {}\ndata: {}\n\n", ev.kind, ev.json)),
                Err(broadcast::error::RecvError::Lagged(n)) => Bytes::from(format!(
                    "event: gap\ndata: {}\n\n",
                    json!({"type": "gap", "missed": n})
                )),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
    });
    sse_response(rx, false)
}
