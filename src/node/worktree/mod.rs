//! A git worktree per thread: where a thread's tasks and terminals run when its environment
//! is a git repository, so threads of one binding work at once without overwriting each
//! other.
//!
//! A thread's worktree lives at `<workspace>/.worktrees/<thread id>` on the branch the
//! gateway named, created from the binding's checkout (its HEAD: the environment's branch as
//! last prepared) and sharing its object store. What the node knows about it (the branch,
//! the commit it started from, the checkout) is kept beside it in `<thread id>.json`.
//!
//! In the sandbox a worktree's processes see the worktree read-write and the checkout's
//! `.git` (objects, refs) read-write, but its `config`, `hooks`, `info` and the other
//! worktrees' admin dirs read-only, and in their own admin dir (`.git/worktrees/<id>`: index,
//! HEAD) the `commondir` and `gitdir` pointers read-only. The git commands the node itself
//! runs there (diff, commit, push) read that config, so a process of the thread must not be
//! able to make them run something: the node names the admin dir and the work tree itself
//! (`--git-dir`, `--work-tree`) instead of following the worktree's `.git` file, which the
//! thread can rewrite.
//!
//! The git operations on a worktree (`git:request`) are in `ops.rs`; they use the `git`
//! program (worktrees, merges and pushes are beyond gix), with hooks and fsmonitor off.
//!
//! Must not touch: the binding's checkout itself (prepare owns it; a worktree is created
//! under the binding's lock so a fetch does not move HEAD under it).

mod diff;
mod ops;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::sandbox::Mount;
use crate::protocol::worktree::{valid_thread_id, WorktreeSpec, WorktreeState};
use crate::protocol::Frame;

/// The node's worktrees.
#[derive(Clone)]
pub struct Worktrees {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<workspace>/.worktrees`.
    root: PathBuf,
    /// One lock per thread: creating, setting up, removing and git operations take turns.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// `worktree:state` frames to send.
    reports: Mutex<Vec<Frame>>,
    changed: Arc<Notify>,
}

/// What the node keeps about a worktree, in `<thread id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    branch: String,
    /// The commit the diff is against: where the branch started, moved by a sync.
    base: String,
    /// The binding's checkout (its work tree root) the worktree belongs to.
    checkout: PathBuf,
    /// Its admin dir in the checkout's `.git/worktrees`, as git made it.
    admin: PathBuf,
}

/// One thread's worktree.
#[derive(Debug, Clone)]
pub struct Worktree {
    pub thread_id: String,
    /// The worktree's root.
    pub dir: PathBuf,
    /// The checkout's `.git` (shared by every worktree of the binding).
    pub git_dir: PathBuf,
    /// The worktree's own part of it (`.git/worktrees/<name>`: HEAD, index).
    pub admin: PathBuf,
    pub branch: String,
    pub base: String,
}

impl Worktree {
    /// What a sandboxed process of the thread gets besides its working dir: the worktree,
    /// and the checkout's `.git` with its config and hooks read-only.
    pub fn mounts(&self) -> Vec<Mount> {
        let mut m = vec![Mount::writable(&self.dir), Mount::writable(&self.git_dir)];
        let existing = |p: PathBuf| p.exists().then_some(p);
        let read_only = ["config", "hooks", "info", "worktrees"]
            .iter()
            .filter_map(|d| existing(self.git_dir.join(d)));
        m.extend(read_only.map(|p| Mount::read_only(&p)));
        m.push(Mount::writable(&self.admin));
        let pointers = ["commondir", "gitdir"]
            .iter()
            .filter_map(|f| existing(self.admin.join(f)));
        m.extend(pointers.map(|p| Mount::read_only(&p)));
        m
    }

    /// `git` on this worktree, with its admin dir and work tree named (see the module).
    pub(super) fn git(&self) -> std::process::Command {
        let mut c = ops::git(&self.dir);
        c.arg("--git-dir")
            .arg(&self.admin)
            .arg("--work-tree")
            .arg(&self.dir);
        c
    }

    /// [`Self::git`] `args`: its trimmed stdout, or its stderr as the error.
    pub(super) fn output(&self, args: &[&str]) -> Result<String, String> {
        let mut c = self.git();
        c.args(args);
        ops::checked(c)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Worktrees {
    pub fn new(workspace: &Path, changed: Arc<Notify>) -> Worktrees {
        Worktrees {
            inner: Arc::new(Inner {
                root: workspace.join(".worktrees"),
                locks: Mutex::new(HashMap::new()),
                reports: Mutex::new(Vec::new()),
                changed,
            }),
        }
    }

    /// Frames to send: the worktrees created or found since the last call.
    pub fn take_reports(&self) -> Vec<Frame> {
        std::mem::take(&mut *lock(&self.inner.reports))
    }

    /// The threads this node holds a worktree for.
    pub fn list(&self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.inner.root) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = dir
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                valid_thread_id(id).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        ids
    }

    /// Waits for the thread's turn.
    pub async fn lock(&self, thread_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let l = {
            let mut locks = lock(&self.inner.locks);
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(thread_id.to_string()).or_default().clone()
        };
        l.lock_owned().await
    }

    fn meta_path(&self, thread_id: &str) -> PathBuf {
        self.inner.root.join(format!("{thread_id}.json"))
    }

    /// The thread's worktree, if the node has it.
    pub fn get(&self, thread_id: &str) -> Result<Worktree, String> {
        if !valid_thread_id(thread_id) {
            return Err(format!("{thread_id:?} is not a thread id"));
        }
        let dir = self.inner.root.join(thread_id);
        let meta: Meta = std::fs::read(self.meta_path(thread_id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|_| dir.join(".git").exists())
            .ok_or_else(|| format!("this node has no worktree for thread {thread_id}"))?;
        Ok(Worktree {
            thread_id: thread_id.to_string(),
            dir,
            git_dir: meta.checkout.join(".git"),
            admin: meta.admin,
            branch: meta.branch,
            base: meta.base,
        })
    }

    fn save(&self, wt: &Worktree, checkout: &Path) -> Result<(), String> {
        let meta = Meta {
            branch: wt.branch.clone(),
            base: wt.base.clone(),
            checkout: checkout.to_path_buf(),
            admin: wt.admin.clone(),
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
        crate::crypto::write_private_file(&self.meta_path(&wt.thread_id), &json)
            .map_err(|e| format!("saving worktree state: {e}"))
    }

    /// The thread's worktree, created from the checkout `cwd` belongs to when missing;
    /// and the directory of the worktree that corresponds to `cwd`. The caller holds the
    /// thread's lock and the binding's.
    pub async fn ensure(
        &self,
        spec: &WorktreeSpec,
        cwd: &Path,
    ) -> Result<(Worktree, PathBuf, bool), String> {
        let this = self.clone();
        let (spec, cwd) = (spec.clone(), cwd.to_path_buf());
        tokio::task::spawn_blocking(move || this.ensure_blocking(&spec, &cwd))
            .await
            .map_err(|e| format!("creating the worktree: {e}"))?
    }

    fn ensure_blocking(
        &self,
        spec: &WorktreeSpec,
        cwd: &Path,
    ) -> Result<(Worktree, PathBuf, bool), String> {
        if !valid_thread_id(&spec.thread_id) {
            return Err(format!("{:?} is not a thread id", spec.thread_id));
        }
        let cwd = std::fs::canonicalize(cwd)
            .map_err(|e| format!("working directory {}: {e}", cwd.display()))?;
        let checkout = checkout_root(&cwd)?;
        let rel = cwd
            .strip_prefix(&checkout)
            .map_err(|_| format!("{} is not inside {}", cwd.display(), checkout.display()))?
            .to_path_buf();
        let (wt, created) = match self.get(&spec.thread_id) {
            Ok(wt) if wt.branch == spec.branch => (wt, false),
            _ => (self.create(spec, &checkout)?, true),
        };
        let workdir = wt.dir.join(&rel);
        if !workdir.is_dir() {
            return Err(format!(
                "the worktree has no directory {} (the working dir)",
                rel.display()
            ));
        }
        // Reported after a restart of the node too, so the gateway knows where it is.
        lock(&self.inner.reports).push(Frame::WorktreeState(WorktreeState {
            thread_id: wt.thread_id.clone(),
            branch: wt.branch.clone(),
            base_commit: wt.base.clone(),
            path: wt.dir.display().to_string(),
        }));
        self.inner.changed.notify_one();
        Ok((wt, workdir, created))
    }

    fn create(&self, spec: &WorktreeSpec, checkout: &Path) -> Result<Worktree, String> {
        let dir = self.inner.root.join(&spec.thread_id);
        std::fs::create_dir_all(&self.inner.root)
            .map_err(|e| format!("creating {}: {e}", self.inner.root.display()))?;
        // A directory left by an interrupted create, or a worktree git no longer knows.
        if dir.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = ops::git_output(checkout, &["worktree", "prune"]);
        let base = ops::git_output(checkout, &["rev-parse", "--verify", "HEAD^{commit}"])
            .map_err(|e| format!("the checkout has no commit to start from: {e}"))?;
        let reference = format!("refs/heads/{}", spec.branch);
        let exists =
            ops::git_output(checkout, &["rev-parse", "--verify", "-q", &reference]).is_ok();
        let path = dir.to_string_lossy().to_string();
        let args: Vec<&str> = if exists {
            vec!["worktree", "add", "--quiet", &path, &spec.branch]
        } else {
            vec![
                "worktree",
                "add",
                "--quiet",
                "-b",
                &spec.branch,
                &path,
                &base,
            ]
        };
        ops::git_output(checkout, &args).map_err(|e| format!("git worktree add: {e}"))?;
        // Where git put its admin dir, read now, before anything of the thread runs there.
        let admin = std::fs::read_to_string(dir.join(".git"))
            .ok()
            .and_then(|s| s.strip_prefix("gitdir:").map(|p| PathBuf::from(p.trim())))
            .and_then(|p| std::fs::canonicalize(p).ok())
            .filter(|p| p.starts_with(checkout.join(".git").join("worktrees")))
            .ok_or("git worktree add left no admin dir in the checkout's .git/worktrees")?;
        let wt = Worktree {
            thread_id: spec.thread_id.clone(),
            dir,
            git_dir: checkout.join(".git"),
            admin,
            branch: spec.branch.clone(),
            base,
        };
        self.save(&wt, checkout)?;
        tracing::info!(thread = %wt.thread_id, branch = %wt.branch, "worktree created");
        Ok(wt)
    }

    /// Drops what is left of a worktree that is not whole (a valid thread id only).
    fn forget(&self, thread_id: &str) {
        if valid_thread_id(thread_id) {
            let _ = std::fs::remove_file(self.meta_path(thread_id));
            let _ = std::fs::remove_dir_all(self.inner.root.join(thread_id));
        }
    }

    /// Removes the thread's worktree (and its branch when asked).
    fn remove(&self, wt: &Worktree, delete_branch: bool) -> Result<(), String> {
        let checkout = wt
            .git_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let path = wt.dir.to_string_lossy().to_string();
        if ops::git_output(&checkout, &["worktree", "remove", "--force", &path]).is_err() {
            let _ = std::fs::remove_dir_all(&wt.dir);
            let _ = ops::git_output(&checkout, &["worktree", "prune"]);
        }
        if delete_branch {
            let _ = ops::git_output(&checkout, &["branch", "-D", "--", &wt.branch]);
        }
        let _ = std::fs::remove_file(self.meta_path(&wt.thread_id));
        tracing::info!(thread = %wt.thread_id, "worktree removed");
        Ok(())
    }
}

/// The root of the (main) work tree `dir` belongs to: the binding's checkout.
fn checkout_root(dir: &Path) -> Result<PathBuf, String> {
    let top = ops::git_output(dir, &["rev-parse", "--show-toplevel"])
        .map_err(|e| format!("{} is not in a git checkout: {e}", dir.display()))?;
    let common = ops::git_output(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
    )
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    let top = std::fs::canonicalize(top).map_err(|e| e.to_string())?;
    let common = std::fs::canonicalize(common).map_err(|e| e.to_string())?;
    if common != top.join(".git") {
        return Err(format!(
            "{} is not the main work tree of its repository",
            top.display()
        ));
    }
    Ok(top)
}

/// `git` is what worktrees need on a node.
pub fn available() -> bool {
    std::process::Command::new("git")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
