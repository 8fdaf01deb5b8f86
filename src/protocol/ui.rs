//! Vercel AI SDK "UI message stream" chunks (protocol v1, as validated by the `ai` npm
//! package's `uiMessageChunkSchema`).
//!
//! Executors on a node produce these; the gateway stores them and relays them verbatim as
//! Server-Sent Events. Absent optional fields are omitted, never sent as `null`: the SDK's
//! schema rejects `null` for optional fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Response header that marks an SSE body as a UI message stream.
pub const STREAM_HEADER: (&str, &str) = ("x-vercel-ai-ui-message-stream", "v1");

/// The tool name of a network approval: a sandboxed task under `networkAccess: allowlist`
/// asking to reach a host its allowlist does not name (input `{host, port}`).
pub const NETWORK_TOOL: &str = "network";

/// Why a message finished (`finish.finishReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinishReason {
    Stop,
    Length,
    ContentFilter,
    ToolCalls,
    Error,
    Interrupted,
    Other,
}

/// The chunks viber's executors emit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum UiChunk {
    Start {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_metadata: Option<Value>,
    },
    StartStep,
    FinishStep,
    TextStart {
        id: String,
    },
    TextDelta {
        id: String,
        delta: String,
    },
    TextEnd {
        id: String,
    },
    ReasoningStart {
        id: String,
    },
    ReasoningDelta {
        id: String,
        delta: String,
    },
    ReasoningEnd {
        id: String,
    },
    ToolInputStart {
        tool_call_id: String,
        tool_name: String,
    },
    ToolInputDelta {
        tool_call_id: String,
        input_text_delta: String,
    },
    ToolInputAvailable {
        tool_call_id: String,
        tool_name: String,
        input: Value,
    },
    ToolOutputAvailable {
        tool_call_id: String,
        output: Value,
    },
    ToolOutputError {
        tool_call_id: String,
        error_text: String,
    },
    ToolOutputDenied {
        tool_call_id: String,
    },
    ToolApprovalRequest {
        approval_id: String,
        tool_call_id: String,
    },
    ToolApprovalResponse {
        approval_id: String,
        approved: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Error {
        error_text: String,
    },
    Abort {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    MessageMetadata {
        message_metadata: Value,
    },
    Finish {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finish_reason: Option<FinishReason>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_metadata: Option<Value>,
    },
}

impl UiChunk {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("chunk serializes")
    }

    pub fn text_delta(id: &str, delta: impl Into<String>) -> UiChunk {
        UiChunk::TextDelta {
            id: id.to_string(),
            delta: delta.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_fields_are_omitted_and_names_match_the_sdk() {
        assert_eq!(
            UiChunk::Start {
                message_id: None,
                message_metadata: None
            }
            .to_value(),
            json!({"type": "start"})
        );
        assert_eq!(UiChunk::StartStep.to_value(), json!({"type": "start-step"}));
        assert_eq!(
            UiChunk::text_delta("t", "hi").to_value(),
            json!({"type": "text-delta", "id": "t", "delta": "hi"})
        );
        assert_eq!(
            UiChunk::ToolOutputError {
                tool_call_id: "c".into(),
                error_text: "boom".into()
            }
            .to_value(),
            json!({"type": "tool-output-error", "toolCallId": "c", "errorText": "boom"})
        );
        assert_eq!(
            UiChunk::Finish {
                finish_reason: Some(FinishReason::ContentFilter),
                message_metadata: None
            }
            .to_value(),
            json!({"type": "finish", "finishReason": "content-filter"})
        );
    }
}
