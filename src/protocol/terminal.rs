//! Terminals on a node: the `terminal:*` frames' payloads (seed `protocol.md`, section 6).
//!
//! A terminal is a process under a pseudo-terminal on the node, in an environment binding's
//! working dir and sandbox. Its output is one byte stream with absolute offsets, kept in a
//! ring on the node; every viewer is an *attachment* with its own cursor into that stream, so
//! viewers at different places (a new one replaying the scrollback, one resuming after a
//! dropped socket) each get exactly the bytes they have not seen, in order, once.
//!
//! ```text
//! gateway                                   node
//!    | -- terminal:open {terminalId, ...} ---> |   start it (in tmux when persistent)
//!    | <-- terminal:list {terminals} --------- |   after connecting and on every change
//!    | -- terminal:attach {attachmentId, offset} -> | (again to move a cursor, after a lag)
//!    | <-- terminal:output {attachmentId, offset, data} | from the attachment's cursor
//!    | -- terminal:input / terminal:resize ---> |
//!    | <-- terminal:exit {attachmentId, code} - |   after the last output of an attachment
//!    | -- terminal:detach / terminal:close ---> |
//! ```
//!
//! Bytes travel base64-encoded (the protocol is JSON text). Output is redacted on the node
//! before it enters the ring.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{SecretValue, TaskOptions};

/// Gateway -> node: start a terminal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalOpen {
    pub terminal_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The program and its arguments; empty for the user's login shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    pub cols: u16,
    pub rows: u16,
    /// Keep it in a tmux session that outlives the node's process (when tmux is installed).
    #[serde(default)]
    pub persistent: bool,
    /// Whether the terminal echoes input (off for a command run with piped stdin).
    #[serde(default = "yes")]
    pub echo: bool,
    /// Working dir, variables, network and container, as a task of the binding gets them.
    #[serde(default)]
    pub options: TaskOptions,
    /// The environment's runtime secrets: variables in the terminal, redacted from its output.
    #[serde(default)]
    pub secrets: Vec<SecretValue>,
}

fn yes() -> bool {
    true
}

/// Node -> gateway: one terminal as the node holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalState {
    pub terminal_id: String,
    /// False once its process exited.
    pub running: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it could not start or ended abnormally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// In a tmux session (it survives the node's restart).
    #[serde(default)]
    pub tmux: bool,
    /// The offset after the last byte of output so far.
    #[serde(default)]
    pub end_offset: u64,
    /// TCP ports its processes listen on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Found in tmux after the node restarted: its output streams again once the gateway
    /// sends its `terminal:open` (with the secrets to redact) again.
    #[serde(default)]
    pub adopted: bool,
}

/// Bytes in a frame: base64 on the wire, raw in memory.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes64(pub Vec<u8>);

impl std::fmt::Debug for Bytes64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes64({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map(Bytes64)
            .map_err(serde::de::Error::custom)
    }
}

/// The longest output carried by one `terminal:output` frame (well under the frame limit
/// once base64-encoded).
pub const MAX_OUTPUT_CHUNK: usize = 48 * 1024;
/// The scrollback each terminal keeps on the node, in bytes of output.
pub const RING_BYTES: usize = 1024 * 1024;

/// Checks a terminal or attachment id from the other side: ids become tmux session and
/// socket names on the node.
pub fn valid_terminal_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
