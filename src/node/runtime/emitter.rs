//! A task's output on its way to the outbox.
//!
//! Owns: the [`Emitter`] an executor writes to: each UI chunk becomes a reliable
//! `task:stream-chunk` frame, with the task's secrets redacted (streaming redactors per open
//! text or reasoning part, whole-value redaction for everything else); conversation records
//! for the session log; the registration of approval requests.
//!
//! Must not touch: what the chunks say (executors decide), the task's lifecycle (`task.rs`),
//! frame delivery and acknowledgement (the outbox).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{lock, ApprovalAnswer, Inner};
use crate::protocol::ui::UiChunk;
use crate::protocol::Frame;
use crate::secrets::Redactor;

/// Hands an executor's chunks to the outbox of one task, redacting the task's secrets.
pub struct Emitter {
    inner: Arc<Inner>,
    task_id: String,
    /// None when the task has no secrets.
    redactor: Option<Redactor>,
    /// Streaming redactors of the open text and reasoning parts, by part id.
    parts: Mutex<HashMap<String, Redactor>>,
    /// The task's span: what the emitter logs belongs to the task wherever it is called from.
    span: tracing::Span,
}

impl Emitter {
    pub(super) fn new(
        inner: Arc<Inner>,
        task_id: String,
        secrets: &[String],
        span: tracing::Span,
    ) -> Emitter {
        let r = Redactor::new(secrets);
        Emitter {
            inner,
            task_id,
            redactor: (!r.is_empty()).then_some(r),
            parts: Mutex::new(HashMap::new()),
            span,
        }
    }

    pub(super) fn task_id(&self) -> &str {
        &self.task_id
    }

    pub fn chunk(&self, chunk: UiChunk) {
        let Some(template) = &self.redactor else {
            return self.send_chunk(chunk.to_value());
        };
        let mut parts = lock(&self.parts);
        match chunk {
            UiChunk::TextDelta { id, delta } => {
                let safe = parts
                    .entry(id.clone())
                    .or_insert_with(|| template.clone())
                    .push(&delta);
                drop(parts);
                self.send_delta(UiChunk::TextDelta { id, delta: safe });
            }
            UiChunk::ReasoningDelta { id, delta } => {
                let safe = parts
                    .entry(id.clone())
                    .or_insert_with(|| template.clone())
                    .push(&delta);
                drop(parts);
                self.send_delta(UiChunk::ReasoningDelta { id, delta: safe });
            }
            // Tool-call arguments stream too: one redactor per call, so a secret split
            // across two deltas is still caught; what it holds back goes out before the
            // complete input.
            UiChunk::ToolInputDelta {
                tool_call_id,
                input_text_delta,
            } => {
                let safe = parts
                    .entry(tool_call_id.clone())
                    .or_insert_with(|| template.clone())
                    .push(&input_text_delta);
                drop(parts);
                self.send_delta(UiChunk::ToolInputDelta {
                    tool_call_id,
                    input_text_delta: safe,
                });
            }
            UiChunk::ToolInputAvailable {
                ref tool_call_id, ..
            } => {
                let rest = parts
                    .remove(tool_call_id)
                    .map(|mut r| r.finish())
                    .unwrap_or_default();
                drop(parts);
                self.send_delta(UiChunk::ToolInputDelta {
                    tool_call_id: tool_call_id.clone(),
                    input_text_delta: rest,
                });
                let mut v = chunk.to_value();
                redact_value(template, &mut v);
                self.send_chunk(v);
            }
            UiChunk::TextEnd { ref id } | UiChunk::ReasoningEnd { ref id } => {
                let rest = parts.remove(id).map(|mut r| r.finish()).unwrap_or_default();
                drop(parts);
                self.send_delta(match &chunk {
                    UiChunk::TextEnd { id } => UiChunk::text_delta(id, rest),
                    _ => UiChunk::ReasoningDelta {
                        id: id.clone(),
                        delta: rest,
                    },
                });
                self.send_chunk(chunk.to_value());
            }
            other => {
                drop(parts);
                let mut v = other.to_value();
                redact_value(template, &mut v);
                self.send_chunk(v);
            }
        }
    }

    /// Sends a text, reasoning or tool-input delta unless the redactor held all of it back.
    fn send_delta(&self, delta: UiChunk) {
        if let UiChunk::TextDelta { delta: d, .. }
        | UiChunk::ReasoningDelta { delta: d, .. }
        | UiChunk::ToolInputDelta {
            input_text_delta: d,
            ..
        } = &delta
        {
            if d.is_empty() {
                return;
            }
        }
        self.send_chunk(delta.to_value());
    }

    /// Registers an approval request; the receiver gets (approved, reason) from the operator.
    pub fn await_approval(
        &self,
        approval_id: &str,
    ) -> tokio::sync::oneshot::Receiver<ApprovalAnswer> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.inner.approvals).insert(approval_id.to_string(), tx);
        rx
    }

    /// Records a conversation message in the task's session log.
    pub fn record(&self, message: &serde_json::Value) {
        let r = lock(&self.inner.outbox).note(&self.task_id, message);
        if let Err(e) = r {
            tracing::error!(parent: &self.span, error = %e, "writing session log");
        }
        self.inner.log_writer.wake();
    }

    /// Emits a `tool-approval-request` for `tool_call_id` and waits for the operator's
    /// answer (denied after `timeout`), then emits the response. None when `abort` fired
    /// first (the request is forgotten, no response is emitted).
    pub async fn request_approval(
        &self,
        tool_call_id: &str,
        timeout: std::time::Duration,
        abort: &tokio_util::sync::CancellationToken,
    ) -> Option<ApprovalAnswer> {
        let approval_id = crate::crypto::new_id("appr");
        let answer = self.await_approval(&approval_id);
        // Forgotten however the wait ends, also when this future is dropped (the allowlist
        // proxy stops with its process tree).
        struct Forget<'a>(&'a Emitter, &'a str, bool);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.drop_approval(self.1);
                if !self.2 {
                    // Abandoned: the request is closed, so nobody answers it later.
                    self.0.chunk(UiChunk::ToolApprovalResponse {
                        approval_id: self.1.to_string(),
                        approved: false,
                        reason: Some("the request was abandoned".into()),
                    });
                }
            }
        }
        let mut forget = Forget(self, &approval_id, false);
        self.chunk(UiChunk::ToolApprovalRequest {
            approval_id: approval_id.clone(),
            tool_call_id: tool_call_id.to_string(),
        });
        let (approved, reason) = tokio::select! {
            a = answer => a.unwrap_or((false, Some("the approval was dropped".into()))),
            _ = tokio::time::sleep(timeout) => {
                (false, Some(format!("no answer within {} s", timeout.as_secs())))
            }
            _ = abort.cancelled() => return None,
        };
        forget.2 = true;
        self.chunk(UiChunk::ToolApprovalResponse {
            approval_id: approval_id.clone(),
            approved,
            reason: reason.clone(),
        });
        Some((approved, reason))
    }

    /// Forgets an approval that timed out or was interrupted.
    pub fn drop_approval(&self, approval_id: &str) {
        lock(&self.inner.approvals).remove(approval_id);
    }

    /// Redacts the task's secrets from a complete string (e.g. tool output for the model).
    pub fn redact(&self, s: &str) -> String {
        match &self.redactor {
            Some(r) => r.redact_str(s),
            None => s.to_string(),
        }
    }

    /// Redacts a text that was cut short: an end that could be the start of a secret is
    /// dropped with the rest of the cut.
    pub fn redact_head(&self, s: &str) -> String {
        match &self.redactor {
            Some(r) => r.clone().push(s),
            None => s.to_string(),
        }
    }

    /// Redacts the task's secrets from every string inside a JSON value.
    pub fn redact_value(&self, v: &mut serde_json::Value) {
        if let Some(r) = &self.redactor {
            redact_value(r, v);
        }
    }

    fn send_chunk(&self, value: serde_json::Value) {
        for chunk in fit_chunk(value) {
            let task_id = self.task_id.clone();
            self.reliable(false, move |seq| Frame::chunk(task_id, seq, &chunk));
        }
    }

    /// Queues a reliable frame of this task; `last` for its final frame.
    pub(super) fn reliable(&self, last: bool, build: impl FnOnce(u64) -> Frame) {
        let pushed = lock(&self.inner.outbox).push(&self.task_id, last, build);
        if let Err(e) = pushed {
            tracing::error!(parent: &self.span, error = %e, "queueing a task frame");
        }
        // Sent once the log writer has it on disk.
        self.inner.log_writer.wake();
    }
}

/// Most bytes a chunk may take in one frame: well under the protocol's frame limit, which
/// closes the link when passed (and the node would send the same frame again after
/// reconnecting, for ever).
const MAX_CHUNK_BYTES: usize = crate::protocol::MAX_FRAME_BYTES / 2;
/// Size of the pieces a long text or reasoning delta is split into, and of what is kept of
/// a long string in any other chunk.
const PIECE_BYTES: usize = 64 * 1024;

/// Makes a chunk fit in frames: a long text or reasoning delta becomes several deltas of the
/// same part; any other chunk has its long strings cut, saying so. Chunks that fit, as
/// nearly all do, pass through untouched.
fn fit_chunk(mut v: serde_json::Value) -> Vec<serde_json::Value> {
    // JSON escaping at most sextuples a string (\u0000), so short chunks need no exact size.
    if string_bytes(&v) * 6 < MAX_CHUNK_BYTES || encoded_len(&v) <= MAX_CHUNK_BYTES {
        return vec![v];
    }
    let is_delta = matches!(v["type"].as_str(), Some("text-delta" | "reasoning-delta"));
    if let (true, Some(delta)) = (is_delta, v["delta"].as_str()) {
        return split_at_chars(delta, PIECE_BYTES)
            .into_iter()
            .map(|piece| {
                let mut c = v.clone();
                c["delta"] = serde_json::Value::String(piece.to_string());
                c
            })
            .collect();
    }
    cut_long_strings(&mut v);
    if encoded_len(&v) > MAX_CHUNK_BYTES {
        let ty = v["type"].as_str().unwrap_or("?").to_string();
        v = serde_json::json!({
            "type": "error",
            "errorText": format!("a {ty} chunk was too large to send and was left out"),
        });
    }
    vec![v]
}

fn encoded_len(v: &serde_json::Value) -> usize {
    serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
}

/// Bytes of every string (keys too) inside a JSON value.
fn string_bytes(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::String(s) => s.len(),
        serde_json::Value::Array(a) => a.iter().map(string_bytes).sum(),
        serde_json::Value::Object(m) => m.iter().map(|(k, x)| k.len() + string_bytes(x)).sum(),
        _ => 8,
    }
}

/// Pieces of at most `max` bytes, cut on character boundaries.
fn split_at_chars(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while rest.len() > max {
        let piece = crate::text::head(rest, max);
        out.push(piece);
        rest = &rest[piece.len()..];
    }
    out.push(rest);
    out
}

fn cut_long_strings(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.len() > PIECE_BYTES => {
            let total = s.len();
            let keep = crate::text::head(s, PIECE_BYTES).len();
            s.truncate(keep);
            s.push_str(&format!(
                "\n[cut: {total} bytes, too large for one frame; the first {keep} shown]"
            ));
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(cut_long_strings),
        serde_json::Value::Object(m) => m.values_mut().for_each(cut_long_strings),
        _ => {}
    }
}

/// Redacts every string inside a JSON value.
fn redact_value(r: &Redactor, v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = r.redact_str(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_value(r, x)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| redact_value(r, x)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_too_large_for_a_frame_are_split_or_cut() {
        let small = json!({"type": "text-delta", "id": "t", "delta": "hi"});
        assert_eq!(fit_chunk(small.clone()), vec![small]);

        // A long delta becomes several deltas of the same part, whole characters each.
        let text = "é😀x".repeat(200_000);
        let pieces = fit_chunk(json!({"type": "text-delta", "id": "t", "delta": text}));
        assert!(pieces.len() > 1);
        let joined: String = pieces
            .iter()
            .map(|p| p["delta"].as_str().unwrap())
            .collect();
        assert_eq!(joined, text);
        assert!(pieces
            .iter()
            .all(|p| p["id"] == "t" && encoded_len(p) <= MAX_CHUNK_BYTES));

        // A huge tool input keeps its shape with the long string cut, saying so.
        let big = "a".repeat(3 * MAX_CHUNK_BYTES);
        let cut = fit_chunk(json!({"type": "tool-input-available", "toolCallId": "c",
            "toolName": "write_file", "input": {"path": "f", "content": big}}));
        assert_eq!(cut.len(), 1);
        assert_eq!(cut[0]["input"]["path"], "f");
        assert!(cut[0]["input"]["content"]
            .as_str()
            .unwrap()
            .contains("[cut: "));
        assert!(encoded_len(&cut[0]) <= MAX_CHUNK_BYTES);

        // Control characters escape six-fold: still measured right.
        let nul = "\u{0}".repeat(MAX_CHUNK_BYTES / 4);
        let fitted = fit_chunk(json!({"type": "data-x", "data": nul}));
        assert!(encoded_len(&fitted[0]) <= MAX_CHUNK_BYTES);
    }

    /// Issue 12, item 7: a secret split across two tool-input deltas is still redacted.
    #[test]
    fn a_secret_split_across_tool_input_deltas_is_redacted() {
        let (dir, rt, emit) = super::super::testing::task_with_secret("ghp_split-secret-0042");
        let delta = |d: &str| UiChunk::ToolInputDelta {
            tool_call_id: "c1".into(),
            input_text_delta: d.into(),
        };
        emit.chunk(delta("{\"command\": \"curl -H 'token: ghp_split"));
        emit.chunk(delta("-secret-0042' https://x\"}"));
        emit.chunk(UiChunk::ToolInputAvailable {
            tool_call_id: "c1".into(),
            tool_name: "bash".into(),
            input: json!({"command": "curl -H 'token: ghp_split-secret-0042' https://x"}),
        });
        let frames = super::super::testing::queued(&rt);
        let mut streamed = String::new();
        for f in &frames {
            if let Frame::TaskStreamChunk { chunk, .. } = f {
                let chunk: serde_json::Value = serde_json::from_str(chunk.get()).unwrap();
                if chunk["type"] == "tool-input-delta" {
                    streamed.push_str(chunk["inputTextDelta"].as_str().unwrap());
                }
                assert!(!chunk.to_string().contains("split-secret"), "{chunk}");
            }
        }
        assert!(streamed.contains("[REDACTED]"), "{streamed}");
        assert!(streamed.ends_with("https://x\"}"), "{streamed}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
