//! Binding life cycle on the gateway's side: sending `environment:prepare` to a binding's
//! node, applying the states the node reports, and what a connecting node must prepare.
//! Starting or failing the tasks that wait on a binding is the task hub's (`tasks/`).

use crate::clock::now_ms;
use crate::gateway::link::Outgoing;
use crate::gateway::App;
use crate::protocol::api::BindingPhase;
use crate::protocol::events::Event;
use crate::protocol::{
    BindingState, BindingStatus, EnvironmentSource, ErrorCode, Frame, PrepareEnvironment,
    TaskOutcome,
};
use crate::store::{BindingRecord, BindingUpdate, EnvironmentRecord, TaskFinish};

/// A binding's status as shown: `stale` when its environment changed after the last prepare.
pub fn binding_phase(b: &BindingRecord, env_version: i64) -> BindingPhase {
    match b.status {
        BindingStatus::Ready if b.prepared_version.is_some_and(|v| v < env_version) => {
            BindingPhase::Stale
        }
        BindingStatus::Ready => BindingPhase::Ready,
        BindingStatus::Pending => BindingPhase::Pending,
        BindingStatus::Preparing => BindingPhase::Preparing,
        BindingStatus::Error => BindingPhase::Error,
    }
}

/// Builds and sends `environment:prepare` when the node is online (marking the binding
/// `preparing`); returns false when it is offline (the binding stays pending and prepares on
/// connect).
pub async fn send_prepare(
    app: &App,
    env: &EnvironmentRecord,
    b: &BindingRecord,
    force: bool,
) -> anyhow::Result<bool> {
    let Some(tx) = app.registry.sender(&b.node_id) else {
        return Ok(false);
    };
    let vars = app.store.effective_vars(env.id.clone()).await?;
    let secrets = super::unseal_secrets(app, &env.id, false).await?;
    let frame = Frame::EnvironmentPrepare(PrepareEnvironment {
        binding_id: b.id.clone(),
        environment_id: env.id.clone(),
        name: env.name.clone(),
        version: env.version,
        source: EnvironmentSource {
            kind: env.kind,
            url: env.repo_url.clone(),
            branch: env.repo_branch.clone(),
            path: env.local_path.clone(),
        },
        strategy: b.strategy,
        path: b.path.clone(),
        working_dir: env.working_dir.clone(),
        setup_script: env.setup_script.clone(),
        vars,
        secrets,
        force,
        container: super::input::container_of(env, &b.id),
    });
    app.metrics.prepare_queued(&b.id);
    app.store
        .update_binding(
            b.id.clone(),
            BindingUpdate {
                status: BindingStatus::Preparing,
                step: Some("queued".into()),
                error: None,
                working_dir: None,
                commit: None,
                prepared_version: None,
                at: now_ms(),
            },
        )
        .await?;
    app.events.publish(Event::BindingStatus {
        binding_id: b.id.clone(),
        environment_id: env.id.clone(),
        node_id: b.node_id.clone(),
        status: BindingStatus::Preparing,
        step: None,
        message: None,
    });
    let _ = tx.send(Outgoing::frame(frame)).await;
    Ok(true)
}

/// Applies a binding state reported by `node_id`; dispatches or fails the tasks waiting on it.
pub async fn apply_state(
    app: &App,
    node_id: &str,
    s: BindingState,
) -> anyhow::Result<Option<Frame>> {
    let Some(b) = app.store.binding(s.binding_id.clone()).await? else {
        return Ok(Some(Frame::error(
            ErrorCode::InvalidFrame,
            format!("no binding {}", s.binding_id),
        )));
    };
    if b.node_id != node_id {
        tracing::warn!(binding = %b.id, "refused a binding state from a node that does not own it");
        return Ok(Some(Frame::error(
            ErrorCode::NotOwner,
            format!("binding {} does not belong to this node", b.id),
        )));
    }
    app.metrics.binding_status(&b.id, s.status);
    app.store
        .update_binding(
            b.id.clone(),
            BindingUpdate {
                status: s.status,
                step: s.step.clone(),
                error: s
                    .message
                    .clone()
                    .filter(|_| s.status == BindingStatus::Error),
                working_dir: s.working_dir.clone(),
                commit: s.commit.clone(),
                prepared_version: (s.status == BindingStatus::Ready).then_some(s.version),
                at: now_ms(),
            },
        )
        .await?;
    app.events.publish(Event::BindingStatus {
        binding_id: b.id.clone(),
        environment_id: b.environment_id.clone(),
        node_id: node_id.to_string(),
        status: s.status,
        step: s.step.clone(),
        message: s.message.clone(),
    });
    match s.status {
        BindingStatus::Ready => crate::gateway::tasks::dispatch_waiting(app, &b.id).await?,
        BindingStatus::Error => fail_waiting(app, &b, &s).await?,
        _ => {}
    }
    Ok(None)
}

/// A prepare failed: the tasks waiting on the binding fail with the step and message.
async fn fail_waiting(app: &App, b: &BindingRecord, s: &BindingState) -> anyhow::Result<()> {
    let why = format!(
        "environment prepare failed at step {}: {}",
        s.step.as_deref().unwrap_or("?"),
        s.message.as_deref().unwrap_or("")
    );
    for task in app.store.pending_tasks_of_binding(b.id.clone()).await? {
        app.tasks
            .end_without_node(
                &app.store,
                &task,
                TaskFinish::now(TaskOutcome::failed(why.clone())),
            )
            .await?;
    }
    Ok(())
}

/// When a node connects: prepare its bindings that never were.
pub async fn on_node_connected(app: &App, node_id: &str) -> anyhow::Result<()> {
    for b in app.store.bindings_of_node(node_id.to_string()).await? {
        let never_sent = b.status == BindingStatus::Pending
            || (b.status == BindingStatus::Preparing && b.step.as_deref() == Some("queued"));
        if never_sent {
            if let Some(env) = app.store.environment(b.environment_id.clone()).await? {
                send_prepare(app, &env, &b, false).await?;
            }
        }
    }
    Ok(())
}

/// After a node's binding sync: prepares again the bindings it was preparing and no longer
/// knows (it restarted mid-prepare). Those still `queued` are sent by [`on_node_connected`].
pub async fn prepare_lost(app: &App, node_id: &str, known: &[String]) -> anyhow::Result<()> {
    for b in app.store.bindings_of_node(node_id.to_string()).await? {
        let lost = b.status == BindingStatus::Preparing
            && b.step.as_deref() != Some("queued")
            && !known.contains(&b.id);
        if !lost {
            continue;
        }
        tracing::warn!(binding = %b.id, step = ?b.step, "the node lost this prepare (it restarted); preparing again");
        if let Some(env) = app.store.environment(b.environment_id.clone()).await? {
            send_prepare(app, &env, &b, false).await?;
        }
    }
    Ok(())
}
