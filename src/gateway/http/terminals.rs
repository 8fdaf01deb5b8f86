//! `/api/terminals*`: terminals on nodes, opened on an environment's binding or a thread's,
//! and the viewer WebSocket that relays one through the gateway (see `gateway::terminals`
//! for the relay, `protocol::api::terminals` for the viewer's messages).

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};

use super::environments::load_env;
use super::openapi::Errors;
use super::threads::{pick_binding, runs_tasks};
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::error::{ApiError, ApiResult, Body, Path, Query};
use crate::gateway::terminals::{open_frame, send, Wake};
use crate::gateway::App;
use crate::protocol::api::{
    AttachQuery, ErrorBody, OpenTerminal, TerminalList, TerminalListQuery, TerminalView,
    ViewerEvent, ViewerInput,
};
use crate::protocol::terminal::{Bytes64, MAX_OUTPUT_CHUNK};
use crate::protocol::{Frame, MAX_FRAME_BYTES};
use crate::store::{BindingRecord, EnvironmentRecord, TerminalRecord};

/// Default window size when the request names none.
const COLS: u16 = 80;
const ROWS: u16 = 24;
/// The largest window side accepted.
const MAX_SIDE: u16 = 1000;
/// The capability of nodes that run terminals.
const TERMINAL_CAPABILITY: &str = "terminal";

fn view(app: &App, headers: &HeaderMap, t: &TerminalRecord) -> TerminalView {
    TerminalView {
        id: t.id.clone(),
        node_id: t.node_id.clone(),
        binding_id: t.binding_id.clone(),
        environment_id: t.environment_id.clone(),
        thread_id: t.thread_id.clone(),
        command: t.command.clone(),
        persistent: t.persistent,
        status: t.status.clone(),
        exit_code: t.exit_code,
        error: t.error.clone(),
        ports: if t.status == "running" {
            app.terminals.ports(&t.id)
        } else {
            Vec::new()
        },
        preview_url: format!(
            "{}{}{}/",
            app.previews.base(headers),
            crate::gateway::preview::PREFIX,
            t.binding_id
        ),
        created_at: iso8601(t.created_at),
        ended_at: t.ended_at.map(iso8601),
    }
}

async fn load(app: &App, id: &str) -> ApiResult<TerminalRecord> {
    app.store
        .terminal(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no terminal {id:?}")))
}

fn side(v: Option<u16>, default: u16, name: &str) -> ApiResult<u16> {
    match v.unwrap_or(default) {
        n @ 1..=MAX_SIDE => Ok(n),
        n => Err(ApiError::validation(format!(
            "{name} must be 1-{MAX_SIDE}, not {n}"
        ))),
    }
}

/// The binding (and its environment) a terminal request names.
async fn target(
    app: &App,
    req: &OpenTerminal,
) -> ApiResult<(EnvironmentRecord, BindingRecord, Option<String>)> {
    let named = [
        req.binding_id.is_some(),
        req.thread_id.is_some(),
        req.environment.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if named != 1 {
        return Err(ApiError::validation(
            "name exactly one of bindingId, threadId or environment",
        ));
    }
    if req.node.is_some() && req.environment.is_none() {
        return Err(ApiError::validation("node goes with environment"));
    }
    if let Some(bid) = &req.binding_id {
        let b = app
            .store
            .binding(bid.clone())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no binding {bid:?}")))?;
        let env = load_env(app, &b.environment_id).await?;
        return Ok((env, b, None));
    }
    if let Some(tid) = &req.thread_id {
        let thread = super::threads::load(app, tid).await?;
        let env = load_env(app, &thread.environment_id).await?;
        let b = pick_binding(app, &env.id, thread.active_node_id.as_deref()).await?;
        return Ok((env, b, Some(thread.id)));
    }
    let env = load_env(app, req.environment.as_deref().unwrap_or_default()).await?;
    let node = match &req.node {
        Some(n) => Some(node_id(app, n).await?),
        None => None,
    };
    let b = pick_binding(app, &env.id, node.as_deref()).await?;
    if node.as_ref().is_some_and(|n| *n != b.node_id) {
        return Err(ApiError::conflict(format!(
            "environment {} is not bound to node {}",
            env.name,
            req.node.as_deref().unwrap_or_default()
        )));
    }
    Ok((env, b, None))
}

/// A node by id or name.
async fn node_id(app: &App, name: &str) -> ApiResult<String> {
    let nodes = app.store.list_nodes().await?;
    nodes
        .iter()
        .filter(|n| n.revoked_at.is_none())
        .find(|n| n.id == name)
        .or_else(|| {
            nodes
                .iter()
                .find(|n| n.revoked_at.is_none() && n.name == name)
        })
        .map(|n| n.id.clone())
        .ok_or_else(|| ApiError::validation(format!("unknown node {name:?}")))
}

/// Opens a terminal: a login shell kept in tmux (persistent) by default, or a command.
#[utoipa::path(
    post,
    path = "/terminals",
    operation_id = "openTerminal",
    tag = "terminals",
    request_body = OpenTerminal,
    responses(
        (status = 201, description = "Opened on the node", body = TerminalView),
        (status = 404, description = "No such binding, thread or environment", body = ErrorBody),
        (status = 409, description = "The binding is not prepared", body = ErrorBody),
        (status = 422, description = "Bad request, or the node has no terminals", body = ErrorBody),
        (status = 503, description = "The node is offline", body = ErrorBody),
        Errors,
    )
)]
pub async fn open(
    State(app): State<App>,
    headers: HeaderMap,
    Body(req): Body<OpenTerminal>,
) -> ApiResult<(StatusCode, Json<TerminalView>)> {
    let cols = side(req.cols, COLS, "cols")?;
    let rows = side(req.rows, ROWS, "rows")?;
    if req.command.iter().any(|a| a.contains('\0'))
        || req.command.first().is_some_and(|p| p.is_empty())
    {
        return Err(ApiError::validation(
            "command: a non-empty program, no NUL bytes",
        ));
    }
    let (env, binding, thread) = target(&app, &req).await?;
    if !runs_tasks(&binding, &env) {
        return Err(ApiError::conflict(format!(
            "environment {} is not prepared on node {}; prepare it first",
            env.name, binding.node_id
        )));
    }
    let Some(presence) = app.registry.presence(&binding.node_id) else {
        return Err(ApiError::unavailable(format!(
            "node {} is offline",
            binding.node_id
        )));
    };
    if !presence
        .info
        .capabilities
        .iter()
        .any(|c| c == TERMINAL_CAPABILITY)
    {
        return Err(ApiError::validation(format!(
            "node {} runs no terminals (it is older than this gateway)",
            binding.node_id
        )));
    }
    let rec = TerminalRecord {
        id: crypto::new_id("term"),
        node_id: binding.node_id.clone(),
        environment_id: env.id.clone(),
        binding_id: binding.id.clone(),
        thread_id: thread,
        persistent: req.persistent.unwrap_or(req.command.is_empty()),
        command: req.command.clone(),
        status: "running".into(),
        exit_code: None,
        error: None,
        created_at: now_ms(),
        ended_at: None,
    };
    let frame = open_frame(&app, &rec, cols, rows, req.echo.unwrap_or(true)).await?;
    app.store.insert_terminal(rec.clone()).await?;
    if !send(&app, &rec.node_id, frame).await {
        app.store
            .end_terminal(
                rec.id.clone(),
                "lost",
                None,
                Some("the node went offline".into()),
                now_ms(),
            )
            .await?;
        return Err(ApiError::unavailable("the node went offline"));
    }
    Ok((StatusCode::CREATED, Json(view(&app, &headers, &rec))))
}

#[utoipa::path(
    get,
    path = "/terminals",
    operation_id = "listTerminals",
    tag = "terminals",
    params(TerminalListQuery),
    responses((status = 200, description = "Terminals, newest first", body = TerminalList), Errors)
)]
pub async fn list(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<TerminalListQuery>,
) -> ApiResult<Json<TerminalList>> {
    let recs = app
        .store
        .list_terminals(q.binding_id, q.thread_id, q.all)
        .await?;
    Ok(Json(TerminalList {
        terminals: recs.iter().map(|t| view(&app, &headers, t)).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/terminals/{id}",
    operation_id = "getTerminal",
    tag = "terminals",
    params(("id" = String, Path, description = "Terminal id")),
    responses(
        (status = 200, description = "The terminal", body = TerminalView),
        (status = 404, description = "No such terminal", body = ErrorBody),
        Errors,
    )
)]
pub async fn get(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<TerminalView>> {
    Ok(Json(view(&app, &headers, &load(&app, &id).await?)))
}

/// Ends a terminal and what runs in it (its tmux session too).
#[utoipa::path(
    delete,
    path = "/terminals/{id}",
    operation_id = "closeTerminal",
    tag = "terminals",
    params(("id" = String, Path, description = "Terminal id")),
    responses(
        (status = 200, description = "Closed (or closing on its node)", body = TerminalView),
        (status = 404, description = "No such terminal", body = ErrorBody),
        Errors,
    )
)]
pub async fn close(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<TerminalView>> {
    let rec = load(&app, &id).await?;
    crate::gateway::terminals::close(&app, &rec, "closed").await?;
    Ok(Json(view(&app, &headers, &load(&app, &id).await?)))
}

/// The viewer WebSocket: output from `offset` on, keystrokes and sizes back.
#[utoipa::path(
    get,
    path = "/terminals/{id}/ws",
    operation_id = "attachTerminal",
    tag = "terminals",
    description = "A WebSocket upgrade. The gateway sends `ViewerEvent`s (output from `offset` \
        with its offset, `skipped` when bytes left the node's scrollback, `exit`), the viewer \
        sends `ViewerInput`s (`input`, `inputBytes`, `resize`). Reconnect with `offset` set \
        after the last byte received: nothing is lost or repeated. A board session passes its \
        CSRF token as `csrf`.",
    params(("id" = String, Path, description = "Terminal id"), AttachQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = ErrorBody),
        (status = 404, description = "No such terminal", body = ErrorBody),
        Errors,
    )
)]
pub async fn attach(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<AttachQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let rec = match load(&app, &id).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rej) => {
            return ApiError::new(rej.status(), "upgrade_required", rej.body_text()).into_response()
        }
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("terminal_viewer", terminal = %rec.id);
            tracing::Instrument::instrument(view_terminal(app, rec, q.offset, socket), span)
        })
}

fn text(e: &ViewerEvent) -> Message {
    Message::Text(serde_json::to_string(e).unwrap_or_default().into())
}

/// One viewer, until it leaves or the terminal ends.
async fn view_terminal(app: App, rec: TerminalRecord, offset: u64, socket: WebSocket) {
    let _tracked = app.connections.token();
    let (mut sink, mut stream) = socket.split();
    if rec.status != "running" {
        let _ = sink
            .send(text(&ViewerEvent::Exit {
                code: rec.exit_code,
            }))
            .await;
        let _ = sink.close().await;
        return;
    }
    let mut viewer = app.terminals.add_viewer(&rec.id, &rec.node_id, offset);
    let att = viewer.attachment_id.clone();
    if let Some(conn) = app.registry.conn_id(&rec.node_id) {
        if app.terminals.attached_on(&att, conn) {
            let frame = Frame::TerminalAttach {
                terminal_id: rec.id.clone(),
                attachment_id: att.clone(),
                offset,
            };
            send(&app, &rec.node_id, frame).await;
        }
    }
    let mut ping = tokio::time::interval(Duration::from_secs(20));
    let end = loop {
        tokio::select! {
            Some(event) = viewer.rx.recv() => {
                if sink.send(text(&event)).await.is_err() {
                    break None;
                }
            }
            _ = viewer.wake.notified() => {
                // Write what is queued first: a resync starts after it, the exit follows it.
                while let Ok(event) = viewer.rx.try_recv() {
                    if sink.send(text(&event)).await.is_err() {
                        break;
                    }
                }
                match app.terminals.woken(&att) {
                    Wake::Resync(offset) => {
                        let frame = Frame::TerminalAttach {
                            terminal_id: rec.id.clone(),
                            attachment_id: att.clone(),
                            offset,
                        };
                        send(&app, &rec.node_id, frame).await;
                    }
                    Wake::Exit(code, error) => {
                        if let Some(message) = error.filter(|_| code.is_none()) {
                            let _ = sink.send(text(&ViewerEvent::Error { message })).await;
                        }
                        break Some(ViewerEvent::Exit { code });
                    }
                    Wake::Nothing => {}
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(frames) = input_frames(&rec.id, t.as_str()) {
                        for frame in frames {
                            send(&app, &rec.node_id, frame).await;
                        }
                    } else {
                        let message = "expected {\"type\":\"input\"|\"inputBytes\"|\"resize\", ...}".to_string();
                        if sink.send(text(&ViewerEvent::Error { message })).await.is_err() {
                            break None;
                        }
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    for frame in typed(&rec.id, &b) {
                        send(&app, &rec.node_id, frame).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break None,
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
            _ = app.shutdown.cancelled() => break None,
        }
    };
    app.terminals.remove_viewer(&att);
    let detach = Frame::TerminalDetach {
        terminal_id: rec.id.clone(),
        attachment_id: att,
    };
    send(&app, &rec.node_id, detach).await;
    if let Some(event) = end {
        let _ = sink.send(text(&event)).await;
        let _ = sink.close().await;
    }
}

/// The node frames for one viewer message; None when it is not one.
fn input_frames(terminal_id: &str, text: &str) -> Option<Vec<Frame>> {
    Some(match serde_json::from_str::<ViewerInput>(text).ok()? {
        ViewerInput::Input { data } => typed(terminal_id, data.as_bytes()),
        ViewerInput::InputBytes { data } => typed(terminal_id, &data.0),
        ViewerInput::Resize { cols, rows } => vec![Frame::TerminalResize {
            terminal_id: terminal_id.to_string(),
            cols: cols.clamp(1, MAX_SIDE),
            rows: rows.clamp(1, MAX_SIDE),
        }],
    })
}

/// Keystrokes as `terminal:input` frames, a large paste cut so each frame stays far under
/// the node link's frame limit (a viewer message may be as large as that limit).
fn typed(terminal_id: &str, bytes: &[u8]) -> Vec<Frame> {
    bytes
        .chunks(MAX_OUTPUT_CHUNK)
        .map(|c| Frame::TerminalInput {
            terminal_id: terminal_id.to_string(),
            data: Bytes64(c.to_vec()),
        })
        .collect()
}
