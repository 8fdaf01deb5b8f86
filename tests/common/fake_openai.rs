//! Scripted fakes of LLM providers, speaking their real streaming wire formats:
//! - OpenAI-compatible Chat Completions (`POST /v1/chat/completions`): SSE `data:` chunks with
//!   `choices[0].delta`, tool calls whose arguments arrive in pieces, `finish_reason`, a usage
//!   chunk, then `data: [DONE]`;
//! - Anthropic Messages (`POST /v1/messages`): named SSE events (`message_start`,
//!   `content_block_start/delta/stop`, `message_delta`, `message_stop`) with `input_json_delta`
//!   pieces for tool input;
//! - OpenAI Responses (`POST /v1/responses`, what Codex speaks): named SSE events
//!   (`response.created`, `response.output_item.added/done`, `response.output_text.delta`,
//!   `response.completed` with usage).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// One scripted answer.
pub enum Reply {
    /// A streamed completion made of these chunk objects.
    Stream(Vec<Value>),
    /// An HTTP error with an optional `retry-after` (seconds).
    Status(u16, Option<&'static str>),
    /// A raw event-stream body, for broken streams.
    Raw(&'static str),
    /// Like `Stream`, but the body goes out in two TCP writes, 50 ms apart, cut in the
    /// middle of the first multi-byte character.
    SplitStream(Vec<Value>),
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<(HeaderMap, Value)>>,
    /// When each request arrived and when its whole response was handed to the socket.
    timings: Mutex<Vec<(std::time::Instant, std::time::Instant)>>,
    /// Answer chat requests without tools (OpenCode's session titles) with a title, outside
    /// the script.
    titles: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
pub struct FakeOpenAi {
    inner: Arc<Inner>,
    pub base_url: String,
}

fn chunk(delta: Value, finish: Option<&str>) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "fake",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
}

/// A text answer whose body reaches the node in two reads split inside a character.
pub fn text_split_in_a_character(s: &str) -> Reply {
    match text(s) {
        Reply::Stream(chunks) => Reply::SplitStream(chunks),
        _ => unreachable!(),
    }
}

/// A text answer, streamed in two pieces.
pub fn text(s: &str) -> Reply {
    let mid = s.len() / 2;
    let mid = (0..=mid).rev().find(|i| s.is_char_boundary(*i)).unwrap();
    Reply::Stream(vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": &s[..mid]}), None),
        chunk(json!({"content": &s[mid..]}), None),
        chunk(json!({}), Some("stop")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}),
    ])
}

/// An Anthropic text answer, in two deltas.
pub fn anthropic_text(s: &str) -> Reply {
    let mid = (0..=s.len() / 2)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap();
    Reply::Stream(vec![
        json!({"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "content": [], "usage": {"input_tokens": 21, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": &s[..mid]}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": &s[mid..]}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    ])
}

/// An Anthropic answer with a short text block, then a tool_use block whose input JSON
/// arrives in pieces.
pub fn anthropic_tool(id: &str, name: &str, input: Value) -> Reply {
    let a = input.to_string();
    let half = a.len() / 2;
    Reply::Stream(vec![
        json!({"type": "message_start", "message": {"id": "msg_2", "role": "assistant", "content": [], "usage": {"input_tokens": 20, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me look."}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": &a[..half]}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": &a[half..]}}),
        json!({"type": "content_block_stop", "index": 1}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 15}}),
        json!({"type": "message_stop"}),
    ])
}

/// One tool call whose JSON arguments arrive in three pieces.
pub fn tool_call(id: &str, name: &str, args: Value) -> Reply {
    let a = args.to_string();
    let (x, y) = (a.len() / 3, 2 * a.len() / 3);
    let piece = |s: &str| {
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": s}}]}),
            None,
        )
    };
    Reply::Stream(vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            None,
        ),
        piece(&a[..x]),
        piece(&a[x..y]),
        piece(&a[y..]),
        chunk(json!({}), Some("tool_calls")),
    ])
}

/// A Responses API answer: one assistant message, its text in two deltas.
pub fn responses_text(s: &str) -> Reply {
    let mid = (0..=s.len() / 2)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap();
    let item = json!({"type": "message", "id": "msg_t", "role": "assistant", "status": "completed",
                      "content": [{"type": "output_text", "text": s, "annotations": []}]});
    let mut events = vec![
        json!({"type": "response.created", "response": {"id": "resp_t"}}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "message", "id": "msg_t", "role": "assistant",
                        "status": "in_progress", "content": []}}),
    ];
    for piece in [&s[..mid], &s[mid..]] {
        events.push(
            json!({"type": "response.output_text.delta", "item_id": "msg_t",
                           "output_index": 0, "content_index": 0, "delta": piece}),
        );
    }
    events.extend(responses_end(item));
    Reply::Stream(events)
}

/// A Responses API answer that calls a function tool (Codex's `exec_command` takes
/// `{"cmd": "..."}`).
pub fn responses_call(call_id: &str, name: &str, args: Value) -> Reply {
    let item = json!({"type": "function_call", "id": format!("fc_{call_id}"), "call_id": call_id,
                      "name": name, "arguments": args.to_string(), "status": "completed"});
    let mut added = item.clone();
    added["arguments"] = json!("");
    let mut events = vec![
        json!({"type": "response.created", "response": {"id": "resp_c"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
    ];
    events.extend(responses_end(item));
    Reply::Stream(events)
}

/// A Responses API answer that calls a freeform tool (Codex's `apply_patch`).
pub fn responses_custom(call_id: &str, name: &str, input: &str) -> Reply {
    let item = json!({"type": "custom_tool_call", "id": format!("ctc_{call_id}"), "call_id": call_id,
                      "name": name, "input": input, "status": "completed"});
    let mut added = item.clone();
    added["input"] = json!("");
    let mut events = vec![
        json!({"type": "response.created", "response": {"id": "resp_p"}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
    ];
    events.extend(responses_end(item));
    Reply::Stream(events)
}

fn responses_end(item: Value) -> Vec<Value> {
    vec![
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        json!({"type": "response.completed", "response": {"id": "resp", "usage": {
            "input_tokens": 100, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 120}}}),
    ]
}

impl FakeOpenAi {
    pub async fn start(script: Vec<Reply>) -> FakeOpenAi {
        let inner = Arc::new(Inner {
            script: Mutex::new(script.into()),
            ..Default::default()
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/v1/messages", post(named_events))
            .route("/v1/responses", post(named_events))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeOpenAi {
            inner,
            base_url: format!("http://{addr}/v1"),
        }
    }

    /// From now on, chat requests without tools (a client's title generation) get a title
    /// and are neither scripted nor recorded.
    pub fn answer_titles(&self) {
        self.inner
            .titles
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Base URL for an Anthropic client (which appends `/v1/messages`).
    pub fn anthropic_base(&self) -> String {
        self.base_url.trim_end_matches("/v1").to_string()
    }

    pub fn header(&self, i: usize, name: &str) -> Option<String> {
        self.inner.requests.lock().unwrap()[i]
            .0
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    /// (request received, response produced) per request, in order.
    pub fn timings(&self) -> Vec<(std::time::Instant, std::time::Instant)> {
        self.inner.timings.lock().unwrap().clone()
    }

    /// The request bodies received, in order.
    /// Replaces the replies still to come (for a script that names paths known only after
    /// the node started).
    pub fn set_script(&self, script: Vec<Reply>) {
        *self.inner.script.lock().unwrap() = script.into();
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub fn authorization(&self, i: usize) -> Option<String> {
        self.inner.requests.lock().unwrap()[i]
            .0
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
    }
}

async fn complete(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: String) -> Response {
    let received = std::time::Instant::now();
    let res = respond(&inner, headers, body);
    inner
        .timings
        .lock()
        .unwrap()
        .push((received, std::time::Instant::now()));
    res
}

fn respond(inner: &Inner, headers: HeaderMap, body: String) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    if inner.titles.load(std::sync::atomic::Ordering::Relaxed) && parsed.get("tools").is_none() {
        let Reply::Stream(chunks) = text("A title") else {
            unreachable!()
        };
        return ([("content-type", "text/event-stream")], openai_sse(chunks)).into_response();
    }
    inner.requests.lock().unwrap().push((headers, parsed));
    let next = inner.script.lock().unwrap().pop_front();
    match next {
        None => (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
        Some(Reply::Status(code, retry_after)) => {
            let mut res = (
                StatusCode::from_u16(code).unwrap(),
                json!({"error": {"message": "scripted"}}).to_string(),
            )
                .into_response();
            if let Some(r) = retry_after {
                res.headers_mut().insert("retry-after", r.parse().unwrap());
            }
            res
        }
        Some(Reply::Raw(body)) => ([("content-type", "text/event-stream")], body).into_response(),
        Some(Reply::Stream(chunks)) => {
            ([("content-type", "text/event-stream")], openai_sse(chunks)).into_response()
        }
        Some(Reply::SplitStream(chunks)) => {
            let sse = openai_sse(chunks).into_bytes();
            let cut = sse
                .iter()
                .position(|b| *b >= 0xc0)
                .expect("a multi-byte character to cut")
                + 1;
            let (first, second) = (sse[..cut].to_vec(), sse[cut..].to_vec());
            let parts = futures_util::stream::unfold(0, move |i| {
                let (first, second) = (first.clone(), second.clone());
                async move {
                    match i {
                        0 => Some((Ok::<_, std::io::Error>(first), 1)),
                        1 => {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Some((Ok(second), 2))
                        }
                        _ => None,
                    }
                }
            });
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(parts),
            )
                .into_response()
        }
    }
}

/// An OpenAI-style event stream of these chunks, ending with `[DONE]`.
fn openai_sse(chunks: Vec<Value>) -> String {
    let mut sse = String::new();
    for c in chunks {
        sse.push_str(&format!("data: {c}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    sse
}

/// Anthropic's and the Responses API's streams: SSE events named by their `type`.
async fn named_events(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    inner.requests.lock().unwrap().push((headers, parsed));
    let next = inner.script.lock().unwrap().pop_front();
    match next {
        Some(Reply::Stream(events)) => {
            let mut sse = String::new();
            for e in events {
                sse.push_str(&format!(
                    "event: {}\ndata: {e}\n\n",
                    e["type"].as_str().unwrap()
                ));
            }
            ([("content-type", "text/event-stream")], sse).into_response()
        }
        // An error body both APIs' clients read their message from.
        Some(Reply::Status(code, _)) => (
            StatusCode::from_u16(code).unwrap(),
            [("content-type", "application/json")],
            json!({"type": "error", "error": {"type": "authentication_error",
                   "message": "Incorrect API key provided", "code": "invalid_api_key"}})
            .to_string(),
        )
            .into_response(),
        Some(Reply::SplitStream(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "split streams are scripted for OpenAI only",
        )
            .into_response(),
        Some(Reply::Raw(body)) => ([("content-type", "text/event-stream")], body).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
    }
}
