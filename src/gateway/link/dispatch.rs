//! Frame dispatch: what the gateway does with each frame an authenticated node sends.
//!
//! Owns: the mapping from a node's frame to the gateway part that handles it (the task hub,
//! environments, the registry, events) and the answer frame, if any. Must not touch: the
//! socket (the session writes the answer), SQL other than through `store::Store`, and
//! anything under `node::`. Runs on the relay hot path: no per-frame spans or allocations
//! beyond what the handlers need.

use crate::clock::now_ms;
use crate::gateway::{commands, envs, tasks, terminals, worktrees, App};
use crate::protocol::events::Event;
use crate::protocol::{BindingState, ConfigAck, ErrorCode, Frame, NodeStatus};

/// Handles one frame from an authenticated node; returns a frame to answer with, if any.
pub(super) async fn handle_frame(
    app: &App,
    node_id: &str,
    conn_id: u64,
    frame: Frame,
) -> Option<Frame> {
    match frame {
        Frame::Heartbeat { status } => {
            heartbeat(app, node_id, conn_id, status).await;
            None
        }
        frame @ (Frame::TaskStarted { .. }
        | Frame::TaskStreamChunk { .. }
        | Frame::TaskStreamChunks { .. }
        | Frame::TaskCompleted { .. }
        | Frame::TaskError { .. }) => app.tasks.ingest(&app.store, node_id, frame).await,
        Frame::EnvironmentStatus(state) => env_result(envs::apply_state(app, node_id, state).await),
        Frame::EnvironmentSync { bindings } => {
            sync_bindings(app, node_id, bindings).await;
            None
        }
        Frame::EnvironmentLog { binding_id, text } => {
            binding_log(app, node_id, binding_id, text).await
        }
        Frame::ConfigAck(ack) => {
            config_ack(app, node_id, ack).await;
            None
        }
        Frame::TaskProgress { task_id, event } => progress(app, node_id, task_id, event).await,
        Frame::EnvironmentValidated(report) => envs::validated(app, node_id, report),
        Frame::WorktreeState(state) => worktrees::reported(app, node_id, state).await,
        Frame::GitResult(result) => worktrees::complete(app, node_id, *result),
        Frame::CommandAck { command_id, error } => {
            if let Err(e) = commands::acked(app, node_id, command_id, error).await {
                tracing::error!(error = format!("{e:#}"), "storing a command ack");
            }
            None
        }
        Frame::TerminalOutput {
            attachment_id,
            offset,
            data,
            skipped_from,
            ..
        } => {
            app.terminals
                .output(node_id, &attachment_id, offset, data, skipped_from);
            None
        }
        Frame::TerminalExit {
            attachment_id,
            offset,
            code,
            error,
            ..
        } => {
            app.terminals
                .exit(node_id, &attachment_id, offset, code, error);
            None
        }
        Frame::TunnelData { tunnel_id, data } => {
            app.terminals.tunnel_data(node_id, &tunnel_id, data);
            for (node, tunnel_id) in app.terminals.take_closing_tunnels() {
                let close = Frame::TunnelClose {
                    tunnel_id,
                    error: Some("the preview's reader did not keep up".into()),
                };
                terminals::send(app, &node, close).await;
            }
            None
        }
        Frame::TunnelClose { tunnel_id, error } => {
            if let Some(error) = error {
                tracing::debug!(%tunnel_id, %error, "the node closed a preview tunnel");
            }
            app.terminals.tunnel_closed(node_id, &tunnel_id);
            None
        }
        Frame::TerminalList { terminals } => {
            if let Err(e) = terminals::listed(app, node_id, conn_id, terminals).await {
                tracing::error!(error = format!("{e:#}"), "recording a node's terminals");
            }
            None
        }
        Frame::Ping {} => Some(Frame::Pong {}),
        Frame::Pong {} => {
            app.registry.touch(node_id, conn_id, now_ms());
            None
        }
        Frame::Error(e) => {
            tracing::warn!(code = ?e.code, message = %e.message, "node reported an error");
            None
        }
        Frame::Connect(_) => Some(Frame::error(
            ErrorCode::InvalidFrame,
            "already authenticated on this connection",
        )),
        other => Some(Frame::error(
            ErrorCode::InvalidFrame,
            format!(
                "{:?} frames are not accepted from a node",
                other.type_name()
            ),
        )),
    }
}

/// Publishes a progress event of a task the node owns (others are refused like its chunks).
async fn progress(
    app: &App,
    node_id: &str,
    task_id: String,
    event: serde_json::Value,
) -> Option<Frame> {
    // The hub's entry (cached) says who owns the task.
    match app.tasks.live(&app.store, &task_id).await {
        Ok(Some(t)) if t.node_id == node_id => {
            app.events.publish(Event::TaskProgress {
                task_id,
                node_id: node_id.to_string(),
                event,
            });
            None
        }
        Ok(_) => {
            tracing::warn!(task = %task_id, "refused progress for a task the node does not own");
            Some(Frame::error(
                ErrorCode::NotOwner,
                format!("task {task_id} does not belong to this node"),
            ))
        }
        Err(e) => env_result(Err(e)),
    }
}

async fn heartbeat(app: &App, node_id: &str, conn_id: u64, status: NodeStatus) {
    let known = status.running_tasks.clone();
    let mut status = status;
    let worktrees = std::mem::take(&mut status.worktrees);
    // Read before the check reads the store (see `Store::tasks_inserted`).
    let inserted = app.store.tasks_inserted();
    let checks = app
        .registry
        .record_heartbeat(node_id, conn_id, status, now_ms(), inserted);
    if checks.tasks {
        match tasks::reconcile(app, node_id, &known).await {
            Ok(0) => app.registry.checked_clean(node_id, conn_id, inserted),
            Ok(_) => {}
            Err(e) => tracing::error!(error = format!("{e:#}"), "reconciling node tasks"),
        }
    }
    if checks.worktrees && !worktrees.is_empty() {
        worktrees::remove_orphans(app, node_id, worktrees).await;
    }
}

/// Applies every state; one the gateway cannot take (its environment was deleted, say) must
/// not keep the others from being recorded.
///
/// A node lists every binding it knows when it connects. One the gateway has as preparing
/// (past `queued`) that the node does not list was lost with a node restart mid-prepare: it is
/// prepared again instead of staying `preparing` for ever.
async fn sync_bindings(app: &App, node_id: &str, bindings: Vec<BindingState>) {
    let known: Vec<String> = bindings.iter().map(|b| b.binding_id.clone()).collect();
    for state in bindings {
        let id = state.binding_id.clone();
        if let Some(Frame::Error(e)) = env_result(envs::apply_state(app, node_id, state).await) {
            tracing::warn!(binding = %id, message = %e.message, "ignored a synced binding state");
        }
    }
    if let Err(e) = envs::prepare_lost(app, node_id, &known).await {
        tracing::error!(error = format!("{e:#}"), "preparing lost bindings again");
    }
}

/// Stores a line of setup output from a binding this node owns.
async fn binding_log(app: &App, node_id: &str, binding_id: String, text: String) -> Option<Frame> {
    match app.store.binding(binding_id.clone()).await {
        Ok(Some(b)) if b.node_id == node_id => {
            match app
                .store
                .append_binding_log(binding_id.clone(), text.clone(), now_ms())
                .await
            {
                Ok(seq) => app.events.publish(Event::BindingLog {
                    binding_id: binding_id.clone(),
                    environment_id: b.environment_id.clone(),
                    seq,
                    text: text.clone(),
                }),
                Err(e) => tracing::error!(error = format!("{e:#}"), "storing setup log"),
            }
            None
        }
        Ok(_) => Some(Frame::error(
            ErrorCode::NotOwner,
            format!("binding {binding_id} does not belong to this node"),
        )),
        Err(e) => env_result(Err(e)),
    }
}

async fn config_ack(app: &App, node_id: &str, ack: ConfigAck) {
    let state = serde_json::to_string(&ack).unwrap_or_default();
    if let Err(e) = app
        .store
        .set_node_config_state(node_id.to_string(), state)
        .await
    {
        tracing::error!(error = format!("{e:#}"), "storing config ack");
    }
    app.events.publish(Event::NodeConfig {
        node_id: node_id.to_string(),
        config: ack,
    });
}

fn env_result(r: anyhow::Result<Option<Frame>>) -> Option<Frame> {
    r.unwrap_or_else(|e| {
        tracing::error!(error = format!("{e:#}"), "handling environment frame");
        Some(Frame::error(ErrorCode::Internal, "gateway storage error"))
    })
}
