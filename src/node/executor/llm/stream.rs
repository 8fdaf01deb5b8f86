//! Assembling one streamed model response and its AI SDK UI chunks.
//!
//! Owns: reading a provider's response body as Server-Sent Events ([`read_stream`]), and the
//! [`StepAssembler`] that turns text, reasoning and tool-call pieces into `text-*`,
//! `reasoning-*` and `tool-input-*` chunks as they arrive, and into one [`Step`] at the end.
//!
//! Must not touch: provider field names (each wire API decodes its own events and calls the
//! assembler), HTTP requests and retries, the conversation, tool execution and approvals.

use futures_util::StreamExt;
use serde_json::Value;

use super::provider::WireApi;
use crate::node::executor::Run;
use crate::protocol::sse::SseParser;
use crate::protocol::ui::UiChunk;

/// A tool call being assembled from stream deltas.
#[derive(Default, Debug)]
pub(super) struct PendingCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
    announced: bool,
}

/// Tokens a model call consumed.
#[derive(Default, Debug, Clone, Copy)]
pub(super) struct Usage {
    pub input: u64,
    pub output: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.input += other.input;
        self.output += other.output;
    }
}

/// One model response.
pub(super) struct Step {
    pub text: String,
    pub calls: Vec<PendingCall>,
    pub usage: Usage,
}

/// Assembles one model response from stream events of either provider, emitting UI chunks
/// as they arrive.
pub(super) struct StepAssembler<'r, 'a> {
    run: &'r Run<'a>,
    text_id: &'r str,
    reasoning_id: &'r str,
    text: String,
    text_open: bool,
    reasoning_open: bool,
    calls: Vec<PendingCall>,
    /// Set by the wire API as usage figures arrive.
    pub usage: Usage,
    /// Set by the wire API when the provider says the response is complete.
    pub finished: bool,
}

impl<'r, 'a> StepAssembler<'r, 'a> {
    fn new(run: &'r Run<'a>, text_id: &'r str, reasoning_id: &'r str) -> Self {
        StepAssembler {
            run,
            text_id,
            reasoning_id,
            text: String::new(),
            text_open: false,
            reasoning_open: false,
            calls: Vec::new(),
            usage: Usage::default(),
            finished: false,
        }
    }

    pub fn text(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        if !self.text_open {
            self.text_open = true;
            self.run.emit.chunk(UiChunk::TextStart {
                id: self.text_id.into(),
            });
        }
        self.text.push_str(delta);
        self.run
            .emit
            .chunk(UiChunk::text_delta(self.text_id, delta));
    }

    pub fn reasoning(&mut self, delta: &str) {
        if delta.is_empty() {
            return;
        }
        if !self.reasoning_open {
            self.reasoning_open = true;
            self.run.emit.chunk(UiChunk::ReasoningStart {
                id: self.reasoning_id.into(),
            });
        }
        self.run.emit.chunk(UiChunk::ReasoningDelta {
            id: self.reasoning_id.into(),
            delta: delta.into(),
        });
    }

    /// How many tool call slots there are so far.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// A tool call's id and/or name (OpenAI sends them in pieces by index).
    pub fn tool(&mut self, index: usize, id: Option<&str>, name: Option<&str>) {
        while self.calls.len() <= index {
            self.calls.push(PendingCall::default());
        }
        let call = &mut self.calls[index];
        if let Some(id) = id {
            call.id = id.to_string();
        }
        if let Some(name) = name {
            call.name.push_str(name);
        }
        if !call.announced && !call.id.is_empty() && !call.name.is_empty() {
            call.announced = true;
            self.run.emit.chunk(UiChunk::ToolInputStart {
                tool_call_id: call.id.clone(),
                tool_name: call.name.clone(),
            });
            if !call.arguments.is_empty() {
                self.run.emit.chunk(UiChunk::ToolInputDelta {
                    tool_call_id: call.id.clone(),
                    input_text_delta: call.arguments.clone(),
                });
            }
        }
    }

    pub fn tool_args(&mut self, index: usize, delta: &str) {
        if delta.is_empty() {
            return;
        }
        self.tool(index, None, None);
        let call = &mut self.calls[index];
        call.arguments.push_str(delta);
        if call.announced {
            self.run.emit.chunk(UiChunk::ToolInputDelta {
                tool_call_id: call.id.clone(),
                input_text_delta: delta.into(),
            });
        }
    }

    /// Ends the text and reasoning parts still open (also when the stream broke off, so the
    /// UI never shows a part that never ends).
    fn close_parts(&mut self) {
        if std::mem::take(&mut self.reasoning_open) {
            self.run.emit.chunk(UiChunk::ReasoningEnd {
                id: self.reasoning_id.into(),
            });
        }
        if std::mem::take(&mut self.text_open) {
            self.run.emit.chunk(UiChunk::TextEnd {
                id: self.text_id.into(),
            });
        }
    }

    /// Closes open parts; a stream that never said it finished is an error.
    fn finish(mut self) -> Result<Step, String> {
        self.close_parts();
        if !self.finished {
            return Err("the model stream ended before the response was complete".into());
        }
        // Anthropic numbers tool calls by content block: text blocks leave empty slots.
        self.calls
            .retain(|c| !c.name.is_empty() || !c.arguments.is_empty());
        for (i, c) in self.calls.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = format!("call_{i}");
            }
            if !c.announced {
                c.announced = true;
                self.run.emit.chunk(UiChunk::ToolInputStart {
                    tool_call_id: c.id.clone(),
                    tool_name: c.name.clone(),
                });
            }
        }
        Ok(Step {
            text: self.text,
            calls: self.calls,
            usage: self.usage,
        })
    }
}

/// Reads one streamed response, emitting chunks as they arrive. Returns the text, the tool
/// calls and the token usage.
pub(super) async fn read_stream(
    wire: &dyn WireApi,
    res: reqwest::Response,
    run: &Run<'_>,
    text_id: &str,
    reasoning_id: &str,
) -> Result<Step, String> {
    let mut body = res.bytes_stream();
    // The parser decodes whole lines, so a character split between reads stays whole.
    let mut decoder = SseParser::default();
    let mut step = StepAssembler::new(run, text_id, reasoning_id);
    match read_events(wire, &mut body, &mut decoder, &mut step).await {
        Ok(()) => step.finish(),
        Err(e) => {
            step.close_parts();
            Err(e)
        }
    }
}

/// Feeds the stream's events to the step until the stream ends.
async fn read_events(
    wire: &dyn WireApi,
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    decoder: &mut SseParser,
    step: &mut StepAssembler<'_, '_>,
) -> Result<(), String> {
    while let Some(part) = body.next().await {
        let bytes = part.map_err(|e| format!("model stream broke off: {e}"))?;
        for ev in decoder.push_bytes(&bytes).map_err(|e| e.to_string())? {
            if ev.data.trim() == "[DONE]" {
                step.finished = true;
                continue;
            }
            let v: Value = serde_json::from_str(&ev.data)
                .map_err(|e| format!("malformed chunk in the model stream: {e}"))?;
            wire.on_event(step, &v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_reads_stays_whole() {
        let text = "héllo → ✓ 𝄞";
        let body = format!(
            "data: {}\n\n",
            serde_json::json!({"choices": [{"delta": {"content": text}}]})
        );
        let bytes = body.as_bytes();
        for cut in 0..=bytes.len() {
            // The parser decodes whole lines, so a character split between reads stays whole.
            let mut decoder = SseParser::default();
            let mut events = decoder.push_bytes(&bytes[..cut]).unwrap();
            events.extend(decoder.push_bytes(&bytes[cut..]).unwrap());
            assert_eq!(events.len(), 1, "cut at {cut}");
            let v: Value = serde_json::from_str(&events[0].data).unwrap();
            assert_eq!(v["choices"][0]["delta"]["content"], text, "cut at {cut}");
        }
    }
}
