//! `/api/threads/:id/{diff,commit,push,pull-request,sync}`: a thread's work in its git
//! worktree, and delivering it. Each is a `git:request` to the node holding the worktree
//! (see `gateway::worktrees`); a pull request is then GitHub's API.

use std::time::Duration;

use axum::extract::State;
use axum::Json;

use super::environments::load_env;
use super::openapi::Errors;
use super::threads::load;
use crate::gateway::error::{ApiError, ApiResult, Body, Path, Query};
use crate::gateway::worktrees::{self, ask, created};
use crate::gateway::App;
use crate::protocol::api::{
    CommitRequest, DiffQuery, ErrorBody, GitOutcome, PullRequestRequest, PullRequestView,
    SyncRequest, ThreadDiff,
};
use crate::protocol::events::Event;
use crate::protocol::worktree::GitOp;
use crate::store::{EnvironmentRecord, ThreadRecord, WorktreeRecord};

/// A diff or a commit: local work on the node.
const LOCAL: Duration = Duration::from_secs(60);
/// A push or a sync: the remote too.
const REMOTE: Duration = Duration::from_secs(180);
const MAX_FILE_BYTES: u64 = 256 * 1024;
const MAX_TOTAL_BYTES: u64 = 768 * 1024;

/// The thread, its environment and its created worktree.
async fn worktree_of(
    app: &App,
    id: &str,
) -> ApiResult<(ThreadRecord, EnvironmentRecord, WorktreeRecord)> {
    let thread = load(app, id).await?;
    let env = load_env(app, &thread.environment_id).await?;
    let wt = created(app, &thread).await?;
    Ok((thread, env, wt))
}

fn head(r: &crate::protocol::worktree::GitResult) -> String {
    r.head.clone().unwrap_or_default()
}

/// `GET /api/threads/:id/diff`.
#[utoipa::path(
    get,
    path = "/threads/{id}/diff",
    operation_id = "threadDiff",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id"), DiffQuery),
    responses(
        (status = 200, description = "What the thread changed since its branch started: commits, uncommitted and untracked files", body = ThreadDiff),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 409, description = "The thread has no worktree (yet)", body = ErrorBody),
        (status = 502, description = "git failed on the node", body = ErrorBody),
        (status = 503, description = "The node holding the worktree is offline", body = ErrorBody),
        Errors,
    )
)]
pub async fn diff(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<ThreadDiff>> {
    let (thread, env, wt) = worktree_of(&app, &id).await?;
    let op = GitOp::Diff {
        max_file_bytes: q.max_file_bytes.unwrap_or(MAX_FILE_BYTES),
        max_total_bytes: q
            .max_total_bytes
            .unwrap_or(MAX_TOTAL_BYTES)
            .min(MAX_TOTAL_BYTES),
    };
    let r = ask(&app, &env, &wt, op, LOCAL).await?;
    let (additions, deletions) = r
        .files
        .iter()
        .fold((0, 0), |(a, d), f| (a + f.additions, d + f.deletions));
    Ok(Json(ThreadDiff {
        thread_id: thread.id,
        branch: wt.branch,
        base: r.base.clone().unwrap_or_default(),
        head: head(&r),
        truncated: r.files.iter().any(|f| f.truncated),
        additions,
        deletions,
        files: r.files,
    }))
}

/// `POST /api/threads/:id/commit`.
#[utoipa::path(
    post,
    path = "/threads/{id}/commit",
    operation_id = "commitThread",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    request_body = CommitRequest,
    responses(
        (status = 200, description = "Committed every change in the worktree", body = GitOutcome),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 409, description = "Nothing to commit, or no worktree", body = ErrorBody),
        (status = 502, description = "git failed on the node", body = ErrorBody),
        (status = 503, description = "The node holding the worktree is offline", body = ErrorBody),
        Errors,
    )
)]
pub async fn commit(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<CommitRequest>,
) -> ApiResult<Json<GitOutcome>> {
    let (thread, env, wt) = worktree_of(&app, &id).await?;
    let message = match req.message.map(|m| m.trim().to_string()) {
        Some(m) if m.is_empty() || m.len() > 64 * 1024 => {
            return Err(ApiError::validation(
                "message must be 1 to 65536 characters",
            ))
        }
        Some(m) => m,
        None => thread.title.clone(),
    };
    let r = ask(&app, &env, &wt, GitOp::Commit { message }, LOCAL).await?;
    changed(&app, &thread.id);
    Ok(Json(outcome(&wt, &r, None)))
}

fn outcome(
    wt: &WorktreeRecord,
    r: &crate::protocol::worktree::GitResult,
    remote: Option<String>,
) -> GitOutcome {
    GitOutcome {
        branch: wt.branch.clone(),
        head: head(r),
        output: r.output.clone(),
        remote,
        conflicts: r.conflicts.clone(),
    }
}

fn changed(app: &App, thread_id: &str) {
    app.events.publish(Event::ThreadChanged {
        thread_id: thread_id.to_string(),
    });
}

/// Where the branch goes: the environment's `metadata.pushUrl` (a fork, another host),
/// else its repository URL.
fn remote_of(env: &EnvironmentRecord) -> ApiResult<String> {
    serde_json::from_str::<serde_json::Value>(&env.metadata)
        .ok()
        .and_then(|m| m["pushUrl"].as_str().map(str::to_string))
        .or_else(|| env.repo_url.clone())
        .ok_or_else(|| ApiError::conflict("the environment has no repository URL"))
}

async fn push_branch(
    app: &App,
    env: &EnvironmentRecord,
    wt: &WorktreeRecord,
) -> ApiResult<GitOutcome> {
    let url = remote_of(env)?;
    let r = ask(app, env, wt, GitOp::Push { url: url.clone() }, REMOTE).await?;
    Ok(outcome(wt, &r, Some(url)))
}

/// `POST /api/threads/:id/push`.
#[utoipa::path(
    post,
    path = "/threads/{id}/push",
    operation_id = "pushThread",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    responses(
        (status = 200, description = "The thread's branch is on the environment's remote", body = GitOutcome),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 409, description = "No worktree, or no repository URL", body = ErrorBody),
        (status = 502, description = "The push failed (git's words, credentials redacted)", body = ErrorBody),
        (status = 503, description = "The node holding the worktree is offline", body = ErrorBody),
        Errors,
    )
)]
pub async fn push(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<GitOutcome>> {
    let (thread, env, wt) = worktree_of(&app, &id).await?;
    let out = push_branch(&app, &env, &wt).await?;
    changed(&app, &thread.id);
    Ok(Json(out))
}

/// `POST /api/threads/:id/pull-request`: pushes the branch, then opens the pull request.
#[utoipa::path(
    post,
    path = "/threads/{id}/pull-request",
    operation_id = "openPullRequest",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    request_body = PullRequestRequest,
    responses(
        (status = 201, description = "The pull request", body = PullRequestView),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 409, description = "No worktree, not a GitHub repository, or no token", body = ErrorBody),
        (status = 502, description = "The push or GitHub refused (their words, the token redacted)", body = ErrorBody),
        (status = 503, description = "The node holding the worktree is offline", body = ErrorBody),
        Errors,
    )
)]
pub async fn pull_request(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<PullRequestRequest>,
) -> ApiResult<(axum::http::StatusCode, Json<PullRequestView>)> {
    let (thread, env, wt) = worktree_of(&app, &id).await?;
    push_branch(&app, &env, &wt).await?;
    let pr = worktrees::pull_request(&app, &env, &thread, &wt, req).await?;
    changed(&app, &thread.id);
    Ok((axum::http::StatusCode::CREATED, Json(pr)))
}

/// `POST /api/threads/:id/sync`.
#[utoipa::path(
    post,
    path = "/threads/{id}/sync",
    operation_id = "syncThread",
    tag = "threads",
    params(("id" = String, Path, description = "Thread id")),
    request_body = SyncRequest,
    responses(
        (status = 200, description = "Merged (or rebased onto) the environment's branch; `conflicts` not empty: undone, nothing changed", body = GitOutcome),
        (status = 404, description = "No such thread", body = ErrorBody),
        (status = 409, description = "Uncommitted changes, or no worktree", body = ErrorBody),
        (status = 502, description = "The fetch or git failed", body = ErrorBody),
        (status = 503, description = "The node holding the worktree is offline", body = ErrorBody),
        Errors,
    )
)]
pub async fn sync(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<SyncRequest>,
) -> ApiResult<Json<GitOutcome>> {
    let (thread, env, wt) = worktree_of(&app, &id).await?;
    let url = env
        .repo_url
        .clone()
        .ok_or_else(|| ApiError::conflict("the environment has no repository URL"))?;
    let branch = match &env.repo_branch {
        Some(b) if !b.is_empty() => b.clone(),
        _ => {
            return Err(ApiError::conflict(
                "the environment names no branch (repoBranch) to sync with",
            ))
        }
    };
    let op = GitOp::Sync {
        url: url.clone(),
        base_branch: branch,
        mode: req.mode,
    };
    let r = ask(&app, &env, &wt, op, REMOTE).await?;
    if r.conflicts.is_empty() {
        if let Some(base) = &r.base {
            app.store
                .set_worktree_base(thread.id.clone(), base.clone())
                .await?;
        }
    }
    changed(&app, &thread.id);
    Ok(Json(outcome(&wt, &r, Some(url))))
}
