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

    /// Sends a text or reasoning delta unless the redactor held all of it back.
    fn send_delta(&self, delta: UiChunk) {
        if let UiChunk::TextDelta { delta: d, .. } | UiChunk::ReasoningDelta { delta: d, .. } =
            &delta
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

    /// Redacts the task's secrets from every string inside a JSON value.
    pub fn redact_value(&self, v: &mut serde_json::Value) {
        if let Some(r) = &self.redactor {
            redact_value(r, v);
        }
    }

    fn send_chunk(&self, value: serde_json::Value) {
        let task_id = self.task_id.clone();
        self.reliable(false, move |seq| Frame::TaskStreamChunk {
            task_id,
            seq,
            chunk: value,
        });
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

/// Redacts every string inside a JSON value.
fn redact_value(r: &Redactor, v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => *s = r.redact_str(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_value(r, x)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| redact_value(r, x)),
        _ => {}
    }
}
