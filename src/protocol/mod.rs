//! Every shape that crosses a process boundary. This module: the control protocol, i.e.
//! every WebSocket frame exchanged between a gateway and a node. Beside it: `api` (REST
//! request bodies and response views), `events` (`/api/events`), `node_config` (what a node
//! pulls), `task` (task states, outcome, executor kinds, options), `env` (environment
//! payloads and path rules), `names` (string enums), `ui` and `sse` (AI SDK UI chunks).
//! Nothing here depends on `gateway`, `node`, `store` or `cli`; they all depend on it.
//!
//! One enum, [`Frame`], serialized as a JSON object whose `type` field names the variant
//! (`task:submit`, `heartbeat`, ...) and whose other fields are camelCase. Both sides encode
//! and decode with [`Frame::encode`] and [`Frame::decode`]; nothing else in the code base
//! builds frame JSON by hand.
//!
//! Connection life cycle (modelled on OpenClaw's gateway handshake):
//!
//! ```text
//! gateway                                  node
//!    | -- challenge {nonce, protocol} ------> |
//!    | <----- connect {protocol range, nodeId, token, publicKey, nonce, signature, ...}
//!    | -- hello-ok {heartbeatIntervalMs, ...}>|   (or `error` + close 1008 when refused)
//!    | <----------- heartbeat {status} ------ |   every heartbeatIntervalMs
//!    | -- ping --> / <-- pong                 |   every 2 intervals: the gateway's sign of life
//!    |                                        |   (a node drops a gateway silent for 5, the
//!    |                                        |   gateway a node silent for 3)
//!    | -- task:submit ----------------------> |
//!    | <-- task:started / task:stream-chunk / task:completed | task:error  (each with a seq)
//!    | -- task:ack {taskId, seq} -----------> |   cumulative: everything <= seq is durable
//!    | -- task:message / task:approval / config:push {commandId, ...} -> | stored until acked,
//!    | <----- command:ack {commandId, error?} |   resent after a reconnect, applied once
//! ```
//!
//! The seed's `connected {viber}` frame is folded into `connect`: the node describes itself
//! (name, version, platform, capabilities) in the same frame that authenticates it.

pub mod api;
#[cfg(test)]
mod board_types;
pub mod codec;
pub mod env;
pub mod events;
mod handshake;
pub mod names;
pub mod node_config;
pub mod sse;
pub mod task;
pub mod terminal;
pub mod ui;
pub mod worktree;

pub use env::*;
pub use handshake::*;
pub use task::*;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// Newest protocol revision this build speaks. A node sends the range it supports in
/// `connect`; the gateway answers with the newest revision both speak in `hello-ok`.
/// - 1: the first revision.
/// - 2: adds `task:stream-chunks`, several consecutive chunks of one task in one frame.
pub const PROTOCOL_VERSION: u32 = 2;
/// Oldest protocol revision this build still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// The first revision with `task:stream-chunks`.
pub const BATCH_PROTOCOL: u32 = 2;
/// Most chunks in one `task:stream-chunks` frame.
pub const MAX_BATCH_CHUNKS: usize = 1024;
/// Most bytes of chunk JSON in one `task:stream-chunks` frame: half the frame limit, so
/// the frame's own fields never push it over.
pub const MAX_BATCH_BYTES: usize = MAX_FRAME_BYTES / 2;

/// Largest WebSocket message either side accepts. Larger ones close the socket with 1009.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// WebSocket close codes used by viber besides the standard ones.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The peer is going away (graceful shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation: authentication refused or frame before handshake.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Another connection authenticated as the same node.
    pub const REPLACED: u16 = 4000;
    /// The node missed its heartbeats.
    pub const TIMEOUT: u16 = 4001;
    /// The node was revoked by an operator.
    pub const REVOKED: u16 = 4003;
}

/// Every frame on the gateway <-> node WebSocket, in both directions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum Frame {
    /// Gateway -> node, first frame of every connection.
    #[serde(rename = "challenge")]
    Challenge {
        nonce: String,
        protocol: u32,
        server_version: String,
    },
    /// Node -> gateway, the answer to the challenge.
    #[serde(rename = "connect")]
    Connect(Connect),
    /// Gateway -> node, the handshake succeeded.
    #[serde(rename = "hello-ok")]
    HelloOk(HelloOk),
    /// Gateway -> node: a node that connected without a token proved its key and now waits
    /// for an operator to approve it (device pairing). `hello-ok` with its node token follows
    /// on the same connection once approved; an `error` (`pairing_rejected`,
    /// `pairing_expired`) once rejected or expired. `ping` frames keep the wait alive.
    #[serde(rename = "pairing:pending")]
    PairingPending(PairingPending),
    /// Either direction: a refusal (followed by a close when the peer is not authenticated)
    /// or a complaint about one frame (the connection stays up).
    #[serde(rename = "error")]
    Error(ErrorFrame),
    /// Node -> gateway, every `heartbeatIntervalMs`.
    #[serde(rename = "heartbeat")]
    Heartbeat { status: NodeStatus },
    #[serde(rename = "ping")]
    Ping {},
    #[serde(rename = "pong")]
    Pong {},

    /// Gateway -> node: run a task. `task:create` is accepted as an alias.
    #[serde(rename = "task:submit", alias = "task:create")]
    TaskSubmit(TaskSubmit),
    /// Node -> gateway: the task's process started.
    #[serde(rename = "task:started")]
    TaskStarted { task_id: String, seq: u64 },
    /// Node -> gateway: one AI SDK UI message chunk (see [`ui::UiChunk`]). The chunk is
    /// kept as the JSON text it arrived as: the gateway stores and relays it without parsing
    /// it into a tree and writing it out again (build one with [`Frame::chunk`]).
    #[serde(rename = "task:stream-chunk")]
    TaskStreamChunk {
        task_id: String,
        seq: u64,
        chunk: Box<RawValue>,
    },
    /// Node -> gateway (protocol 2): consecutive chunks of one task, the first with `seq`,
    /// each next one with the next seq. Sent instead of a run of `task:stream-chunk` when
    /// output comes faster than it leaves (see [`batch_chunks`]).
    #[serde(rename = "task:stream-chunks")]
    TaskStreamChunks {
        task_id: String,
        seq: u64,
        chunks: Vec<Box<RawValue>>,
    },
    /// Node -> gateway: a progress envelope that is not part of the chat stream.
    #[serde(rename = "task:progress")]
    TaskProgress { task_id: String, event: Value },
    /// Node -> gateway: the task finished successfully.
    #[serde(rename = "task:completed")]
    TaskCompleted {
        task_id: String,
        seq: u64,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        result: Option<String>,
    },
    /// Node -> gateway: the task failed, or was stopped when `stopped` is true.
    #[serde(rename = "task:error")]
    TaskError {
        task_id: String,
        seq: u64,
        error: String,
        #[serde(default)]
        exit_code: Option<i32>,
        #[serde(default)]
        stopped: bool,
    },
    /// Gateway -> node: every reliable frame of this task up to `seq` is stored.
    #[serde(rename = "task:ack")]
    TaskAck { task_id: String, seq: u64 },
    /// Gateway -> node: stop the task (SIGINT, SIGTERM, SIGKILL with grace).
    #[serde(rename = "task:stop")]
    TaskStop { task_id: String },
    /// Gateway -> node: a follow-up message for a running task. A command (see
    /// [`Frame::CommandAck`]) when it carries a `commandId`.
    #[serde(rename = "task:message")]
    TaskMessage {
        task_id: String,
        message: String,
        #[serde(default)]
        injection_mode: InjectionMode,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_id: Option<String>,
    },
    /// Gateway -> node: the operator's answer to a `tool-approval-request`. A command when
    /// it carries a `commandId`.
    #[serde(rename = "task:approval")]
    TaskApproval {
        task_id: String,
        approval_id: String,
        approved: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_id: Option<String>,
    },
    /// Node -> gateway: the command `commandId` was applied (or refused, with `error`). The
    /// gateway stores each command until this arrives and sends it again after a reconnect;
    /// the node applies a command id once, however often it arrives.
    #[serde(rename = "command:ack")]
    CommandAck {
        command_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },

    /// Gateway -> node: materialize an environment binding and run its setup.
    #[serde(rename = "environment:prepare")]
    EnvironmentPrepare(PrepareEnvironment),
    /// Node -> gateway: a binding's state changed.
    #[serde(rename = "environment:status")]
    EnvironmentStatus(BindingState),
    /// Node -> gateway: setup output, already redacted.
    #[serde(rename = "environment:log")]
    EnvironmentLog { binding_id: String, text: String },
    /// Node -> gateway, after connecting: the last known state of each of its bindings.
    #[serde(rename = "environment:sync")]
    EnvironmentSync { bindings: Vec<BindingState> },
    /// Gateway -> node: check an environment's setup script and repository.
    #[serde(rename = "environment:validate")]
    EnvironmentValidate(ValidateEnvironment),
    /// Node -> gateway: the checks of an `environment:validate`.
    #[serde(rename = "environment:validated")]
    EnvironmentValidated(ValidationReport),
    /// Gateway -> node: pull `/api/vibers/:id/config` and validate it. A command when it
    /// carries a `commandId`.
    #[serde(rename = "config:push")]
    ConfigPush {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command_id: Option<String>,
    },
    /// Node -> gateway: the validations of the pulled config.
    #[serde(rename = "config:ack")]
    ConfigAck(ConfigAck),

    /// Gateway -> node: start a terminal (see [`terminal`]).
    #[serde(rename = "terminal:open")]
    TerminalOpen(Box<terminal::TerminalOpen>),
    /// Node -> gateway: every terminal the node holds, after connecting and on each change.
    #[serde(rename = "terminal:list")]
    TerminalList {
        terminals: Vec<terminal::TerminalState>,
    },
    /// Gateway -> node: send a viewer the output from `offset` on (again: move its cursor).
    #[serde(rename = "terminal:attach")]
    TerminalAttach {
        terminal_id: String,
        attachment_id: String,
        offset: u64,
    },
    /// Gateway -> node: a viewer left.
    #[serde(rename = "terminal:detach")]
    TerminalDetach {
        terminal_id: String,
        attachment_id: String,
    },
    /// Gateway -> node: keystrokes.
    #[serde(rename = "terminal:input")]
    TerminalInput {
        terminal_id: String,
        data: terminal::Bytes64,
    },
    /// Gateway -> node: the viewer's window size.
    #[serde(rename = "terminal:resize")]
    TerminalResize {
        terminal_id: String,
        cols: u16,
        rows: u16,
    },
    /// Node -> gateway: output for one attachment, from `offset`. `skippedFrom` says the
    /// bytes from there to `offset` left the scrollback before this viewer got them.
    #[serde(rename = "terminal:output")]
    TerminalOutput {
        terminal_id: String,
        attachment_id: String,
        offset: u64,
        data: terminal::Bytes64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skipped_from: Option<u64>,
    },
    /// Node -> gateway: the terminal's process ended and this attachment has all its output,
    /// up to `offset` (a viewer the gateway is moving elsewhere ignores it; absent when the
    /// attachment failed outright).
    #[serde(rename = "terminal:exit")]
    TerminalExit {
        terminal_id: String,
        attachment_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Gateway -> node: end the terminal (its tmux session too).
    #[serde(rename = "terminal:close")]
    TerminalClose { terminal_id: String },

    /// Node -> gateway: a thread's worktree exists (created, or found after a restart).
    #[serde(rename = "worktree:state")]
    WorktreeState(worktree::WorktreeState),
    /// Gateway -> node: a git operation on a thread's worktree (diff, commit, push, sync,
    /// remove), answered by `git:result`.
    #[serde(rename = "git:request")]
    GitRequest(Box<worktree::GitRequest>),
    /// Node -> gateway: the answer to a `git:request`.
    #[serde(rename = "git:result")]
    GitResult(Box<worktree::GitResult>),

    /// Gateway -> node: open a TCP connection to `port` on the node's loopback, for a preview
    /// of what a terminal of `bindingId` serves there (only ports its processes listen on).
    #[serde(rename = "tunnel:open")]
    TunnelOpen {
        tunnel_id: String,
        binding_id: String,
        port: u16,
    },
    /// Either direction: bytes on a tunnel.
    #[serde(rename = "tunnel:data")]
    TunnelData {
        tunnel_id: String,
        data: terminal::Bytes64,
    },
    /// Either direction: the tunnel ended (with why, when it failed).
    #[serde(rename = "tunnel:close")]
    TunnelClose {
        tunnel_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// The `type` of every [`Frame`] variant, used to tell an unknown frame type apart from a
/// known one with bad fields. A unit test keeps it in step with the enum.
pub const FRAME_TYPES: &[&str] = &[
    "challenge",
    "connect",
    "hello-ok",
    "pairing:pending",
    "error",
    "heartbeat",
    "ping",
    "pong",
    "task:submit",
    "task:create",
    "task:started",
    "task:stream-chunk",
    "task:stream-chunks",
    "task:progress",
    "task:completed",
    "task:error",
    "task:ack",
    "task:stop",
    "task:message",
    "task:approval",
    "command:ack",
    "environment:prepare",
    "environment:status",
    "environment:log",
    "environment:sync",
    "environment:validate",
    "environment:validated",
    "config:push",
    "config:ack",
    "terminal:open",
    "terminal:list",
    "terminal:attach",
    "terminal:detach",
    "terminal:input",
    "terminal:resize",
    "terminal:output",
    "terminal:exit",
    "terminal:close",
    "tunnel:open",
    "tunnel:data",
    "tunnel:close",
    "worktree:state",
    "git:request",
    "git:result",
];

/// Why a text message could not be turned into a [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, not an object, or no string `type`.
    Malformed(String),
    /// A `type` this build does not know.
    UnknownType(String),
    /// A known `type` whose fields are missing or of the wrong type.
    Invalid { frame_type: String, reason: String },
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Malformed(_) => ErrorCode::BadFrame,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
            DecodeError::Invalid { .. } => ErrorCode::InvalidFrame,
        }
    }

    /// The error frame that answers this decode failure.
    pub fn to_frame(&self) -> Frame {
        Frame::error(self.code(), self.to_string())
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(why) => write!(f, "malformed frame: {why}"),
            DecodeError::UnknownType(t) => write!(f, "unknown frame type {t:?}"),
            DecodeError::Invalid { frame_type, reason } => {
                write!(f, "invalid {frame_type:?} frame: {reason}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// `task:stream-chunk` and `task:stream-chunks` read straight from the text: a raw chunk
/// cannot come out of the tree that the other frames are read through (nor out of serde's
/// internally tagged enums).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChunkFrame {
    #[serde(rename = "type")]
    kind: String,
    task_id: String,
    seq: u64,
    #[serde(default)]
    chunk: Option<Box<RawValue>>,
    #[serde(default)]
    chunks: Option<Vec<Box<RawValue>>>,
}

const CHUNK_TYPE: &str = "task:stream-chunk";
const CHUNKS_TYPE: &str = "task:stream-chunks";

impl ChunkFrame {
    /// The frame, or why this is not one (`kind` is one of the two chunk types).
    fn into_frame(self) -> Result<Frame, String> {
        let ChunkFrame {
            kind,
            task_id,
            seq,
            chunk,
            chunks,
        } = self;
        match (kind.as_str(), chunk, chunks) {
            (CHUNK_TYPE, Some(chunk), None) => Ok(Frame::TaskStreamChunk {
                task_id,
                seq,
                chunk,
            }),
            (CHUNKS_TYPE, None, Some(chunks)) => {
                if chunks.is_empty() || chunks.len() > MAX_BATCH_CHUNKS {
                    return Err(format!(
                        "`chunks` must hold 1 to {MAX_BATCH_CHUNKS} chunks, not {}",
                        chunks.len()
                    ));
                }
                if seq.checked_add(chunks.len() as u64).is_none() {
                    return Err("`seq` plus the number of chunks overflows".into());
                }
                Ok(Frame::TaskStreamChunks {
                    task_id,
                    seq,
                    chunks,
                })
            }
            (CHUNK_TYPE, None, _) => Err("missing field `chunk`".into()),
            (CHUNKS_TYPE, _, None) => Err("missing field `chunks`".into()),
            _ => Err("unexpected field: a chunk frame has `chunk` and a batch `chunks`".into()),
        }
    }
}

/// Folds each run of `task:stream-chunk` frames of one task with consecutive seqs into
/// `task:stream-chunks` frames (at most [`MAX_BATCH_CHUNKS`] chunks and
/// [`MAX_BATCH_BYTES`] of chunk JSON each); other frames and lone chunks stay as they are,
/// in order. For a peer that speaks [`BATCH_PROTOCOL`].
pub fn batch_chunks(frames: Vec<Frame>) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::with_capacity(frames.len());
    let mut run_bytes = 0usize;
    for frame in frames {
        let Frame::TaskStreamChunk {
            task_id,
            seq,
            chunk,
        } = frame
        else {
            out.push(frame);
            continue;
        };
        let len = chunk.get().len();
        let joined = match out.last_mut() {
            Some(Frame::TaskStreamChunk {
                task_id: t,
                seq: s,
                chunk: c,
            }) if *t == task_id && s.checked_add(1) == Some(seq) => {
                if c.get().len() + len <= MAX_BATCH_BYTES {
                    run_bytes = c.get().len() + len;
                    let first = std::mem::replace(c, empty_raw());
                    let (t, s) = (std::mem::take(t), *s);
                    *out.last_mut().expect("just matched") = Frame::TaskStreamChunks {
                        task_id: t,
                        seq: s,
                        chunks: vec![first, chunk],
                    };
                    None
                } else {
                    Some(chunk)
                }
            }
            Some(Frame::TaskStreamChunks {
                task_id: t,
                seq: s,
                chunks,
            }) if *t == task_id && s.checked_add(chunks.len() as u64) == Some(seq) => {
                if chunks.len() < MAX_BATCH_CHUNKS && run_bytes + len <= MAX_BATCH_BYTES {
                    run_bytes += len;
                    chunks.push(chunk);
                    None
                } else {
                    Some(chunk)
                }
            }
            _ => Some(chunk),
        };
        if let Some(chunk) = joined {
            out.push(Frame::TaskStreamChunk {
                task_id,
                seq,
                chunk,
            });
        }
    }
    out
}

fn empty_raw() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

impl Frame {
    /// A `task:stream-chunk` carrying `chunk`.
    pub fn chunk(task_id: impl Into<String>, seq: u64, chunk: &impl Serialize) -> Frame {
        Frame::TaskStreamChunk {
            task_id: task_id.into(),
            seq,
            // Serializing a chunk (string keys only) cannot fail.
            chunk: serde_json::value::to_raw_value(chunk).expect("chunk serializes"),
        }
    }

    /// Parses one WebSocket text message.
    pub fn decode(text: &str) -> Result<Frame, DecodeError> {
        // The relay's hot path: a chunk is read in one pass, its chunk left as text.
        if text.contains(CHUNK_TYPE) {
            if let Ok(c) = serde_json::from_str::<ChunkFrame>(text) {
                if c.kind == CHUNK_TYPE || c.kind == CHUNKS_TYPE {
                    let frame_type = c.kind.clone();
                    return c
                        .into_frame()
                        .map_err(|reason| DecodeError::Invalid { frame_type, reason });
                }
            }
        } else if let Ok(frame) = serde_json::from_str::<Frame>(text) {
            // Every other frame (a heartbeat, say) read in one pass too; one that does not
            // read so is read again below, for an error that says what is wrong with it.
            return Ok(frame);
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let frame_type = match value.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(DecodeError::Malformed("`type` is not a string".into())),
            None if value.is_object() => {
                return Err(DecodeError::Malformed("missing `type`".into()))
            }
            None => return Err(DecodeError::Malformed("not a JSON object".into())),
        };
        if !FRAME_TYPES.contains(&frame_type.as_str()) {
            return Err(DecodeError::UnknownType(frame_type));
        }
        if frame_type == CHUNK_TYPE || frame_type == CHUNKS_TYPE {
            let reason = match serde_json::from_str::<ChunkFrame>(text) {
                Err(e) => e.to_string(),
                Ok(_) => "not a chunk frame".into(),
            };
            return Err(DecodeError::Invalid { frame_type, reason });
        }
        serde_json::from_value(value).map_err(|e| DecodeError::Invalid {
            frame_type,
            reason: e.to_string(),
        })
    }

    /// Serializes the frame to the JSON text sent on the socket.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).expect("frame serializes")
    }

    /// The wire name of this frame, for logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Frame::Challenge { .. } => "challenge",
            Frame::Connect(_) => "connect",
            Frame::HelloOk(_) => "hello-ok",
            Frame::PairingPending(_) => "pairing:pending",
            Frame::Error(_) => "error",
            Frame::Heartbeat { .. } => "heartbeat",
            Frame::Ping {} => "ping",
            Frame::Pong {} => "pong",
            Frame::TaskSubmit(_) => "task:submit",
            Frame::TaskStarted { .. } => "task:started",
            Frame::TaskStreamChunk { .. } => "task:stream-chunk",
            Frame::TaskStreamChunks { .. } => "task:stream-chunks",
            Frame::TaskProgress { .. } => "task:progress",
            Frame::TaskCompleted { .. } => "task:completed",
            Frame::TaskError { .. } => "task:error",
            Frame::TaskAck { .. } => "task:ack",
            Frame::TaskStop { .. } => "task:stop",
            Frame::TaskMessage { .. } => "task:message",
            Frame::TaskApproval { .. } => "task:approval",
            Frame::CommandAck { .. } => "command:ack",
            Frame::EnvironmentPrepare(_) => "environment:prepare",
            Frame::EnvironmentStatus(_) => "environment:status",
            Frame::EnvironmentLog { .. } => "environment:log",
            Frame::EnvironmentSync { .. } => "environment:sync",
            Frame::EnvironmentValidate(_) => "environment:validate",
            Frame::EnvironmentValidated(_) => "environment:validated",
            Frame::ConfigPush { .. } => "config:push",
            Frame::ConfigAck(_) => "config:ack",
            Frame::TerminalOpen(_) => "terminal:open",
            Frame::TerminalList { .. } => "terminal:list",
            Frame::TerminalAttach { .. } => "terminal:attach",
            Frame::TerminalDetach { .. } => "terminal:detach",
            Frame::TerminalInput { .. } => "terminal:input",
            Frame::TerminalResize { .. } => "terminal:resize",
            Frame::TerminalOutput { .. } => "terminal:output",
            Frame::TerminalExit { .. } => "terminal:exit",
            Frame::TerminalClose { .. } => "terminal:close",
            Frame::TunnelOpen { .. } => "tunnel:open",
            Frame::TunnelData { .. } => "tunnel:data",
            Frame::TunnelClose { .. } => "tunnel:close",
            Frame::WorktreeState(_) => "worktree:state",
            Frame::GitRequest(_) => "git:request",
            Frame::GitResult(_) => "git:result",
        }
    }

    /// Makes this frame a command with id `id` (see [`Frame::CommandAck`]); frames that are
    /// not commands are left as they are.
    pub fn set_command_id(&mut self, id: String) {
        match self {
            Frame::TaskMessage { command_id, .. }
            | Frame::TaskApproval { command_id, .. }
            | Frame::ConfigPush { command_id } => *command_id = Some(id),
            _ => {}
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Frame {
        Frame::Error(ErrorFrame {
            code,
            message: message.into(),
        })
    }
}

#[cfg(test)]
mod tests;
