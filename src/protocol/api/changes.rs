//! A thread's work as git sees it (`/api/threads/:id/diff`, `commit`, `push`,
//! `pull-request`, `sync`): the thread's worktree against the commit its branch started
//! from, and delivering it.

use serde::{Deserialize, Serialize};

use crate::protocol::names::wire_enum;

wire_enum! {
    /// How a file changed.
    pub enum FileStatus ("file status") {
        Added = "added",
        Modified = "modified",
        Deleted = "deleted",
        Renamed = "renamed",
        Copied = "copied",
        /// Its type changed (a file became a symlink).
        TypeChanged = "type-changed",
    }
}

wire_enum! {
    /// How `sync` brings the environment's branch into the thread's.
    #[derive(Default)]
    pub enum SyncMode ("sync mode") {
        #[default]
        Merge = "merge",
        Rebase = "rebase",
    }
}

/// A thread's worktree.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
#[serde(rename_all = "camelCase")]
pub struct WorktreeView {
    pub branch: String,
    pub node_id: String,
    /// Where the branch started (absent until the node created the worktree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub base: Option<String>,
    /// Its directory on the node (absent until created, and once removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub pull_request_url: Option<String>,
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ChangedFile {
    pub path: String,
    /// The path before a rename or copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    #[cfg_attr(test, ts(optional))]
    pub old_path: Option<String>,
    pub status: FileStatus,
    pub additions: u64,
    pub deletions: u64,
    pub binary: bool,
    /// The unified patch (`git diff --binary` for binary files), empty when truncated.
    pub patch: String,
    /// The patch was left out: longer than the limit for one file, or past the limit for
    /// the whole diff.
    #[serde(default)]
    pub truncated: bool,
}

/// `GET /api/threads/:id/diff`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ThreadDiff {
    pub thread_id: String,
    pub branch: String,
    /// The commit the thread's branch started from.
    pub base: String,
    /// The branch's commit now (uncommitted changes are in the diff as well).
    pub head: String,
    pub files: Vec<ChangedFile>,
    pub additions: u64,
    pub deletions: u64,
    /// Some patches were left out (see [`ChangedFile::truncated`]).
    pub truncated: bool,
}

/// `?maxFileBytes=&maxTotalBytes=` of `GET /api/threads/:id/diff`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct DiffQuery {
    /// A file whose patch is longer than this is listed without it (default 256 KiB).
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// Patches stop after this many bytes in all (default and most: 768 KiB).
    #[serde(default)]
    pub max_total_bytes: Option<u64>,
}

/// `POST /api/threads/:id/commit`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommitRequest {
    /// Default: the thread's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
}

/// What `commit`, `push` and `sync` did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct GitOutcome {
    pub branch: String,
    /// The branch's commit afterwards.
    pub head: String,
    /// What git printed (push, sync), secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    #[cfg_attr(test, ts(optional))]
    pub output: Option<String>,
    /// Push: where to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    #[cfg_attr(test, ts(optional))]
    pub remote: Option<String>,
    /// Sync: the files that conflicted. Not empty: the merge or rebase was undone and the
    /// worktree is as it was.
    #[serde(default)]
    pub conflicts: Vec<String>,
}

/// `POST /api/threads/:id/sync`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncRequest {
    #[serde(default)]
    pub mode: SyncMode,
}

/// `POST /api/threads/:id/pull-request`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PullRequestRequest {
    /// Default: the thread's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub title: Option<String>,
    /// Default: a summary with a link to the thread; a given body gets the link appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub body: Option<String>,
    #[serde(default)]
    pub draft: bool,
}

/// The pull request opened.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PullRequestView {
    pub number: u64,
    /// Its page (`html_url`).
    pub url: String,
    pub head: String,
    pub base: String,
    pub draft: bool,
}
