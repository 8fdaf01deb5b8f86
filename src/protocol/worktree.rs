//! A thread's git worktree on the wire: where a thread's processes run when its environment
//! is a git repository ([`WorktreeSpec`], carried by `task:submit` and `terminal:open`), what
//! the node reports about the worktrees it holds (`worktree:state`), and the git operations
//! the gateway asks of it (`git:request`, answered by `git:result`).
//!
//! The gateway names the branch; the node decides where the worktree lives
//! (`<workspace>/.worktrees/<thread id>`) and creates it from the binding's clone the first
//! time a task or a terminal of the thread needs it.

use serde::{Deserialize, Serialize};

use super::api::{ChangedFile, SyncMode};
use super::SecretValue;

/// Run in the thread's own worktree instead of the binding's checkout. The process's
/// working dir (`cwd`) names a directory of the checkout; the node runs it in the same
/// directory of the worktree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorktreeSpec {
    pub thread_id: String,
    /// The binding whose checkout it comes from (its setup log gets the worktree's).
    pub binding_id: String,
    /// The environment's name (`VIBER_ENVIRONMENT` in the setup script).
    pub environment: String,
    /// The branch the worktree works on, created from the checkout's HEAD when missing.
    pub branch: String,
    /// The environment's setup script, run once in a new worktree (and again when it, the
    /// variables or the secrets change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub setup_script: Option<String>,
}

/// Node -> gateway: a worktree was created (or found) for a thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorktreeState {
    pub thread_id: String,
    pub branch: String,
    /// The commit the branch started from.
    pub base_commit: String,
    /// The worktree's directory on the node.
    pub path: String,
}

/// What the gateway asks of a thread's worktree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum GitOp {
    /// Everything that differs from `base`: commits, staged, unstaged and untracked files
    /// (ignored ones excluded). A file's patch longer than `maxFileBytes` is left out and
    /// the file marked truncated; so is every file after `maxTotalBytes`.
    Diff {
        max_file_bytes: u64,
        max_total_bytes: u64,
    },
    /// Commits every change (`git add -A`).
    Commit { message: String },
    /// Pushes the thread's branch to `url`.
    Push { url: String },
    /// Fetches `baseBranch` of `url` and merges it into the thread's branch (or rebases onto it).
    Sync {
        url: String,
        base_branch: String,
        mode: SyncMode,
    },
    /// Removes the worktree (and the branch when `deleteBranch`).
    Remove { delete_branch: bool },
}

/// Gateway -> node: one git operation on a thread's worktree. `secrets` are the
/// environment's (for a push or a fetch: `GIT_TOKEN`, an SSH key), never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitRequest {
    pub request_id: String,
    pub thread_id: String,
    pub branch: String,
    #[serde(flatten)]
    pub op: GitOp,
    /// Who commits (commit, and a sync's merge commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretValue>,
}

impl GitRequest {
    pub fn is_removal(&self) -> bool {
        matches!(self.op, GitOp::Remove { .. })
    }
}

/// Node -> gateway: how a [`GitRequest`] went. `error` (redacted) when it failed; what it
/// returns otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitResult {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The request asked for something the worktree's state does not allow (nothing to
    /// commit, uncommitted changes before a sync, no worktree): a conflict, not a failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conflict: bool,
    /// The branch's commit after the operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Diff: the changed files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ChangedFile>,
    /// Diff: the commit it is against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// Sync: files that conflicted (the merge or rebase was undone).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// What git printed (redacted), for push and sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A thread id the node accepts as a directory name.
pub fn valid_thread_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The last `n` characters of an id (what tells ids with one prefix apart).
pub fn id_tail(id: &str, n: usize) -> &str {
    let start = id
        .char_indices()
        .rev()
        .nth(n.saturating_sub(1))
        .map_or(0, |(i, _)| i);
    &id[start..]
}

/// A branch name for a thread: `viber/<slug of its title>-<last 8 of its id>`, always a
/// valid git ref name.
pub fn thread_branch(title: &str, thread_id: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let alnum: String = thread_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let short = id_tail(&alnum, 8);
    if slug.is_empty() {
        format!("viber/thread-{short}")
    } else {
        format!("viber/{slug}-{short}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_are_slugs_with_the_short_id() {
        assert_eq!(
            thread_branch("Fix the login bug!", "thr_0123456789abcdef"),
            "viber/fix-the-login-bug-89abcdef"
        );
        assert_eq!(thread_branch("..//~^:", "thr_ab"), "viber/thread-thrab");
        assert_eq!(id_tail("env_0123456789", 8), "23456789");
        assert_eq!(id_tail("ab", 8), "ab");
        let long = thread_branch(&"word ".repeat(40), "thr_x");
        assert!(long.len() < 60 && !long.contains("--"), "{long}");
    }

    #[test]
    fn every_git_request_round_trips_through_its_frame() {
        let ops = [
            GitOp::Diff {
                max_file_bytes: 1,
                max_total_bytes: 2,
            },
            GitOp::Commit {
                message: "m".into(),
            },
            GitOp::Push { url: "u".into() },
            GitOp::Sync {
                url: "u".into(),
                base_branch: "main".into(),
                mode: SyncMode::Rebase,
            },
            GitOp::Remove {
                delete_branch: true,
            },
        ];
        for op in ops {
            let f = crate::protocol::Frame::GitRequest(Box::new(GitRequest {
                request_id: "r".into(),
                thread_id: "t".into(),
                branch: "viber/x".into(),
                op,
                author_name: Some("a".into()),
                author_email: None,
                secrets: Vec::new(),
            }));
            let text = f.encode();
            match crate::protocol::Frame::decode(&text) {
                Ok(crate::protocol::Frame::GitRequest(r)) => {
                    assert_eq!(r.branch, "viber/x", "{text}");
                    assert_eq!(serde_json::to_string(&r.op).unwrap(), {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        serde_json::to_string(&serde_json::from_value::<GitOp>(v).unwrap()).unwrap()
                    });
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
