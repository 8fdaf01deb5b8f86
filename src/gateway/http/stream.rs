//! `GET /api/tasks/:id/stream`: a task's chunks as a Vercel AI SDK UI message stream (SSE,
//! `id: <seq>` per chunk so `Last-Event-ID` resumes, `[DONE]` at the end). Replays what is
//! stored (all of it: nothing is truncated), then follows the task hub's live broadcast.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
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
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let tracked = app.connections.token();
    tokio::spawn(async move {
        let _tracked = tracked;
        let _watching = watching;
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

pub fn sse_response(mut rx: mpsc::Receiver<Bytes>, ui_stream: bool) -> Response {
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

/// Most bytes one write to a watcher gathers from the live broadcast.
const FLUSH_AT: usize = 256 * 1024;

/// The most bytes [`put_event`] writes for `chunk` (its seq at most 20 digits).
fn event_len(chunk: &str) -> usize {
    b"id: \ndata: \n\n".len() + 20 + chunk.len()
}

fn put_event(buf: &mut BytesMut, seq: u64, chunk: &str) {
    buf.put_slice(b"id: ");
    buf.put_slice(itoa::Buffer::new().format(seq).as_bytes());
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

/// A page of a replay: the events read, the last seq among them, and whether there may be
/// more to read.
struct ReplayPage {
    events: BytesMut,
    last: Option<u64>,
    read: u32,
    more: bool,
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
        // Pages of at most REPLAY_PAGE chunks and FLUSH_AT bytes (or one bigger chunk),
        // written as events on the reading thread.
        let page = ReplayPage {
            events: BytesMut::with_capacity(64 * 1024),
            last: None,
            read: 0,
            more: false,
        };
        let mut page = app
            .store
            .fold_chunks_after(id.to_string(), after, page, move |p, seq, chunk| {
                if seq as i64 > upto {
                    return false;
                }
                // A chunk that would take a page past FLUSH_AT starts the next one.
                if p.read > 0 && p.events.len() + event_len(chunk) > FLUSH_AT {
                    p.more = true;
                    return false;
                }
                put_event(&mut p.events, seq, chunk);
                p.last = Some(seq);
                p.read += 1;
                p.more = p.read == REPLAY_PAGE;
                !p.more
            })
            .await?;
        let Some(last) = page.last else {
            return Ok(Some(after));
        };
        after = last as i64;
        if !flush(tx, &mut page.events).await {
            return Ok(None);
        }
        if !page.more {
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
                    let _ = tx.send(Bytes::from_static(DONE)).await;
                }
                return Ok(());
            }
            app.tasks.live(&app.store, id).await?;
            continue;
        };
        let rx = sub.rx;
        match replay(app, id, after, sub.committed, tx).await? {
            Some(a) => after = a,
            None => return Ok(()),
        }
        let mut buf = BytesMut::with_capacity(sub.pending.iter().map(|(_, c)| event_len(c)).sum());
        for (seq, chunk) in &sub.pending {
            if *seq as i64 > after {
                put_event(&mut buf, *seq, chunk);
                after = *seq as i64;
            }
        }
        if !flush(tx, &mut buf).await {
            return Ok(());
        }
        match follow_live(app, id, rx, after, tx).await? {
            Following::Lagged(a) => after = a,
            Following::Done => return Ok(()),
        }
    }
}

/// How following the live broadcast ended.
enum Following {
    /// The stream is finished (`[DONE]` sent) or the client went away.
    Done,
    /// Fell behind the live buffer after sending up to this seq: catch up from SQLite and
    /// resubscribe.
    Lagged(i64),
}

/// Follows a task's live broadcast after `after`, coalescing whatever is already queued
/// into one write, until the task ends, the client leaves or the watcher lags.
async fn follow_live(
    app: &App,
    id: &str,
    mut rx: broadcast::Receiver<Live>,
    mut after: i64,
    tx: &mpsc::Sender<Bytes>,
) -> anyhow::Result<Following> {
    let mut buf = BytesMut::new();
    // One timer for the whole stream, moved only when it fires: not one per wakeup.
    let keepalive = tokio::time::sleep(KEEPALIVE);
    tokio::pin!(keepalive);
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = &mut keepalive => {
                let due = last_sent + KEEPALIVE;
                if due > tokio::time::Instant::now() {
                    keepalive.as_mut().reset(due);
                    continue;
                }
                if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                    return Ok(Following::Done);
                }
                last_sent = tokio::time::Instant::now();
                keepalive.as_mut().reset(last_sent + KEEPALIVE);
                continue;
            }
        };
        last_sent = tokio::time::Instant::now();
        let (ended, lagged) = drain_queued(&mut rx, first, &mut buf, &mut after);
        if !flush(tx, &mut buf).await {
            return Ok(Following::Done);
        }
        if ended {
            // Chunks committed but broadcast before we subscribed are already sent;
            // anything after `after` that only reached SQLite is replayed here.
            if replay(app, id, after, i64::MAX, tx).await?.is_some() {
                let _ = tx.send(Bytes::from_static(DONE)).await;
            }
            return Ok(Following::Done);
        }
        if lagged {
            return Ok(Following::Lagged(after));
        }
    }
}

/// Puts `first` and every event already queued behind it into `buf` (up to [`FLUSH_AT`]).
/// Returns whether the task ended and whether the receiver lagged.
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
                    if buf.is_empty() {
                        // Room for what is queued, taking this chunk's size for each: a
                        // flood's write is not copied again each time it doubles.
                        let queued = event_len(&chunk) * (rx.len() + 1);
                        buf.reserve(queued.min(FLUSH_AT + event_len(&chunk)));
                    }
                    put_event(buf, seq, &chunk);
                    *after = seq as i64;
                }
            }
            Ok(Live::End) => ended = true,
            Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
            Err(broadcast::error::RecvError::Closed) => ended = true,
        }
        if ended || lagged || buf.len() > FLUSH_AT {
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
