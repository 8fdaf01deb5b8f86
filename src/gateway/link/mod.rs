//! The node link: the WebSocket endpoint (`/ws`) that nodes dial, from handshake to goodbye.
//!
//! - [`handshake`]: challenge, `connect`, authentication and enrollment, `hello-ok` or a
//!   typed refusal.
//! - [`pairing`]: a node without a token waits on its connection for an operator's
//!   approval.
//! - [`session`]: one connection's lifetime and its loop (read, write queued frames, ping,
//!   liveness), in one tracing span per connection.
//! - [`dispatch`]: what each frame from an authenticated node does.
//! - [`registry`]: who is connected, and the queue into each connection ([`Outgoing`]).
//!
//! Framing (size limit, close codes, typed read errors) is `protocol::codec`, shared with
//! the node. Owns: node sockets and presence. Must not touch: SQL except through
//! `store::Store`; never imports `node::` (the client side of the handshake is
//! `node::handshake`). Other gateway parts talk to a node only by queueing [`Outgoing`]
//! frames through [`Registry::sender`] or [`kick`].

mod dispatch;
mod handshake;
mod pairing;
pub(super) mod registry;
mod session;

pub use handshake::{ENROLLMENT_PREFIX, NODE_TOKEN_PREFIX};
pub use pairing::{Decision, Pairings};
pub use registry::{kick, NodeConn, Outgoing, Presence, Registry};
pub use session::{__path_upgrade, upgrade};
