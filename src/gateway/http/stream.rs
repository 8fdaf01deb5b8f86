//! `GET /api/tasks/:id/stream`: a task's chunks as a Vercel AI SDK UI message stream (SSE,
//! `id: <seq>` per chunk so `Last-Event-ID` resumes, `[DONE]` at the end). Replays what is
//! stored (all of it: nothing is truncated), then follows the task hub's live broadcast.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{broadcast, mpsc};

use super::openapi::Errors;
use super::tasks::load;
use crate::gateway::error::{ApiError, ApiResult, Path, Query};
use crate::gateway::tasks::Live;
use crate::gateway::App;
use crate::protocol::api::StreamQuery;
use crate::protocol::ui::STREAM_HEADER;

/// The end of a UI message stream.
const DONE: &[u8] = b"data: [DONE]\n\n";
/// Chunks read from SQLite per replay page.
const REPLAY_PAGE: u32 = 2000;
/// Comment sent on an idle SSE stream so proxies keep it open.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// `GET /api/tasks/:id/stream`: the task's chunks as an AI SDK UI message stream.
#[utoipa::path(
    get,
    path = "/tasks/{id}/stream",
    operation_id = "streamTask",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "Task id"),
        StreamQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this chunk sequence number"),
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `id: <seq>` and `data: <AI SDK UI chunk JSON>` per chunk, `data: [DONE]` when the task has ended",
            content_type = "text/event-stream", body = super::openapi::TaskStreamEvent),
        (status = 404, description = "No such task", body = crate::protocol::api::ErrorBody),
        (status = 429, description = "Too many streams open", body = crate::protocol::api::ErrorBody),
        Errors,
    )
)]
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
    let watching = app.limits.watch(Some(&id))?;
    let pump = TaskPump {
        _tracked: app.connections.token(),
        _watching: watching,
        app,
        id,
        after,
        follow,
        phase: Phase::Start,
        keepalive: Box::pin(tokio::time::sleep(KEEPALIVE)),
        last_sent: tokio::time::Instant::now(),
    };
    // The HTTP connection's own task runs the pump as it polls the body: no task or queue
    // between the task's broadcast and the socket.
    let body = futures_util::stream::unfold(pump, |mut p| async move {
        p.next().await.map(|b| (Ok::<_, Infallible>(b), p))
    });
    Ok(sse_headers(
        Response::new(HttpBody::from_stream(body)),
        true,
    ))
}

pub fn sse_response(mut rx: mpsc::Receiver<Bytes>, ui_stream: bool) -> Response {
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    });
    sse_headers(Response::new(HttpBody::from_stream(body)), ui_stream)
}

fn sse_headers(mut res: Response, ui_stream: bool) -> Response {
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
    buf.put_slice(itoa::Buffer::new().format(seq).as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(chunk.as_bytes());
    buf.put_slice(b"\n\n");
}

/// Where a task stream is.
enum Phase {
    /// Not following the task yet (or again, after falling behind its live buffer).
    Start,
    /// Sending stored chunks after `after` up to `upto`; then the tail accepted but not yet
    /// stored and the live broadcast, if following, else `[DONE]` when `done`.
    Replay {
        upto: i64,
        live: Option<(broadcast::Receiver<Live>, Vec<(u64, Arc<str>)>)>,
        done: bool,
    },
    /// Following the task's broadcast.
    Live(broadcast::Receiver<Live>),
    Done,
}

/// One watcher's stream of a task, run by the HTTP connection as it polls the body: replays
/// what is stored, then follows the task hub's broadcast, resuming from SQLite when it falls
/// behind, until `[DONE]`, the client going away (the body is dropped) or shutdown.
struct TaskPump {
    app: App,
    id: String,
    /// The last seq sent.
    after: i64,
    follow: bool,
    phase: Phase,
    /// One timer for the whole stream, moved only when it fires.
    keepalive: std::pin::Pin<Box<tokio::time::Sleep>>,
    last_sent: tokio::time::Instant,
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
    _watching: crate::gateway::limits::Watching,
}

impl TaskPump {
    /// The next bytes to send, or `None` at the end.
    async fn next(&mut self) -> Option<Bytes> {
        let shutdown = self.app.shutdown.clone();
        let out = tokio::select! {
            r = self.step() => r,
            _ = shutdown.cancelled() => Ok(None),
        };
        let out = out.unwrap_or_else(|e| {
            tracing::error!(task = %self.id, error = format!("{e:#}"), "task stream failed");
            None
        });
        if out.is_none() {
            self.phase = Phase::Done;
        } else {
            self.last_sent = tokio::time::Instant::now();
        }
        out
    }

    async fn step(&mut self) -> anyhow::Result<Option<Bytes>> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return Ok(None),
                Phase::Start => self.start().await?,
                Phase::Replay { upto, live, done } => {
                    let (page, more) = self.replay_page(upto).await?;
                    if more {
                        self.phase = Phase::Replay { upto, live, done };
                        return Ok(Some(page));
                    }
                    let mut buf = BytesMut::from(&page[..]);
                    match live {
                        Some((rx, pending)) => {
                            for (seq, chunk) in &pending {
                                if *seq as i64 > self.after {
                                    put_event(&mut buf, *seq, chunk);
                                    self.after = *seq as i64;
                                }
                            }
                            self.phase = Phase::Live(rx);
                        }
                        None if done => buf.put_slice(DONE),
                        None => {}
                    }
                    if !buf.is_empty() {
                        return Ok(Some(buf.freeze()));
                    }
                }
                Phase::Live(rx) => {
                    if let Some(bytes) = self.follow_live(rx).await {
                        return Ok(Some(bytes));
                    }
                }
            }
        }
    }

    /// Subscribes to the live task, or, when it is not live here, sets up the replay of
    /// what is stored.
    async fn start(&mut self) -> anyhow::Result<()> {
        if self.follow {
            if let Some(sub) = self.app.tasks.subscribe(&self.id) {
                self.phase = Phase::Replay {
                    upto: sub.committed,
                    live: Some((sub.rx, sub.pending)),
                    done: false,
                };
                return Ok(());
            }
        }
        // Not live here. Either it ended, or this gateway restarted and its node has not
        // spoken of it yet: load it so the node's frames reach us, then subscribe.
        let rec = self.app.store.task(self.id.clone()).await?;
        let ended = rec.as_ref().is_none_or(|r| r.state.is_terminal());
        if ended || !self.follow {
            self.phase = Phase::Replay {
                upto: i64::MAX,
                live: None,
                done: ended,
            };
        } else {
            self.app.tasks.live(&self.app.store, &self.id).await?;
            self.phase = Phase::Start;
        }
        Ok(())
    }

    /// One page of stored chunks after `after`, up to `upto`; and whether more may follow.
    async fn replay_page(&mut self, upto: i64) -> anyhow::Result<(Bytes, bool)> {
        let rows = self
            .app
            .store
            .chunks_after(self.id.clone(), self.after, REPLAY_PAGE)
            .await?;
        let mut buf = BytesMut::new();
        for (seq, chunk) in &rows {
            if *seq as i64 > upto {
                return Ok((buf.freeze(), false));
            }
            put_event(&mut buf, *seq, chunk);
            self.after = *seq as i64;
        }
        Ok((buf.freeze(), rows.len() == REPLAY_PAGE as usize))
    }

    /// Waits for the task's next live events and takes what else is queued, or sends a
    /// keepalive after [`KEEPALIVE`] of silence. Sets the next phase: still live, the
    /// end (the rest from SQLite, then `[DONE]`), or a new start after falling behind.
    async fn follow_live(&mut self, mut rx: broadcast::Receiver<Live>) -> Option<Bytes> {
        let first = loop {
            tokio::select! {
                r = rx.recv() => break r,
                _ = &mut self.keepalive => {
                    let due = self.last_sent + KEEPALIVE;
                    if due <= tokio::time::Instant::now() {
                        self.keepalive.as_mut().reset(tokio::time::Instant::now() + KEEPALIVE);
                        self.phase = Phase::Live(rx);
                        return Some(Bytes::from_static(b": keepalive\n\n"));
                    }
                    self.keepalive.as_mut().reset(due);
                }
            }
        };
        let mut buf = BytesMut::new();
        let (ended, lagged) = drain_queued(&mut rx, first, &mut buf, &mut self.after);
        self.phase = if ended {
            // Chunks committed but broadcast before we subscribed are already sent;
            // anything after `after` that only reached SQLite is replayed now.
            Phase::Replay {
                upto: i64::MAX,
                live: None,
                done: true,
            }
        } else if lagged {
            Phase::Start
        } else {
            Phase::Live(rx)
        };
        (!buf.is_empty()).then(|| buf.freeze())
    }
}

/// Takes the first event and what else is queued now into `buf` (up to 256 KiB). Returns
/// (the task ended, the watcher fell behind the live buffer).
fn drain_queued(
    rx: &mut broadcast::Receiver<Live>,
    first: Result<Live, broadcast::error::RecvError>,
    buf: &mut BytesMut,
    after: &mut i64,
) -> (bool, bool) {
    let mut next = Some(first);
    let (mut ended, mut lagged) = (false, false);
    while let Some(item) = next.take() {
        match item {
            Ok(Live::Chunk(seq, chunk)) => {
                if seq as i64 > *after {
                    put_event(buf, seq, &chunk);
                    *after = seq as i64;
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
    (ended, lagged)
}
