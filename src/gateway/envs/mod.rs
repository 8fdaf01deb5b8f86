//! Environments on the gateway: checking requests (`input`), sealing secrets (`secrets`),
//! the binding life cycle (`prepare`) and validation by a node (`validate`).
//!
//! The HTTP handlers live in `http/environments.rs` and `http/bindings.rs`; this module holds
//! what they and the node link share. It never runs scripts, opens repositories or touches a
//! node's files: those are requests to a node.

pub mod input;
mod prepare;
mod secrets;
mod validate;

pub use prepare::{apply_state, binding_phase, on_node_connected, prepare_lost, send_prepare};
pub use secrets::{seal_secrets, unseal_secrets};
pub use validate::{complete as validated, validate, Validations};
