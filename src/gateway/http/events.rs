//! `GET /api/events`: the gateway's event bus as Server-Sent Events (`event: <type>`).

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::openapi::Errors;
use super::stream::{sse_response, KEEPALIVE};
use crate::gateway::error::ApiResult;
use crate::gateway::events::Published;
use crate::gateway::App;
use crate::protocol::events::Event;

/// One event as an SSE message.
fn sse(p: &Published) -> Bytes {
    Bytes::from(format!("event: {}\ndata: {}\n\n", p.kind, p.json))
}

/// `GET /api/events`: push-only gateway events as SSE (`event: <type>`).
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "events",
    tag = "events",
    responses(
        (status = 200, description = "Server-Sent Events, never ending: `event: <type>` and `data: <EventEnvelope JSON>`; `ready` first",
            content_type = "text/event-stream", body = super::openapi::GatewayEvent),
        (status = 429, description = "Too many streams open", body = crate::protocol::api::ErrorBody),
        Errors,
    )
)]
pub async fn events(State(app): State<App>) -> ApiResult<Response> {
    let watching = app.limits.watch(None)?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut sub = app.events.subscribe();
    let tracked = app.connections.token();
    tokio::spawn(async move {
        let _tracked = tracked;
        let _watching = watching;
        let hello = sse(&Published::new(Event::Ready {
            nodes_online: app.registry.online_count() as u64,
        }));
        if tx.send(hello).await.is_err() {
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
                Ok(ev) => sse(&ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    sse(&Published::new(Event::Gap { missed: n }))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
    });
    Ok(sse_response(rx, false))
}
