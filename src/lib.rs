//! viber: a self-hosted control plane for running AI coding agents on your own machines.
//!
//! One binary, several roles: [`gateway`] (coordinator, API, board), [`node`] (worker
//! daemon) and the client subcommands in [`cli`]. Every WebSocket frame between them is a
//! [`protocol::Frame`]; all SQL lives in [`store`].

pub mod cli;
pub mod clock;
pub mod crypto;
pub mod gateway;
pub mod node;
pub mod os;
pub mod protocol;
pub mod secrets;
pub mod store;
pub mod text;
pub mod tls;

/// This build's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
