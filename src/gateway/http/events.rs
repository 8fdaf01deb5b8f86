//! `GET /api/events`: the gateway's event bus as Server-Sent Events (`event: <type>`).

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::stream::{sse_response, KEEPALIVE};
use crate::clock::{iso8601, now_ms};
use crate::gateway::App;
use crate::protocol::events::{Event, EventEnvelope};

/// One SSE event for an event that is not on the bus (`ready`, `gap`).
fn sse_event(event: Event) -> Bytes {
    let kind = event.kind();
    let json = serde_json::to_string(&EventEnvelope {
        event,
        at: iso8601(now_ms()),
    })
    .expect("events serialize");
    Bytes::from(format!("event: {kind}\ndata: {json}\n\n"))
}

/// `GET /api/events`: push-only gateway events as SSE (`event: <type>`).
pub async fn events(State(app): State<App>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let mut sub = app.events.subscribe();
    let tracked = app.connections.token();
    tokio::spawn(async move {
        let _tracked = tracked;
        let hello = sse_event(Event::Ready {
            nodes_online: app.registry.online_count() as u64,
        });
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
                Ok(ev) => Bytes::from(format!("event: {}\ndata: {}\n\n", ev.kind, ev.json)),
                Err(broadcast::error::RecvError::Lagged(n)) => sse_event(Event::Gap { missed: n }),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(bytes).await.is_err() {
                return;
            }
        }
    });
    sse_response(rx, false)
}
