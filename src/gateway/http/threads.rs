//! `/api/threads*`: work streams inside an environment. A thread's first message prepares
//! the environment on a node when needed, then runs a task in its working directory; later
//! messages feed the running task (injection modes) or start the next one.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;

use super::environments::load_env;
use super::idempotency::idempotent;
use super::openapi::Errors;
use super::tasks::{check_text, follow_up, offers, parse_executor, task_usage, task_view};
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::envs::{binding_phase, run_options, send_prepare};
use crate::gateway::error::{ApiError, ApiResult, Body, Path, Query};
use crate::gateway::App;
use crate::protocol::api::{
    BindingPhase, CreateThread, ErrorBody, FollowUpAccepted, MessageTask, MessagesQuery,
    PatchThread, SendMessage, SendOutcome, ThreadList, ThreadListQuery, ThreadMessageView,
    ThreadMessages, ThreadStatus, ThreadView, WorktreeView,
};
use crate::protocol::events::Event;
use crate::protocol::{BindingStatus, ExecutorKind, InjectionMode, TaskOptions, TaskState};
use crate::store::{BindingRecord, EnvironmentRecord, NewTask, ThreadRecord};

/// Output shown per task in a thread's history.
const OUTPUT_LIMIT: usize = 64 * 1024;

fn thread_view(t: &ThreadRecord) -> ThreadView {
    ThreadView {
        id: t.id.clone(),
        environment_id: t.environment_id.clone(),
        title: t.title.clone(),
        status: t.status,
        created_at: iso8601(t.created_at),
        updated_at: iso8601(t.updated_at),
        active_node_id: t.active_node_id.clone(),
        last_message_at: t.last_message_at.map(iso8601),
        last_task_id: t.last_task.as_ref().map(|(id, _)| id.clone()),
        last_task_state: t.last_task.as_ref().map(|(_, state)| *state),
        executor: t.executor,
        worktree: None,
    }
}

/// The title of a thread created without one, until its first message names it.
const DEFAULT_TITLE: &str = "New thread";

/// A thread title from its first message: the first line, cut at a word near 60 characters.
fn title_from(message: &str) -> String {
    let line = message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.chars().count() <= 60 {
        return line.to_string();
    }
    let cut: String = line.chars().take(60).collect();
    let cut = match cut.rfind(' ') {
        Some(i) if i > 30 => &cut[..i],
        _ => &cut,
    };
    format!("{}…", cut.trim_end())
}

pub(super) async fn load(app: &App, id: &str) -> ApiResult<ThreadRecord> {
    app.store
        .thread(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no thread {id:?}")))
}

fn changed(app: &App, thread_id: &str) {
    app.events.publish(Event::ThreadChanged {
        thread_id: thread_id.to_string(),
    });
}

#[utoipa::path(
    post,
    path = "/threads",
    operation_id = "createThread",
    tag = "threads",
    request_body = CreateThread,
    responses(
        (status = 201, description = "Created", body = ThreadView),
        (status = 422, description = "Unknown environment or bad title", body = ErrorBody),
        Errors,
    )
)]
pub async fn create(
    State(app): State<App>,
    Body(req): Body<CreateThread>,
) -> ApiResult<(StatusCode, Json<ThreadView>)> {
    let t = open_thread(&app, &req.environment_id, req.title).await?;
    Ok((StatusCode::CREATED, Json(thread_view(&t))))
}

/// A new thread in the environment `environment_id` (422 when there is none), titled
/// `title` or, until its first message names it, [`DEFAULT_TITLE`].
pub(crate) async fn open_thread(
    app: &App,
    environment_id: &str,
    title: Option<String>,
) -> ApiResult<ThreadRecord> {
    let env = app
        .store
        .environment(environment_id.to_string())
        .await?
        .ok_or_else(|| ApiError::validation(format!("unknown environmentId {environment_id:?}")))?;
    let now = now_ms();
    let title = title
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_TITLE.into());
    if title.len() > 200 {
        return Err(ApiError::validation("title must be at most 200 characters"));
    }
    let t = ThreadRecord {
        id: crypto::new_id("thr"),
        environment_id: env.id,
        title,
        active_node_id: None,
        status: ThreadStatus::Active,
        last_message_at: None,
        created_at: now,
        updated_at: now,
        executor: None,
        last_task: None,
    };
    app.store.insert_thread(t.clone()).await?;
    changed(app, &t.id);
    Ok(t)
}

#[utoipa::path(
    get,
    path = "/threads",
    operation_id = "listThreads",
    tag = "threads",
    params(ThreadListQuery),
    responses(
        (status = 200, description = "Threads", body = ThreadList),
        (status = 404, description = "No such environment", body = ErrorBody),
        Errors,
    )
)]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<ThreadListQuery>,
) -> ApiResult<Json<ThreadList>> {
    let env_id = match q.environment_id {
        Some(e) => Some(load_env(&app, &e).await?.id),
        None => None,
    };
    let threads = app
        .store
        .list_threads(env_id)
        .await?
        .iter()
        .map(thread_view)
        .collect();
    Ok(Json(ThreadList { threads }))
}

#[utoipa::path(
    get,
    path = "/threads/{id}",
    operation_id = "getThread",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    responses(
        (status = 200, description = "The thread", body = ThreadView),
        (status = 404, description = "No such thread", body = ErrorBody),
        Errors,
    )
)]
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<ThreadView>> {
    let t = load(&app, &id).await?;
    let mut v = thread_view(&t);
    v.worktree = app
        .store
        .worktree(t.id.clone())
        .await?
        .map(|w| WorktreeView {
            branch: w.branch,
            node_id: w.node_id,
            base: w.base_commit,
            path: w.path,
            pull_request_url: w.pr_url,
        });
    Ok(Json(v))
}

/// Renames a thread or changes its status.
#[utoipa::path(
    patch,
    path = "/threads/{id}",
    operation_id = "updateThread",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    request_body = PatchThread,
    responses(
        (status = 200, description = "Updated", body = ThreadView),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 422, description = "Bad title or unknown status", body = ErrorBody),
        Errors,
    )
)]
pub async fn patch(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<PatchThread>,
) -> ApiResult<Json<ThreadView>> {
    let mut t = load(&app, &id).await?;
    if let Some(title) = req.title {
        let title = title.trim().to_string();
        if title.is_empty() || title.len() > 200 {
            return Err(ApiError::validation("title must be 1 to 200 characters"));
        }
        t.title = title;
    }
    if let Some(s) = req.status {
        t.status = s.parse()?;
    }
    t.updated_at = now_ms();
    app.store.update_thread(t.clone()).await?;
    if t.status == ThreadStatus::Archived {
        // Its shell and what runs there end with it, and its worktree (the branch stays).
        crate::gateway::terminals::close_thread(&app, &t.id).await?;
        if let Some(wt) = app.store.worktree(t.id.clone()).await? {
            crate::gateway::worktrees::remove(&app, &wt, req.delete_branch.unwrap_or(false)).await;
        }
    }
    changed(&app, &t.id);
    Ok(Json(thread_view(&t)))
}

/// A message: starts the thread's next task, or joins its running one as a follow-up.
#[utoipa::path(
    post,
    path = "/threads/{id}/messages",
    operation_id = "sendThreadMessage",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id"), ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key get the first response again (with `Idempotent-Replayed: true`); 1 to 255 characters")),
    request_body = SendMessage,
    responses(
        (status = 201, description = "A new task (preparing the environment first when needed)", body = crate::protocol::api::TaskView),
        (status = 202, description = "A follow-up to the running task", body = FollowUpAccepted),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 409, description = "Archived, not bound to a node, or the previous message still waits", body = ErrorBody),
        Errors,
    )
)]
pub async fn send(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Body(req): Body<SendMessage>,
) -> ApiResult<Response> {
    let scope = format!("POST /api/threads/{id}/messages");
    idempotent(&app, &headers, scope, || send_message(&app, id, req)).await
}

/// Sends `req` to the thread `id`: a new task, or a follow-up to the running one.
pub(crate) async fn send_message(
    app: &App,
    id: String,
    req: SendMessage,
) -> ApiResult<(StatusCode, SendOutcome)> {
    let thread = load(app, &id).await?;
    if thread.status == ThreadStatus::Archived {
        return Err(ApiError::conflict(
            "thread is archived; set it active to continue",
        ));
    }
    check_text("message", &req.message)?;
    let mode: Option<InjectionMode> = match req.injection_mode.as_deref() {
        None => None,
        Some(m) => Some(m.parse()?),
    };
    let env = load_env(app, &thread.environment_id).await?;
    let history = app.store.thread_messages(id.clone()).await?;
    // A running task of this thread takes the message as a follow-up.
    if let Some(last) = history.last() {
        if let Some(task) = app.store.task(last.task_id.clone()).await? {
            if task.state == TaskState::Running {
                let mode = mode.unwrap_or_default();
                let delivered = follow_up(app, &task, req.message.clone(), mode).await?;
                app.store
                    .insert_thread_message(
                        id.clone(),
                        req.message,
                        task.id.clone(),
                        Some(mode),
                        now_ms(),
                    )
                    .await?;
                let accepted = FollowUpAccepted {
                    thread_id: id,
                    task_id: task.id,
                    follow_up: true,
                    delivered,
                };
                return Ok((StatusCode::ACCEPTED, SendOutcome::FollowUp(accepted)));
            }
            if task.state == TaskState::Pending {
                return Err(ApiError::conflict(
                    "the previous message is still waiting for its environment to be ready",
                ));
            }
        }
    }
    let first = history.is_empty();
    let view = start_task(app, thread, &env, req, first).await?;
    Ok((StatusCode::CREATED, SendOutcome::Started(Box::new(view))))
}

/// A message that starts a new task on the thread's binding (preparing it first when it is
/// not ready).
async fn start_task(
    app: &App,
    mut thread: ThreadRecord,
    env: &EnvironmentRecord,
    req: SendMessage,
    first: bool,
) -> ApiResult<crate::protocol::api::TaskView> {
    let binding = pick_binding(app, &env.id, thread.active_node_id.as_deref()).await?;
    // The message's executor, else the thread's, else the environment's, else the agent
    // when the node offers one.
    let executor = match req.executor.as_deref() {
        Some(e) => parse_executor(e)?,
        None => thread.executor.or(env.default_executor).unwrap_or_else(|| {
            if offers(app, &binding.node_id, ExecutorKind::Llm) {
                ExecutorKind::Llm
            } else {
                ExecutorKind::Shell
            }
        }),
    };
    // An agent CLI continues the session the thread's last task with it had on this node.
    let resume_session = if executor.is_agent_cli() {
        app.store
            .thread_agent_session(thread.id.clone(), executor, binding.node_id.clone())
            .await?
    } else {
        None
    };
    let ready = runs_tasks(&binding, env);
    if first && thread.title == DEFAULT_TITLE {
        // Before the options: the thread's branch is named after it.
        thread.title = title_from(&req.message);
        app.store.update_thread(thread.clone()).await?;
    }
    let options = TaskOptions {
        resume_session,
        ..run_options(app, env, &binding, Some(&thread.id)).await?
    };
    let now = now_ms();
    let task = NewTask {
        id: crypto::new_id("task"),
        node_id: binding.node_id.clone(),
        goal: req.message.clone(),
        executor,
        options: serde_json::to_string(&options).map_err(anyhow::Error::from)?,
        created_at: now,
        environment_id: Some(env.id.clone()),
        thread_id: Some(thread.id.clone()),
        binding_id: Some(binding.id.clone()),
    };
    let task_id = task.id.clone();
    app.store.insert_task(task).await?;
    app.store
        .insert_thread_message(thread.id.clone(), req.message, task_id.clone(), None, now)
        .await?;
    thread.active_node_id = Some(binding.node_id.clone());
    thread.executor = Some(executor);
    thread.last_message_at = Some(now);
    thread.updated_at = now;
    let thread_id = thread.id.clone();
    app.store.update_thread(thread).await?;
    changed(app, &thread_id);
    let rec = app.store.task(task_id.clone()).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "task {task_id:?} was removed (its environment was deleted)"
        ))
    })?;
    app.tasks.created(&rec);
    if ready {
        crate::gateway::tasks::dispatch(app, &rec).await?;
    } else if binding.status != BindingStatus::Preparing {
        // Not ready, stale or failed: prepare now; the task starts when the binding is ready.
        send_prepare(app, env, &binding, false).await?;
    } else if let Some(now) = app.store.binding(binding.id.clone()).await? {
        // The prepare may have ended between the read above and the task's insert, and
        // what it did with the waiting tasks then missed this one: start it on a binding
        // that became ready (a node ignores a second submit), prepare again after a failure.
        if runs_tasks(&now, env) {
            crate::gateway::tasks::dispatch_waiting(app, &binding.id).await?;
        } else if now.status != BindingStatus::Preparing {
            send_prepare(app, env, &now, false).await?;
        }
    }
    let mut v = task_view(&rec);
    v.thread_id = Some(thread_id);
    v.task_id = Some(task_id);
    v.binding_id = Some(binding.id);
    Ok(v)
}

/// Whether a task can start on the binding now: prepared for this version of the
/// environment, with a working dir.
pub(super) fn runs_tasks(b: &BindingRecord, env: &EnvironmentRecord) -> bool {
    binding_phase(b, env.version) == BindingPhase::Ready && b.resolved_working_dir.is_some()
}

/// The binding a thread's new task runs on: the thread's node if it has one, else a ready
/// binding on an online node, else any binding.
pub(super) async fn pick_binding(
    app: &App,
    env_id: &str,
    node: Option<&str>,
) -> ApiResult<BindingRecord> {
    let all = app
        .store
        .bindings_of_environment(env_id.to_string())
        .await?;
    if all.is_empty() {
        return Err(ApiError::conflict(
            "the environment is not mapped to any node; bind it first (POST /api/environments/:id/bindings)",
        ));
    }
    let online = |b: &BindingRecord| app.registry.presence(&b.node_id).is_some();
    let pick = node
        .and_then(|n| all.iter().find(|b| b.node_id == n))
        .or_else(|| {
            all.iter()
                .find(|b| b.status == BindingStatus::Ready && online(b))
        })
        .or_else(|| all.iter().find(|b| online(b)))
        .unwrap_or(&all[0]);
    Ok(pick.clone())
}

/// `GET /api/threads/:id/messages`: the conversation with each task's state and output.
#[utoipa::path(
    get,
    path = "/threads/{id}/messages",
    operation_id = "listThreadMessages",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id"), MessagesQuery),
    responses(
        (status = 200, description = "Messages, oldest first", body = ThreadMessages),
        (status = 404, description = "No such thread", body = ErrorBody),
        Errors,
    )
)]
pub async fn messages(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<MessagesQuery>,
) -> ApiResult<Json<ThreadMessages>> {
    load(&app, &id).await?;
    let with_output = q.output.unwrap_or(true);
    let mut messages = Vec::new();
    for m in app.store.thread_messages(id).await? {
        let mut v = ThreadMessageView {
            id: m.id,
            message: m.message,
            task_id: m.task_id.clone(),
            created_at: iso8601(m.created_at),
            injection_mode: m.injection_mode,
            task: None,
            output: None,
        };
        if let Some(task) = app.store.task(m.task_id).await? {
            v.task = Some(MessageTask {
                state: task.state,
                executor: task.executor,
                exit_code: task.exit_code,
                error: task.error.clone(),
                usage: task_usage(&task),
                output_pruned_at: task.output_pruned_at.map(iso8601),
            });
            if with_output && m.injection_mode.is_none() {
                // What is relayed but not stored yet is read first (see `TaskHub::unstored`).
                let unstored = app
                    .tasks
                    .unstored(&task.id, usize::MAX, |c| c.contains("text-delta"));
                v.output = Some(app.store.task_text(task.id, OUTPUT_LIMIT, unstored).await?);
            }
        }
        messages.push(v);
    }
    Ok(Json(ThreadMessages { messages }))
}

#[cfg(test)]
mod tests {
    use super::title_from;

    #[test]
    fn titles_come_from_the_first_line_cut_at_a_word() {
        assert_eq!(title_from("\n  npm test \nmore"), "npm test");
        let long = "please refactor the connection module so that reconnects back off properly";
        let t = title_from(long);
        assert!(t.ends_with('…') && t.chars().count() <= 61, "{t}");
        assert!(long.starts_with(t.trim_end_matches('…')), "{t}");
        let no_spaces = "x".repeat(100);
        assert_eq!(title_from(&no_spaces).chars().count(), 61);
    }
}
