//! The git operations the gateway asks of a thread's worktree (`git:request`): diff, commit,
//! push, sync and remove, each with the `git` program outside the sandbox (the worktree's
//! config is out of the thread's reach, see `mod.rs`), hooks and fsmonitor off, no prompt.
//!
//! Credentials for a push or a fetch come from the environment's secrets and reach git only
//! through its environment: `GIT_TOKEN` as an `Authorization` header for the remote's
//! https URL (`GIT_CONFIG_*` variables, never the command line or a file), an SSH key
//! (`GIT_SSH_KEY`, or a secret file under `.ssh/`) in a private temporary file for ssh.
//! Whatever git prints is redacted of them (and of the header's encoding) before it leaves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use super::{Worktree, Worktrees};
use crate::protocol::api::SyncMode;
use crate::protocol::worktree::{GitOp, GitRequest, GitResult};
use crate::protocol::SecretValue;
use crate::secrets::Redactor;

/// Settings every git command the node runs gets: nothing of the repository's that runs a
/// program, and no prompt.
const SAFE: &[&str] = &[
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.pager=cat",
    "-c",
    "color.ui=false",
    "-c",
    "credential.helper=",
    "-c",
    "core.quotePath=false",
];

/// `git -C dir args`, with the settings above.
pub(super) fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(SAFE);
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    c
}

/// What a git command printed, and whether it succeeded.
pub(super) struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

pub(super) fn run(mut c: Command) -> Result<Output, String> {
    let out = c.output().map_err(|e| format!("running git: {e}"))?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `git -C dir args`'s trimmed stdout, or its stderr as the error.
pub(super) fn git_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut c = git(dir);
    c.args(args);
    checked(c)
}

/// A git command's trimmed stdout, or its stderr as the error.
pub(super) fn checked(c: Command) -> Result<String, String> {
    let out = run(c)?;
    if out.ok {
        Ok(out.stdout.trim_end().to_string())
    } else {
        Err(out.stderr.trim().to_string())
    }
}

impl Worktrees {
    /// Runs one `git:request` (after the thread's other work) and answers it.
    pub async fn handle(&self, req: GitRequest) -> GitResult {
        let guard = self.lock(&req.thread_id).await;
        let this = self.clone();
        let id = req.request_id.clone();
        let answer = tokio::task::spawn_blocking(move || this.apply(req))
            .await
            .unwrap_or_else(|e| GitResult {
                error: Some(format!("git operation failed: {e}")),
                ..GitResult::default()
            });
        drop(guard);
        GitResult {
            request_id: id,
            ..answer
        }
    }

    fn apply(&self, req: GitRequest) -> GitResult {
        let wt = match self.get(&req.thread_id) {
            Ok(wt) => wt,
            Err(e) if matches!(req.op, GitOp::Remove { .. }) => {
                // Half a worktree (its record without its directory): forget what is left.
                tracing::debug!(error = %e, "removing a worktree the node does not have whole");
                self.forget(&req.thread_id);
                return GitResult::default();
            }
            Err(e) => return conflict(e),
        };
        // A removal goes by thread (an orphan's branch may be unknown to the gateway).
        if wt.branch != req.branch && !matches!(req.op, GitOp::Remove { .. }) {
            return conflict(format!(
                "the worktree is on branch {}, not {}",
                wt.branch, req.branch
            ));
        }
        let creds = Credentials::new(&req.secrets);
        let name = req.author_name.as_deref().unwrap_or("viber");
        let email = req.author_email.as_deref().unwrap_or("viber@localhost");
        let result = match &req.op {
            GitOp::Diff {
                max_file_bytes,
                max_total_bytes,
            } => super::diff::diff(&wt, *max_file_bytes, *max_total_bytes),
            GitOp::Commit { message } => commit(&wt, message, name, email),
            GitOp::Push { url } => push(&wt, url, &creds),
            GitOp::Sync {
                url,
                base_branch,
                mode,
            } => self.sync(&wt, url, base_branch, *mode, name, email, &creds),
            GitOp::Remove { delete_branch } => self
                .remove(&wt, *delete_branch)
                .map(|()| GitResult::default()),
        };
        match result {
            Ok(r) => r,
            Err(e) => GitResult {
                error: Some(creds.redact(&e)),
                ..GitResult::default()
            },
        }
    }

    /// Fetches `branch` of `url` and merges it into the worktree's branch (or rebases onto
    /// it). Refused with uncommitted changes; on a conflict the merge or rebase is undone
    /// and the conflicting files are listed.
    #[allow(clippy::too_many_arguments)]
    fn sync(
        &self,
        wt: &Worktree,
        url: &str,
        branch: &str,
        mode: SyncMode,
        name: &str,
        email: &str,
        creds: &Credentials,
    ) -> Result<GitResult, String> {
        if !wt.output(&["status", "--porcelain"])?.is_empty() {
            return Ok(conflict(
                "the worktree has uncommitted changes: commit them before syncing".into(),
            ));
        }
        let tracking = format!("refs/remotes/origin/{branch}");
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        let (mut fetch, _key) = creds.command(wt, url)?;
        fetch.args(["fetch", "--no-tags", "--", url, &refspec]);
        let fetched = run(fetch)?;
        if !fetched.ok {
            return Err(format!("git fetch failed: {}", fetched.stderr.trim()));
        }
        let upstream = wt.output(&["rev-parse", "--verify", &tracking])?;
        let mut c = wt.git();
        c.args(["-c", &format!("user.name={name}")])
            .args(["-c", &format!("user.email={email}")]);
        match mode {
            SyncMode::Merge => c.args(["merge", "--no-edit", "--no-verify", &upstream]),
            SyncMode::Rebase => c.args(["rebase", &upstream]),
        };
        let out = run(c)?;
        let mut output = format!("{}{}", fetched.stderr, out.stdout);
        if !out.ok {
            let conflicts: Vec<String> = wt
                .output(&["diff", "--name-only", "--diff-filter=U"])
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            let abort = match mode {
                SyncMode::Merge => ["merge", "--abort"],
                SyncMode::Rebase => ["rebase", "--abort"],
            };
            let _ = wt.output(&abort);
            if conflicts.is_empty() {
                return Err(format!("git {}: {}", abort[0], out.stderr.trim()));
            }
            output.push_str(&out.stderr);
            return Ok(GitResult {
                conflicts,
                head: wt.output(&["rev-parse", "HEAD"]).ok(),
                output: Some(creds.redact(&output)),
                ..GitResult::default()
            });
        }
        // The diff is now against what the thread merged or rebased onto.
        let synced = Worktree {
            base: upstream.clone(),
            ..wt.clone()
        };
        let checkout = wt
            .git_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        self.save(&synced, &checkout)?;
        Ok(GitResult {
            head: Some(wt.output(&["rev-parse", "HEAD"])?),
            base: Some(upstream),
            output: Some(creds.redact(&output)),
            ..GitResult::default()
        })
    }
}

fn conflict(message: String) -> GitResult {
    GitResult {
        error: Some(message),
        conflict: true,
        ..GitResult::default()
    }
}

/// Commits every change in the worktree.
fn commit(wt: &Worktree, message: &str, name: &str, email: &str) -> Result<GitResult, String> {
    wt.output(&["add", "-A"])?;
    let mut check = wt.git();
    check.args(["diff", "--cached", "--quiet"]);
    if run(check)?.ok {
        return Ok(conflict(
            "nothing to commit: the worktree has no changes".into(),
        ));
    }
    let mut c = wt.git();
    c.args(["-c", &format!("user.name={name}")])
        .args(["-c", &format!("user.email={email}")])
        .args(["commit", "--quiet", "--no-verify", "-F", "-"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("running git: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(message.as_bytes())
            .map_err(|e| format!("writing the commit message: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git commit failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(GitResult {
        head: Some(wt.output(&["rev-parse", "HEAD"])?),
        ..GitResult::default()
    })
}

/// Pushes the worktree's branch to the same branch of `url`.
fn push(wt: &Worktree, url: &str, creds: &Credentials) -> Result<GitResult, String> {
    let refspec = format!("refs/heads/{b}:refs/heads/{b}", b = wt.branch);
    let (mut c, _key) = creds.command(wt, url)?;
    c.args(["push", "--porcelain", "--no-verify", "--", url, &refspec]);
    let out = run(c)?;
    let output = format!("{}{}", out.stdout, out.stderr);
    if !out.ok {
        return Err(format!("git push failed: {}", output.trim()));
    }
    Ok(GitResult {
        head: Some(wt.output(&["rev-parse", "HEAD"])?),
        output: Some(creds.redact(&output)),
        ..GitResult::default()
    })
}

/// The environment's credentials for a remote, and what must be redacted.
struct Credentials {
    token: Option<(String, String)>,
    ssh_key: Option<String>,
    redactor: Redactor,
}

impl Credentials {
    fn new(secrets: &[SecretValue]) -> Credentials {
        let find = |name: &str| {
            secrets
                .iter()
                .find(|s| s.name == name && s.file.is_none())
                .map(|s| s.value.clone())
        };
        let token = find("GIT_TOKEN").map(|t| {
            let user = find("GIT_USERNAME").unwrap_or_else(|| "x-access-token".into());
            (user, t)
        });
        let ssh_key = find("GIT_SSH_KEY").or_else(|| {
            secrets
                .iter()
                .find(|s| {
                    s.file
                        .as_deref()
                        .is_some_and(|f| f.starts_with(".ssh/id_") && !f.ends_with(".pub"))
                })
                .map(|s| s.value.clone())
        });
        let mut hide: Vec<String> = secrets.iter().map(|s| s.value.clone()).collect();
        if let Some((user, token)) = &token {
            hide.push(basic(user, token));
        }
        Credentials {
            token,
            ssh_key,
            redactor: Redactor::new(&hide),
        }
    }

    fn redact(&self, text: &str) -> String {
        self.redactor.redact_str(text)
    }

    /// `git -C dir` with what it needs to authenticate to `url`: the token as a header
    /// for an https URL (only that URL), the SSH key for ssh.
    fn command(&self, wt: &Worktree, url: &str) -> Result<(Command, Option<KeyFile>), String> {
        let mut c = wt.git();
        let https = url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        let mut config: BTreeMap<String, String> = BTreeMap::new();
        if let (true, Some((user, token))) = (https, &self.token) {
            config.insert(
                format!("http.{url}.extraHeader"),
                format!("Authorization: Basic {}", basic(user, token)),
            );
        }
        for (i, (k, v)) in config.iter().enumerate() {
            c.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        c.env("GIT_CONFIG_COUNT", config.len().to_string());
        let ssh = !https && !url.starts_with("file:") && !url.starts_with('/');
        let mut key_file = None;
        if let (true, Some(key)) = (ssh, &self.ssh_key) {
            let file = KeyFile::write(key)?;
            c.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
                    file.0.display()
                ),
            );
            key_file = Some(file);
        }
        Ok((c, key_file))
    }
}

/// `user:token` as HTTP Basic credentials.
fn basic(user: &str, token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
}

/// A private copy of an SSH key for one git command, removed when dropped.
struct KeyFile(PathBuf);

impl KeyFile {
    fn write(key: &str) -> Result<KeyFile, String> {
        let path = std::env::temp_dir().join(format!(
            "viber-key-{}",
            crate::crypto::hex(&crate::crypto::random_bytes(8))
        ));
        let mut key = key.to_string();
        if !key.ends_with('\n') {
            key.push('\n');
        }
        crate::crypto::write_private_file(&path, key.as_bytes())
            .map_err(|e| format!("writing the SSH key: {e}"))?;
        Ok(KeyFile(path))
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
