//! Blocking git operations built on `gix` (gitoxide). Run them via `tokio::task::spawn_blocking`.
//!
//! http(s):// goes through gix's reqwest transport with rustls on ring (see `crate::tls`).
//!
//! Note: `file://` URLs are served by spawning `git upload-pack` (gix-transport does this, like git itself),
//! so the `git` binary must be on PATH for local URLs. `git://` is pure Rust.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use gix::bstr::{BStr, BString, ByteSlice};
use gix::progress::Discard;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::remote::Direction;

/// Credentials for an https repository (from the environment's `GIT_TOKEN` secret), given to
/// git when the server asks for them; never part of the URL or the repository's config.
#[derive(Clone)]
pub struct HttpAuth {
    pub username: String,
    pub password: String,
    /// The repository URL they are for: a request for another host or port, or over plain
    /// http (a redirect), gets nothing.
    pub url: String,
}

/// Scheme, host (lowercase) and port of an https URL, as gix reads it; None for anything
/// else.
fn https_origin(url: &[u8]) -> Option<(String, u16)> {
    let u = gix::url::parse(gix::bstr::BStr::new(url)).ok()?;
    if u.scheme != gix::url::Scheme::Https {
        return None;
    }
    Some((u.host()?.to_ascii_lowercase(), u.port_or_default()?))
}

/// The credential callback gix calls when the server asks (HTTP 401). gix gives it the URL
/// being fetched (only that: the rest of the context is empty).
fn answer_with(
    auth: HttpAuth,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    let origin = https_origin(auth.url.as_bytes());
    move |action| match action {
        gix::credentials::helper::Action::Get(ctx)
            if origin.is_some()
                && ctx.url.as_ref().and_then(|u| https_origin(u.as_ref())) == origin =>
        {
            Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: auth.username.clone(),
                    password: auth.password.clone(),
                    oauth_refresh_token: None,
                },
                next: ctx.into(),
            }))
        }
        _ => Ok(None),
    }
}

/// Clone `url` into `dest` (must be absent or empty) and check out `branch`, or the remote's default
/// branch (`HEAD`) when `None`. Returns the hex id of the checked-out commit.
pub fn clone_repo(
    url: &str,
    branch: Option<&str>,
    dest: &Path,
    auth: Option<HttpAuth>,
    interrupt: &AtomicBool,
) -> Result<String> {
    let dest_existed = dest.exists(); // before prepare_clone(), which creates it
    let mut prepare = gix::prepare_clone(url, dest)
        .with_context(|| format!("cannot prepare clone of {url} into {}", dest.display()))?;
    if let Some(auth) = auth {
        prepare = prepare.configure_connection(move |conn| {
            conn.set_credentials(answer_with(auth.clone()));
            Ok(())
        });
    }
    if let Some(branch) = branch {
        prepare = prepare
            .with_ref_name(Some(branch))
            .with_context(|| format!("invalid branch name {branch:?}"))?;
    }
    // On error, gix's drop of `PrepareFetch`/`PrepareCheckout` deletes `dest` (even a pre-existing
    // empty dir); recreate it so the caller's directory survives a failed clone.
    let restore_dest = || {
        if dest_existed && !dest.exists() {
            let _ = std::fs::create_dir_all(dest);
        }
    };
    let fetched = prepare.fetch_then_checkout(Discard, interrupt);
    drop(prepare);
    let (mut checkout, _outcome) = fetched.map_err(|e| {
        restore_dest();
        fetch_error(e, url, branch, interrupt)
    })?;
    let checked_out = checkout.main_worktree(Discard, interrupt);
    drop(checkout);
    let (repo, outcome) = checked_out.map_err(|e| {
        restore_dest();
        anyhow!("checkout into {} failed: {}", dest.display(), chain(&e))
    })?;
    // From here on the repository is ours (gix no longer cleans up): undo the clone on failure.
    let result = (|| {
        // Interruption is reported as Ok with a partial checkout.
        if interrupt.load(Ordering::Relaxed) {
            bail!("clone of {url} was interrupted");
        }
        check_outcome(&outcome)?;
        let head = repo
            .head_id()
            .with_context(|| format!("{url} is empty (no commit to check out)"))?;
        Ok(head.to_string())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
        restore_dest();
    }
    result
}

/// Fetch `branch` from `url` into the existing clone at `dest` and make the worktree match
/// `origin/<branch>`, like `git fetch && git checkout -B branch origin/branch && git reset --hard`.
/// Files tracked before but not present upstream are deleted; untracked files are left alone.
/// `branch` None keeps the branch the clone has checked out.
pub fn update_repo(
    dest: &Path,
    url: &str,
    branch: Option<&str>,
    auth: Option<HttpAuth>,
    interrupt: &AtomicBool,
) -> Result<String> {
    let current;
    let branch = match branch {
        Some(b) => b,
        None => {
            let repo = open_checkout(dest)
                .with_context(|| format!("cannot open repository at {}", dest.display()))?;
            current = repo
                .head_name()?
                .map(|n| n.shorten().to_string())
                .ok_or_else(|| anyhow!("{} has a detached HEAD; set repoBranch", dest.display()))?;
            current.as_str()
        }
    };
    let repo = open_checkout(dest)
        .with_context(|| format!("cannot open repository at {}", dest.display()))?;
    let workdir = repo
        .workdir()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} is a bare repository", dest.display()))?;

    // 1. fetch `refs/heads/<branch>` into `refs/remotes/origin/<branch>`.
    let remote_id = fetch_branch(&repo, url, branch, auth, interrupt)?;
    if interrupt.load(Ordering::Relaxed) {
        bail!("update of {} was interrupted", dest.display());
    }

    // 2. target commit and tree (objects were just fetched; the ODB refreshes itself on miss).
    let commit = repo
        .find_commit(remote_id)
        .with_context(|| format!("origin/{branch} ({remote_id}) is not a commit"))?;
    let tree_id = commit
        .tree_id()
        .context("cannot read tree of target commit")?
        .detach();

    // 3. make the worktree match the tree.
    reset_worktree_to_tree(&repo, &workdir, tree_id, interrupt)?;

    // 4. move refs: refs/heads/<branch> := commit, HEAD -> refs/heads/<branch>.
    point_head_at(&repo, branch, remote_id)?;
    Ok(remote_id.to_string())
}

/// Fetches `refs/heads/<branch>` of `url` into `refs/remotes/origin/<branch>`; returns the
/// fetched commit id.
fn fetch_branch(
    repo: &gix::Repository,
    url: &str,
    branch: &str,
    auth: Option<HttpAuth>,
    interrupt: &AtomicBool,
) -> Result<gix::ObjectId> {
    let tracking = format!("refs/remotes/origin/{branch}");
    let remote = repo
        .remote_at(url)
        .with_context(|| format!("invalid remote URL {url}"))?
        .with_refspecs(
            [format!("+refs/heads/{branch}:{tracking}").as_str()],
            Direction::Fetch,
        )
        .with_context(|| format!("invalid branch name {branch:?}"))?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut conn = remote
        .connect(Direction::Fetch)
        .map_err(|e| anyhow!("repository not reachable: {url}: {}", chain(&e)))?;
    if let Some(auth) = auth {
        conn.set_credentials(answer_with(auth));
    }
    let prepare = conn
        .prepare_fetch(Discard, Default::default())
        .map_err(|e| anyhow!("repository not reachable: {url}: {}", chain(&e)))?;
    if prepare.ref_map().mappings.is_empty() {
        bail!("branch {branch} not found in {url}");
    }
    let outcome = prepare
        .receive(Discard, interrupt)
        .with_context(|| format!("fetch from {url} failed"))?;
    outcome
        .ref_map
        .mappings
        .iter()
        .find_map(|m| m.remote.as_id())
        .map(|id| id.to_owned())
        .ok_or_else(|| anyhow!("branch {branch} not found in {url}"))
}

/// `refs/heads/<branch>` := `commit`, and HEAD -> `refs/heads/<branch>`.
fn point_head_at(repo: &gix::Repository, branch: &str, remote_id: gix::ObjectId) -> Result<()> {
    let local: gix::refs::FullName = format!("refs/heads/{branch}")
        .try_into()
        .with_context(|| format!("invalid branch name {branch:?}"))?;
    let log = LogChange {
        mode: RefLog::AndReference,
        force_create_reflog: false,
        message: format!("update_repo: reset to origin/{branch}").into(),
    };
    repo.edit_references([
        RefEdit {
            change: Change::Update {
                log: log.clone(),
                expected: PreviousValue::Any,
                new: gix::refs::Target::Object(remote_id),
            },
            name: local.clone(),
            deref: false,
        },
        RefEdit {
            change: Change::Update {
                log,
                expected: PreviousValue::Any,
                new: gix::refs::Target::Symbolic(local),
            },
            name: "HEAD".try_into().expect("valid"),
            deref: false,
        },
    ])
    .context("cannot update HEAD / local branch")?;
    Ok(())
}

/// Overwrite the worktree (and index) with the contents of `tree_id`, deleting files that were tracked
/// by the old index but are not part of the new tree.
fn reset_worktree_to_tree(
    repo: &gix::Repository,
    workdir: &Path,
    tree_id: gix::ObjectId,
    interrupt: &AtomicBool,
) -> Result<()> {
    let mut new_index = repo
        .index_from_tree(&tree_id)
        .with_context(|| format!("cannot build index from tree {tree_id}"))?;

    // A missing/unreadable index just means: nothing to delete, nothing to skip.
    let old_index = repo.open_index().ok();
    let skipped = match &old_index {
        Some(old_index) => {
            delete_untracked_by(old_index, &new_index, workdir)?;
            skip_unchanged(repo, old_index, &mut new_index)?
        }
        None => 0,
    };

    let mut opts = repo
        .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
        .context("cannot read checkout options from config")?;
    // No filter drivers (`filter.<name>.smudge`/`process`): they are commands from the
    // repository's config, which the environment's tasks can write, and would run here,
    // outside the sandbox.
    opts.filters.options_mut().drivers.clear();
    opts.destination_is_initially_empty = false;
    opts.overwrite_existing = true;
    let objects = repo
        .objects
        .clone()
        .into_arc()
        .map_err(|e| anyhow!("cannot share object database: {e}"))?;
    let outcome = gix::worktree::state::checkout(
        &mut new_index,
        workdir,
        objects,
        &Discard,
        &Discard,
        interrupt,
        opts,
    )
    .context("checkout failed")?;
    if interrupt.load(Ordering::Relaxed) {
        bail!("checkout into {} was interrupted", workdir.display());
    }
    check_outcome(&outcome)?;
    if skipped > 0 {
        for entry in new_index.entries_mut() {
            entry.flags.remove(gix::index::entry::Flags::SKIP_WORKTREE);
        }
    }
    new_index
        .write(Default::default())
        .context("cannot write index")?;
    Ok(())
}

/// Deletes files that `old_index` tracked but `new_index` does not (like `git reset --hard`).
fn delete_untracked_by(
    old_index: &gix::index::File,
    new_index: &gix::index::State,
    workdir: &Path,
) -> Result<()> {
    // Delete files that were tracked but are not in the target tree (like `git reset --hard`).
    for entry in old_index.entries() {
        let path = entry.path(old_index);
        if new_index.entry_by_path(path).is_some() {
            continue;
        }
        let full = workdir.join(rel_path(path)?);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => {} // gitlink/submodule or replaced by the user: leave it
            Ok(_) => {
                std::fs::remove_file(&full)
                    .with_context(|| format!("cannot delete {}", full.display()))?;
                remove_empty_parents(&full, workdir);
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// Marks entries of `new_index` whose blob and mode are unchanged and that are clean on disk
/// as skip-worktree, so checkout does not rewrite them. Returns how many.
fn skip_unchanged(
    repo: &gix::Repository,
    old_index: &gix::index::File,
    new_index: &mut gix::index::State,
) -> Result<usize> {
    let mut skipped = 0;
    // Don't rewrite files whose blob and mode are unchanged and that are clean on disk. Cleanliness is
    // decided by gix's index-vs-worktree status (stat check, content re-hash for racy entries, filters).
    let (dirty, refreshed) = tracked_changes(repo)?;
    for (entry, path) in new_index.entries_mut_with_paths() {
        let Some(old) = old_index.entry_by_path(path) else {
            continue;
        };
        if old.id != entry.id
            || old.mode != entry.mode
            || old.flags.contains(gix::index::entry::Flags::SKIP_WORKTREE)
            || dirty.contains(path)
        {
            continue;
        }
        entry.stat = refreshed.get(path).copied().unwrap_or(old.stat);
        entry.flags.insert(gix::index::entry::Flags::SKIP_WORKTREE);
        skipped += 1;
    }
    Ok(skipped)
}

/// Paths of tracked files that differ from the current index (modified, deleted, type-changed, conflicted),
/// and fresh stat data for entries that are clean but whose index stat was outdated.
fn tracked_changes(
    repo: &gix::Repository,
) -> Result<(HashSet<BString>, HashMap<BString, gix::index::entry::Stat>)> {
    use gix::status::index_worktree::Item;
    use gix::status::plumbing::index_as_worktree::EntryStatus;

    let mut dirty = HashSet::new();
    let mut refreshed = HashMap::new();
    let iter = repo
        .status(Discard)
        .context("cannot compute worktree status")?
        .untracked_files(gix::status::UntrackedFiles::None) // no dirwalk
        .index_worktree_rewrites(None)
        .index_worktree_submodules(None)
        .into_index_worktree_iter(Vec::new())
        .context("cannot compute worktree status")?;
    for item in iter {
        if let Item::Modification {
            rela_path, status, ..
        } = item.context("cannot compute worktree status")?
        {
            match status {
                EntryStatus::NeedsUpdate(stat) => {
                    refreshed.insert(rela_path, stat);
                }
                _ => {
                    dirty.insert(rela_path);
                }
            }
        }
    }
    Ok((dirty, refreshed))
}

fn check_outcome(outcome: &gix::worktree::state::checkout::Outcome) -> Result<()> {
    if let Some(err) = outcome.errors.first() {
        bail!(
            "checkout failed for {} file(s), first: {}: {}",
            outcome.errors.len(),
            err.path,
            err.error
        );
    }
    if let Some(c) = outcome.collisions.first() {
        bail!(
            "checkout had {} path collision(s), first: {}",
            outcome.collisions.len(),
            c.path
        );
    }
    Ok(())
}

fn rel_path(path: &BStr) -> Result<PathBuf> {
    Ok(gix::path::from_bstr(path)
        .map_err(|_| anyhow!("non-UTF8 path {path:?}"))?
        .into_owned())
}

fn remove_empty_parents(file: &Path, workdir: &Path) {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d == workdir || !d.starts_with(workdir) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

/// Check that `url` is reachable and (if given) `branch` exists there, like
/// `git ls-remote url refs/heads/<branch>`, without cloning. Gives up after `timeout`.
pub fn remote_has_branch(url: &str, branch: Option<&str>, timeout: Duration) -> Result<()> {
    let (tx, rx) = mpsc::channel();
    let (url_owned, branch_owned) = (url.to_owned(), branch.map(str::to_owned));
    // Blocking gix I/O cannot be cancelled; on timeout the thread is abandoned (it ends when the OS
    // gives up on the socket / the server answers). git:// connects have a 5s connect timeout built in.
    std::thread::Builder::new()
        .name("git-ls-remote".into())
        .spawn(move || {
            let _ = tx.send(ls_remote(&url_owned, branch_owned.as_deref()));
        })
        .context("cannot spawn ls-remote thread")?;
    match rx.recv_timeout(timeout) {
        Ok(res) => res,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            bail!("repository not reachable: {url}: no answer within {timeout:?}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            bail!("repository not reachable: {url}: ls-remote thread died")
        }
    }
}

fn ls_remote(url: &str, branch: Option<&str>) -> Result<()> {
    use gix::protocol::fetch::refmap::init::Context as RefMapContext;
    use gix::protocol::transport;

    let parsed = gix::url::parse(url.as_bytes().as_bstr())
        .map_err(|e| anyhow!("invalid repository URL {url}: {e}"))?;
    if parsed.scheme == gix::url::Scheme::File
        && !gix::path::from_bstr(parsed.path.as_bstr()).is_ok_and(|p| p.exists())
    {
        bail!("repository not reachable: {url}: no such path");
    }
    let unreachable = |e: gix::Error| anyhow!("repository not reachable: {url}: {}", chain(&e));
    let mut transport = transport::client::blocking_io::connect::connect(
        parsed,
        transport::client::blocking_io::connect::Options::default(),
    )
    .map_err(unreachable)?;
    let mut handshake = gix::protocol::handshake(
        &mut transport,
        transport::Service::UploadPack,
        // No credential helpers: an auth challenge means the repository is not (anonymously) reachable.
        |_action| {
            Err(gix::Error::from_error(std::io::Error::other(
                "authentication required",
            )))
        },
        Vec::new(),
        &mut Discard,
    )
    .map_err(unreachable)?;

    let spec = match branch {
        Some(b) => format!("refs/heads/{b}"),
        None => "HEAD".to_owned(),
    };
    let refspec = gix::refspec::parse(spec.as_str().into(), gix::refspec::parse::Operation::Fetch)
        .map_err(|e| anyhow!("invalid branch name {branch:?}: {e}"))?
        .to_owned();
    let ref_map = handshake
        .prepare_lsrefs_or_extract_refmap(
            (
                "agent",
                Some(concat!("git/oxide-", env!("CARGO_PKG_NAME")).to_owned()),
            ),
            true,
            RefMapContext {
                fetch_refspecs: vec![refspec],
                extra_refspecs: Vec::new(),
            },
        )
        .map_err(unreachable)?
        .fetch_blocking(Discard, &mut transport, false)
        .map_err(unreachable)?;
    match branch {
        Some(b) if ref_map.mappings.is_empty() => bail!("branch {b} not found in {url}"),
        _ => Ok(()),
    }
}

/// Map fetch errors of a clone to the messages used by `remote_has_branch`.
fn fetch_error(
    e: gix::Error,
    url: &str,
    branch: Option<&str>,
    interrupt: &AtomicBool,
) -> anyhow::Error {
    let msg = chain(&e);
    if interrupt.load(Ordering::Relaxed) {
        return anyhow!("clone of {url} was interrupted: {msg}");
    }
    match branch {
        // gix classifies this as NotFound, but so is a missing file:// repository: match the message.
        Some(b)
            if e.classify().is_not_found() && msg.contains("didn't have any ref that matched") =>
        {
            anyhow!("branch {b} not found in {url}: {msg}")
        }
        _ => anyhow!("clone of {url} failed: {msg}"),
    }
}

/// Render an error with all its sources on one line (gix errors are deeply nested).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_str = s.to_string();
        if !s_str.is_empty() && !out.contains(&s_str) {
            out.push_str(": ");
            out.push_str(&s_str);
        }
        src = s.source();
    }
    out
}

/// Opens a checkout that the environment's tasks could have written to (its `.git/config`
/// included): settings that make git run a program are overridden, so nothing a task wrote
/// runs in the node's own process.
fn open_checkout(dest: &Path) -> Result<gix::Repository> {
    gix::open_opts(
        dest,
        gix::open::Options::default().config_overrides([
            "core.sshCommand=ssh",
            "core.fsmonitor=false",
            "core.hooksPath=/dev/null",
        ]),
    )
    .map_err(anyhow::Error::from)
}

#[cfg(test)]
mod credential_tests {
    use super::*;
    use gix::credentials::helper::Action;
    use gix::credentials::protocol::Context;

    /// Review fix (issue 12 item 16): the token answers only its own https origin, from the
    /// URL gix puts in the request (the only field it fills in).
    #[test]
    fn the_token_answers_only_its_origin_over_https() {
        let mut answer = answer_with(HttpAuth {
            username: "x-access-token".into(),
            password: "tok".into(),
            url: "https://git.example.com/acme/web.git".into(),
        });
        let ask = |url: &str| {
            Action::Get(Context {
                url: Some(url.into()),
                ..Default::default()
            })
        };
        let given = answer(ask("https://git.example.com/acme/web.git/info/refs"))
            .unwrap()
            .unwrap();
        assert_eq!(given.identity.password, "tok");
        assert!(answer(ask("https://GIT.example.com:443/acme/web.git"))
            .unwrap()
            .is_some());
        assert!(answer(ask("http://git.example.com/acme/web.git"))
            .unwrap()
            .is_none());
        assert!(answer(ask("https://evil.example.net/x")).unwrap().is_none());
        assert!(answer(ask("https://git.example.com:8443/x"))
            .unwrap()
            .is_none());
        assert!(answer(ask("https://git.example.com.evil.net/x"))
            .unwrap()
            .is_none());
        assert!(answer(Action::Get(Context::default())).unwrap().is_none());
    }
}
