//! Terminals (`/api/terminals`) and the messages on a terminal's viewer WebSocket
//! (`/api/terminals/:id/ws`).
//!
//! The viewer socket speaks JSON text both ways. The gateway sends [`ViewerEvent`]s: output
//! with the offset of its first byte (a viewer that reconnects with `?offset=` the offset
//! after the last byte it got misses nothing and sees nothing twice), a `skipped` marker when
//! the bytes it asked for left the node's scrollback ring, and `exit` when the process ended
//! and the viewer has all of its output. The viewer sends [`ViewerInput`]s: keystrokes and
//! window sizes. Closing the socket detaches; the terminal goes on.

use serde::{Deserialize, Serialize};

use crate::protocol::terminal::Bytes64;

/// `POST /api/terminals`: open a terminal on an environment's binding or a thread's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OpenTerminal {
    /// A binding to open it on (its node and working dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub binding_id: Option<String>,
    /// A thread: its environment's binding on the thread's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub thread_id: Option<String>,
    /// An environment (name or id): its binding on `node`, or the first ready one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub environment: Option<String>,
    /// With `environment`: the node (name or id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub node: Option<String>,
    /// The program and its arguments (default: a login shell, kept in tmux).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 1000)]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 1000)]
    pub rows: Option<u16>,
    /// Keep it in tmux so it outlives the node's restart (default: true for a shell, false
    /// for a command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub persistent: Option<bool>,
    /// Echo input (default true; false suits a command fed from a pipe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub echo: Option<bool>,
}

/// `GET /api/terminals?bindingId=&threadId=&all=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct TerminalListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// Include terminals that ended (default: only running ones).
    #[serde(default)]
    pub all: bool,
}

/// One terminal.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct TerminalView {
    pub id: String,
    pub node_id: String,
    pub binding_id: String,
    pub environment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub thread_id: Option<String>,
    /// Empty for a shell.
    pub command: Vec<String>,
    pub persistent: bool,
    /// `running`, `exited`, or `lost` (its node no longer has it).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
    /// TCP ports its processes listen on (as its node last reported).
    pub ports: Vec<u16>,
    /// Where its ports are previewed: `<previewUrl><port>/`, on the previews' own origin.
    pub preview_url: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ended_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct TerminalList {
    pub terminals: Vec<TerminalView>,
}

/// `GET /api/terminals/:id/ws?offset=`: where to start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct AttachQuery {
    /// The offset of the first byte wanted (0: all the scrollback the node still has).
    #[serde(default)]
    pub offset: u64,
    /// A board session's CSRF token (a browser cannot send headers on a WebSocket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

/// Gateway -> viewer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ViewerEvent {
    /// Bytes of output starting at `offset`; `data` is base64.
    Output {
        offset: u64,
        #[cfg_attr(test, ts(type = "string"))]
        data: Bytes64,
    },
    /// Bytes `from..to` are gone from the node's scrollback; output goes on at `to`.
    Skipped { from: u64, to: u64 },
    /// The process ended and every byte of its output was sent.
    Exit {
        #[cfg_attr(test, ts(optional = nullable))]
        code: Option<i32>,
    },
    /// Something went wrong (the node went away, the terminal is unknown); the socket closes.
    Error { message: String },
}

/// Viewer -> gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ViewerInput {
    /// Keystrokes, as text.
    Input {
        data: String,
    },
    /// Keystrokes or piped bytes, base64 (for bytes that are not UTF-8).
    InputBytes {
        #[cfg_attr(test, ts(type = "string"))]
        data: Bytes64,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
}
