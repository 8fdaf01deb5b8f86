//! Task life cycle around node connections: what a node gets when it connects, what its
//! heartbeat says about tasks it lost, and failing the tasks of nodes gone for too long.
//! The only place besides a node's final frame that decides a task's outcome.

use std::collections::HashMap;
use std::time::Duration;

use crate::clock::now_ms;
use crate::gateway::link::Outgoing;
use crate::gateway::App;
use crate::protocol::{BindingStatus, Frame, TaskOutcome, TaskState};
use crate::store::TaskFinish;

/// Sends a node the tasks waiting for it: pending ones, and stops that were requested while
/// it was away.
pub async fn on_node_connected(app: &App, node_id: &str) -> anyhow::Result<()> {
    let Some(tx) = app.registry.sender(node_id) else {
        return Ok(());
    };
    for rec in app.store.unfinished_tasks_of(node_id.to_string()).await? {
        // Tasks waiting for a binding start when it is ready (see environments).
        let waiting = match &rec.binding_id {
            None => false,
            Some(b) => match app.store.binding(b.clone()).await? {
                Some(b) => b.status != BindingStatus::Ready,
                None => false,
            },
        };
        if rec.state == TaskState::Pending && !waiting {
            let _ = tx
                .send(Outgoing::frame(super::submit_frame(app, &rec).await?))
                .await;
        }
        if app.tasks.stop_requested(&rec.id) {
            let _ = tx
                .send(Outgoing::frame(Frame::TaskStop { task_id: rec.id }))
                .await;
        }
    }
    Ok(())
}

/// A heartbeat lists the tasks a node knows. A task stored as running on that node that the
/// node no longer knows was lost with a node restart. (A node keeps listing a task until its
/// final frame is acknowledged, and acks follow the commit, so this cannot race a normal end.)
/// Returns how many unfinished tasks the store has for the node.
pub async fn reconcile(app: &App, node_id: &str, known: &[String]) -> anyhow::Result<usize> {
    let unfinished = app.store.unfinished_tasks_of(node_id.to_string()).await?;
    let found = unfinished.len();
    for rec in unfinished {
        if rec.state == TaskState::Running && !known.contains(&rec.id) {
            tracing::warn!(task = %rec.id, "node no longer has a running task");
            app.tasks
                .end_without_node(
                    &app.store,
                    &rec.id,
                    TaskFinish::now(TaskOutcome::node_lost(
                        "the node restarted and lost this task",
                    )),
                )
                .await?;
        }
    }
    Ok(found)
}

/// Fails the unfinished tasks of nodes that stayed away longer than the grace period.
pub async fn sweep_lost_nodes(app: App) {
    let started_ms = now_ms();
    let period =
        (app.config.node_grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    while crate::clock::next_tick(&mut tick, &app.shutdown).await {
        if let Err(e) = sweep_once(&app, started_ms).await {
            tracing::error!(error = format!("{e:#}"), "sweeping lost nodes");
        }
    }
}

async fn sweep_once(app: &App, started_ms: i64) -> anyhow::Result<()> {
    let now = now_ms();
    let grace = app.config.node_grace.as_millis() as i64;
    let mut verdicts: HashMap<String, Option<String>> = HashMap::new();
    for rec in app.store.unfinished_tasks().await? {
        let node_id = rec.node_id.clone().unwrap_or_default();
        if !verdicts.contains_key(&node_id) {
            let verdict = if app.registry.presence(&node_id).is_some() {
                None
            } else {
                match app.store.node(node_id.clone()).await? {
                    None => Some("the task's node does not exist".to_string()),
                    Some(n) if n.revoked_at.is_some() => Some("the task's node was revoked".into()),
                    Some(n) => {
                        // Offline since it was last seen, but never before this gateway
                        // started: a gateway that was down itself gives nodes a full grace.
                        let since = n.last_seen_at.unwrap_or(0).max(started_ms);
                        (now - since > grace).then(|| {
                            format!(
                                "node lost: {} was offline for more than {} s",
                                n.name,
                                grace / 1000
                            )
                        })
                    }
                }
            };
            verdicts.insert(node_id.clone(), verdict);
        }
        if let Some(Some(reason)) = verdicts.get(&node_id) {
            tracing::warn!(task = %rec.id, node = %node_id, %reason, "failing task");
            app.tasks
                .end_without_node(
                    &app.store,
                    &rec.id,
                    TaskFinish::now(TaskOutcome::node_lost(reason.clone())),
                )
                .await?;
        }
    }
    Ok(())
}
