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
pub use secrets::{check_secret_file, seal_secrets, unseal_secrets, Owner};
pub use validate::{complete as validated, validate, Validations};

use crate::gateway::error::ApiResult;
use crate::gateway::App;
use crate::protocol::TaskOptions;
use crate::store::{BindingRecord, EnvironmentRecord};

/// What a process on `binding` runs with (a thread's task, a terminal): the binding's
/// working dir, the environment's variables, working mode, network (with the hosts allowed
/// for `thread`) and container, and the thread's worktree.
pub async fn run_options(
    app: &App,
    env: &EnvironmentRecord,
    binding: &BindingRecord,
    thread: Option<&str>,
) -> ApiResult<TaskOptions> {
    let vars = app.store.effective_vars(env.id.clone()).await?;
    // The environment may set the agent's working mode (metadata.workingMode).
    let working_mode = serde_json::from_str::<serde_json::Value>(&env.metadata)
        .ok()
        .and_then(|m| serde_json::from_value(m["workingMode"].clone()).ok());
    let thread_hosts = match thread {
        Some(t) => app.store.thread_allowed_hosts(t.to_string()).await?,
        None => Vec::new(),
    };
    let worktree = match thread {
        Some(t) => crate::gateway::worktrees::spec(app, env, binding, t).await?,
        None => None,
    };
    Ok(TaskOptions {
        cwd: binding.resolved_working_dir.clone(),
        env: vars,
        working_mode,
        network_access: Some(env.network_access),
        // The environment's hosts, then those allowed for this thread (one list, checked).
        network_allowlist: input::check_allowlist(
            &[input::allowlist_of(env), thread_hosts].concat(),
        )?,
        container: input::container_of(env, &binding.id),
        worktree,
        ..TaskOptions::default()
    })
}
