//! Threads' git worktrees, as the gateway sees them: which threads get one (git
//! environments, unless `metadata.worktrees` is false), the branch each works on, what nodes
//! report about them, and the git operations asked of a node (`git:request`), whose answers
//! wait here by request id. Pull requests are opened from here (`github.rs`): the gateway
//! talks to GitHub's API, never to the repository.
//!
//! Never touches a repository itself: every git operation runs on the node holding the
//! worktree.

mod github;

pub use github::pull_request;

use std::time::Duration;

use crate::clock::now_ms;
use crate::crypto;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::link::Outgoing;
use crate::gateway::waiters::{Unanswered, Waiters};
use crate::gateway::App;
use crate::protocol::events::Event;
use crate::protocol::worktree::{
    thread_branch, GitOp, GitRequest, GitResult, WorktreeSpec, WorktreeState,
};
use crate::protocol::{ErrorCode, Frame};
use crate::store::{BindingRecord, EnvironmentRecord, ThreadRecord, WorktreeRecord};

/// Git operations waiting for their node's answer, by request id.
pub type GitRequests = Waiters<GitResult>;

/// Request ids of removals nobody waits for (archiving, orphans): their answers are
/// dropped quietly.
const UNWATCHED: &str = "gitgc";

/// Whether a thread of `env` works in a worktree of its own.
pub fn uses_worktrees(env: &EnvironmentRecord) -> bool {
    env.kind.is_git()
        && serde_json::from_str::<serde_json::Value>(&env.metadata)
            .ok()
            .and_then(|m| m.get("worktrees").and_then(|w| w.as_bool()))
            != Some(false)
}

/// The worktree a process of `thread` on `binding` runs in (None when the environment
/// shares one directory): the thread's branch is named the first time.
pub async fn spec(
    app: &App,
    env: &EnvironmentRecord,
    binding: &BindingRecord,
    thread: &str,
) -> ApiResult<Option<WorktreeSpec>> {
    if !uses_worktrees(env) {
        return Ok(None);
    }
    let Some(t) = app.store.thread(thread.to_string()).await? else {
        return Err(ApiError::not_found(format!("no thread {thread:?}")));
    };
    let rec = app
        .store
        .worktree_or_insert(WorktreeRecord {
            thread_id: t.id.clone(),
            node_id: binding.node_id.clone(),
            binding_id: binding.id.clone(),
            branch: thread_branch(&t.title, &t.id),
            base_commit: None,
            path: None,
            pr_url: None,
            pr_number: None,
            created_at: now_ms(),
        })
        .await?;
    Ok(Some(WorktreeSpec {
        thread_id: t.id,
        binding_id: binding.id.clone(),
        environment: env.name.clone(),
        branch: rec.branch,
        setup_script: Some(env.setup_script.clone()).filter(|s| !s.trim().is_empty()),
    }))
}

/// A node's `worktree:state`: records where the worktree is and where its branch started.
pub async fn reported(app: &App, node_id: &str, s: WorktreeState) -> Option<Frame> {
    let thread = s.thread_id.clone();
    match app
        .store
        .worktree_reported(
            s.thread_id,
            node_id.to_string(),
            s.branch,
            s.base_commit,
            s.path,
        )
        .await
    {
        Ok(true) => {
            app.events
                .publish(Event::ThreadChanged { thread_id: thread });
            None
        }
        Ok(false) => Some(Frame::error(
            ErrorCode::NotOwner,
            format!("thread {thread} has no worktree on this node"),
        )),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "recording a worktree");
            None
        }
    }
}

/// A node's `git:result`: hands it to the waiting request.
pub fn complete(app: &App, node_id: &str, result: GitResult) -> Option<Frame> {
    let id = result.request_id.clone();
    match app.git_requests.answer(node_id, &id, result) {
        Ok(()) => None,
        Err(_) if id.starts_with(UNWATCHED) => None,
        Err(Unanswered::OtherNode) => Some(Frame::error(
            ErrorCode::NotOwner,
            format!("git request {id} was not asked of this node"),
        )),
        Err(Unanswered::Unknown) => Some(Frame::error(
            ErrorCode::InvalidFrame,
            format!("no git request {id} is waiting"),
        )),
    }
}

/// The thread's worktree record, once its node created the worktree.
pub async fn created(app: &App, thread: &ThreadRecord) -> ApiResult<WorktreeRecord> {
    match app.store.worktree(thread.id.clone()).await? {
        Some(w) if w.base_commit.is_some() && w.path.is_some() => Ok(w),
        Some(_) => Err(ApiError::conflict(
            "the thread's worktree is not created yet (its first task creates it)",
        )),
        None => Err(ApiError::conflict(
            "this thread has no worktree: its environment is not a git repository, or has \
             metadata.worktrees set to false",
        )),
    }
}

/// Who commits: the environment's GIT_AUTHOR_NAME / GIT_AUTHOR_EMAIL variables, else the
/// gateway's `--git-author`.
async fn author(app: &App, env: &EnvironmentRecord) -> ApiResult<(String, String)> {
    let vars = app.store.effective_vars(env.id.clone()).await?;
    let (default_name, default_email) = parse_author(&app.config.git_author);
    Ok((
        vars.get("GIT_AUTHOR_NAME").cloned().unwrap_or(default_name),
        vars.get("GIT_AUTHOR_EMAIL")
            .cloned()
            .unwrap_or(default_email),
    ))
}

/// `Name <email>` (a bare name gets `viber@localhost`).
fn parse_author(s: &str) -> (String, String) {
    match s.split_once('<') {
        Some((name, rest)) => (
            name.trim().to_string(),
            rest.trim_end().trim_end_matches('>').trim().to_string(),
        ),
        None => (s.trim().to_string(), "viber@localhost".to_string()),
    }
}

/// Asks the node holding the thread's worktree to run `op` and waits for its answer. A
/// refusal the worktree's state explains is a 409; a failure (git's own words, secrets
/// redacted by the node) a 502.
pub async fn ask(
    app: &App,
    env: &EnvironmentRecord,
    wt: &WorktreeRecord,
    op: GitOp,
    timeout: Duration,
) -> ApiResult<GitResult> {
    let tx = app.registry.sender(&wt.node_id).ok_or_else(|| {
        ApiError::unavailable(format!(
            "node {} holding the thread's worktree is offline",
            wt.node_id
        ))
    })?;
    let needs_secrets = matches!(op, GitOp::Push { .. } | GitOp::Sync { .. });
    let secrets = if needs_secrets {
        crate::gateway::envs::unseal_secrets(app, &env.id, true).await?
    } else {
        Vec::new()
    };
    let (name, email) = author(app, env).await?;
    let request_id = crypto::new_id("git");
    let mut waiting = app.git_requests.wait(request_id.clone(), &wt.node_id);
    let frame = Frame::GitRequest(Box::new(GitRequest {
        request_id,
        thread_id: wt.thread_id.clone(),
        branch: wt.branch.clone(),
        op,
        author_name: Some(name),
        author_email: Some(email),
        secrets,
    }));
    if tx.send(Outgoing::frame(frame)).await.is_err() {
        return Err(ApiError::unavailable(format!(
            "node {} went offline",
            wt.node_id
        )));
    }
    let answer = match tokio::time::timeout(timeout, &mut waiting.answer).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) | Err(_) => {
            return Err(ApiError::unavailable(format!(
                "node {} did not answer within {} s",
                wt.node_id,
                timeout.as_secs()
            )))
        }
    };
    match (&answer.error, answer.conflict) {
        (Some(e), true) => Err(ApiError::conflict(e.clone())),
        (Some(e), false) => Err(ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "git_failed",
            e.clone(),
        )),
        (None, _) => Ok(answer),
    }
}

/// Asks the node to remove the thread's worktree, without waiting (an offline node removes
/// it when its heartbeat reports it).
pub async fn remove(app: &App, wt: &WorktreeRecord, delete_branch: bool) {
    send_removal(app, &wt.node_id, &wt.thread_id, &wt.branch, delete_branch).await;
    if let Err(e) = app.store.worktree_removed(wt.thread_id.clone()).await {
        tracing::error!(error = format!("{e:#}"), "recording a removed worktree");
    }
}

async fn send_removal(app: &App, node: &str, thread: &str, branch: &str, delete_branch: bool) {
    let Some(tx) = app.registry.sender(node) else {
        return;
    };
    let frame = Frame::GitRequest(Box::new(GitRequest {
        request_id: crypto::new_id(UNWATCHED),
        thread_id: thread.to_string(),
        branch: branch.to_string(),
        op: GitOp::Remove { delete_branch },
        author_name: None,
        author_email: None,
        secrets: Vec::new(),
    }));
    let _ = tx.send(Outgoing::frame(frame)).await;
}

/// A heartbeat listed the node's worktrees: those of threads that are gone, archived or
/// moved to another node are removed (their branches stay).
pub async fn remove_orphans(app: &App, node_id: &str, threads: Vec<String>) {
    let orphans = match app
        .store
        .orphan_worktrees(node_id.to_string(), threads)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "looking for orphan worktrees");
            return;
        }
    };
    for thread in orphans {
        tracing::info!(%thread, node = node_id, "removing an orphan worktree");
        // The node checks the branch before removing: give it the one it has.
        let branch = match app.store.worktree(thread.clone()).await {
            Ok(Some(w)) => w.branch,
            _ => String::new(),
        };
        send_removal(app, node_id, &thread, &branch, false).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn authors_parse() {
        assert_eq!(
            super::parse_author("Ada Lovelace <ada@example.com>"),
            ("Ada Lovelace".into(), "ada@example.com".into())
        );
        assert_eq!(
            super::parse_author("bot"),
            ("bot".into(), "viber@localhost".into())
        );
    }
}
