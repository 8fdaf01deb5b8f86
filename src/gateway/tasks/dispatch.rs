//! Sending tasks to their nodes: the `task:submit` frame (with the environment's runtime
//! secrets, unsealed only here) and the dispatch of tasks that waited for a binding.

use crate::gateway::link::Outgoing;
use crate::gateway::App;
use crate::protocol::{ExecutorKind, Frame, TaskOptions, TaskSubmit};
use crate::store::TaskRecord;

/// The `task:submit` for a task, with its environment's runtime secrets (unsealed only here,
/// never stored with the task).
pub async fn submit_frame(app: &App, rec: &TaskRecord) -> anyhow::Result<Frame> {
    let mut options: TaskOptions = serde_json::from_str(&rec.options).unwrap_or_default();
    // Without its terminal the task still runs, apart from it.
    options.terminal = thread_terminal(app, rec).await.unwrap_or_else(|e| {
        tracing::warn!(task = %rec.id, error = format!("{e:#}"), "opening the thread's terminal");
        None
    });
    let secrets = match &rec.environment_id {
        Some(env) => crate::gateway::envs::unseal_secrets(app, env, true).await?,
        None => Vec::new(),
    };
    Ok(Frame::TaskSubmit(TaskSubmit {
        task_id: rec.id.clone(),
        goal: rec.goal.clone(),
        executor: rec.executor,
        options,
        secrets,
    }))
}

/// The thread's terminal for a `shell` or `llm` task of a thread (see
/// [`crate::gateway::terminals::thread_shell`]).
async fn thread_terminal(app: &App, rec: &TaskRecord) -> anyhow::Result<Option<String>> {
    let (Some(thread), Some(binding), Some(env)) =
        (&rec.thread_id, &rec.binding_id, &rec.environment_id)
    else {
        return Ok(None);
    };
    if !matches!(rec.executor, ExecutorKind::Shell | ExecutorKind::Llm) {
        return Ok(None);
    }
    let (Some(env), Some(binding)) = (
        app.store.environment(env.clone()).await?,
        app.store.binding(binding.clone()).await?,
    ) else {
        return Ok(None);
    };
    if binding.resolved_working_dir.is_none() {
        return Ok(None);
    }
    crate::gateway::terminals::thread_shell(app, &env, &binding, thread).await
}

/// Sends a task to its node with its environment's runtime secrets attached.
pub async fn dispatch(app: &App, rec: &crate::store::TaskRecord) -> anyhow::Result<()> {
    let node = rec.node_id.clone().unwrap_or_default();
    if let Some(tx) = app.registry.sender(&node) {
        let frame = submit_frame(app, rec).await?;
        let _ = tx.send(Outgoing::frame(frame)).await;
    }
    Ok(())
}

/// A binding became ready: start the tasks that waited for it, in its working directory.
pub async fn dispatch_waiting(app: &App, binding_id: &str) -> anyhow::Result<()> {
    let Some(b) = app.store.binding(binding_id.to_string()).await? else {
        return Ok(());
    };
    for id in app
        .store
        .pending_tasks_of_binding(binding_id.to_string())
        .await?
    {
        let Some(mut rec) = app.store.task(id).await? else {
            continue;
        };
        let mut options: TaskOptions = serde_json::from_str(&rec.options).unwrap_or_default();
        options.cwd = b.resolved_working_dir.clone();
        rec.options = serde_json::to_string(&options)?;
        app.store
            .set_task_options(rec.id.clone(), rec.options.clone())
            .await?;
        dispatch(app, &rec).await?;
    }
    Ok(())
}
