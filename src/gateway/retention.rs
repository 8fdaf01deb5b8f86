//! The retention sweeper: once at start, then every hour, deletes what is past its time
//! (see `store/retention.rs` for what) and forgets in-memory entries nothing needs.

use std::time::Duration;

use crate::clock::now_ms;
use crate::gateway::App;
use crate::store::Pruned;

/// Between two passes.
const PERIOD: Duration = Duration::from_secs(3600);
/// Idempotency keys are kept this long whatever the retention period.
const KEYS_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Runs passes until shutdown.
pub async fn sweeper(app: App) {
    let mut tick = tokio::time::interval(PERIOD);
    while crate::clock::next_tick(&mut tick, &app.shutdown).await {
        match pass(&app).await {
            Ok(p) if !p.is_empty() => tracing::info!(?p, "retention pass"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = format!("{e:#}"), "retention pass failed"),
        }
    }
}

/// One pass. Task outputs go in small batches until none is left (or shutdown).
pub async fn pass(app: &App) -> anyhow::Result<Pruned> {
    let now = now_ms();
    let forgotten = app.tasks.forget_orphans();
    if forgotten > 0 {
        tracing::debug!(forgotten, "forgot tasks that ended without their node");
    }
    // No retention period: outputs, logs and old enrollments stay.
    let cutoff = match app.config.retention {
        Some(keep) => now - keep.as_millis() as i64,
        None => i64::MIN,
    };
    let keys_cutoff = now - KEYS_KEPT.as_millis() as i64;
    let mut pruned = app.store.prune_records(cutoff, keys_cutoff, now).await?;
    if app.config.retention.is_some() {
        while !app.shutdown.is_cancelled() {
            let (tasks, chunks) = app.store.prune_task_outputs(cutoff, now).await?;
            pruned.task_outputs += tasks;
            pruned.chunks += chunks;
            if tasks == 0 {
                break;
            }
        }
    }
    Ok(pruned)
}
