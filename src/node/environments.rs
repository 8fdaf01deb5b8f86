//! The node's environment manager: turns an `environment:prepare` into a ready working
//! directory.
//!
//! Steps, each reported in `environment:status` and narrated in `environment:log`:
//! 1. **resolve** the directory: `<data>/workspace/<name>-<id>` for `auto`, the given path for
//!    `existing-path` (which must exist) or a `local` environment;
//! 2. **clone** the repository with gix, or **fetch** and check out the branch when it is
//!    already there;
//! 3. check the **workdir** inside it;
//! 4. run the **setup** script (`bash`, `set -e`) with the environment's vars and secrets in
//!    its process environment. Setup is skipped when the commit, script, vars and secrets are
//!    unchanged since its last success (compared by an HMAC kept on the node), unless forced.
//!
//! Every line of output goes through a redactor built from the environment's secrets before it
//! leaves the node.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::executor::{run_bash, BashRun, RunOutcome};
use super::runtime::{Runtime, STOPPED_BY_SHUTDOWN};
use super::sandbox::{Confinement, Mount, Network};
use crate::protocol::worktree::WorktreeSpec;
use crate::protocol::{
    BindingState, BindingStatus, BindingStrategy, EnvKind, Frame, PrepareEnvironment, TaskSubmit,
};
use crate::secrets::Redactor;

/// How long a clone or fetch may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// Grace between stop signals when a setup script is interrupted.
const SETUP_STOP_GRACE: Duration = Duration::from_secs(2);

/// What the node remembers about a binding's last successful setup.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Remembered {
    setup_mac: String,
    commit: Option<String>,
}

/// A failed step.
struct StepError {
    step: &'static str,
    message: String,
}

fn fail(step: &'static str, message: impl Into<String>) -> StepError {
    StepError {
        step,
        message: message.into(),
    }
}

pub use crate::protocol::{absolute_clean, relative_inside};

/// A directory name from an environment's name and id.
fn slug(name: &str, id: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(48);
    format!("{s}-{}", crate::protocol::worktree::id_tail(id, 8))
}

impl Runtime {
    /// Handles `environment:prepare`: runs it in the background, one prepare per binding at a
    /// time (a second one waits for the first).
    pub(super) fn prepare_environment(&self, p: PrepareEnvironment) {
        let rt = self.clone();
        self.track(async move {
            let lock = rt.binding_lock(&p.binding_id);
            let guard = lock.lock().await;
            prepare(&rt, p).await;
            drop(guard);
            drop(lock);
            rt.forget_idle_binding_locks();
        });
    }
}

async fn prepare(rt: &Runtime, p: PrepareEnvironment) {
    let secrets: Vec<String> = p.secrets.iter().map(|s| s.value.clone()).collect();
    let redactor = Redactor::new(&secrets);
    let log = |text: &str| {
        rt.send_event(Frame::EnvironmentLog {
            binding_id: p.binding_id.clone(),
            text: redactor.redact_str(text),
        })
    };
    let status = |status: BindingStatus,
                  step: Option<&str>,
                  message: Option<String>,
                  extra: Option<(&Path, Option<String>, bool)>| {
        let (working_dir, commit, setup_skipped) = match extra {
            Some((w, c, skipped)) => (Some(w.display().to_string()), c, skipped),
            None => (None, None, false),
        };
        let state = BindingState {
            binding_id: p.binding_id.clone(),
            status,
            step: step.map(str::to_string),
            message: message.map(|m| redactor.redact_str(&m)),
            working_dir,
            commit,
            version: p.version,
            setup_skipped,
        };
        rt.set_binding_state(state);
    };
    status(BindingStatus::Preparing, Some("resolve"), None, None);
    tracing::info!(binding = %p.binding_id, environment = %p.name, "preparing environment");
    match run_steps(rt, &p, &redactor, &log, &|step| {
        status(BindingStatus::Preparing, Some(step), None, None)
    })
    .await
    {
        Ok((workdir, commit, skipped)) => {
            log(&format!("environment ready in {}\n", workdir.display()));
            status(
                BindingStatus::Ready,
                None,
                None,
                Some((&workdir, commit, skipped)),
            );
            tracing::info!(binding = %p.binding_id, "environment ready");
        }
        Err(e) => {
            log(&format!("error in step {}: {}\n", e.step, e.message));
            tracing::warn!(binding = %p.binding_id, step = e.step, "environment prepare failed");
            status(BindingStatus::Error, Some(e.step), Some(e.message), None);
        }
    }
}

/// The prepare steps in order: resolve the directory, materialize the source, find the
/// working directory, run setup (skipped when nothing it depends on changed). Returns the
/// working directory, the commit and whether setup was skipped.
async fn run_steps(
    rt: &Runtime,
    p: &PrepareEnvironment,
    redactor: &Redactor,
    log: &(dyn Fn(&str) + Sync),
    step: &(dyn Fn(&'static str) + Sync),
) -> Result<(PathBuf, Option<String>, bool), StepError> {
    let dir = resolve_dir(rt, p)?;
    log(&format!("directory: {}\n", dir.display()));
    let commit = materialize(p, &dir, redactor, log, step, &rt.stopping()).await?;
    step("workdir");
    let workdir = working_dir(p, &dir)?;
    step("setup");
    let place = Place {
        memory_key: &p.binding_id,
        mounts: Vec::new(),
    };
    let skipped = setup(rt, p, &workdir, commit.as_deref(), redactor, log, place).await?;
    // Again after setup: the script may have replaced the working dir.
    working_dir(p, &dir)?;
    Ok((workdir, commit, skipped))
}

/// Step 1: the binding's directory on this node.
fn resolve_dir(rt: &Runtime, p: &PrepareEnvironment) -> Result<PathBuf, StepError> {
    let dir = match (p.strategy, p.source.kind) {
        (BindingStrategy::ExistingPath, _) => {
            let path = p
                .path
                .as_deref()
                .ok_or_else(|| fail("resolve", "existing-path binding without a path"))?;
            absolute_clean(path).map_err(|e| fail("resolve", e))?
        }
        (BindingStrategy::Auto, EnvKind::Local) => {
            let path = p
                .source
                .path
                .as_deref()
                .ok_or_else(|| fail("resolve", "local environment without a path"))?;
            absolute_clean(path).map_err(|e| fail("resolve", e))?
        }
        (BindingStrategy::Auto, _) => rt.workspace_dir().join(slug(&p.name, &p.environment_id)),
    };
    let must_exist = p.strategy == BindingStrategy::ExistingPath || p.source.kind == EnvKind::Local;
    if must_exist && !dir.is_dir() {
        return Err(fail(
            "resolve",
            format!("{} does not exist on this node", dir.display()),
        ));
    }
    Ok(dir)
}

/// Credentials for an https repository: the `GIT_TOKEN` secret as the password, with
/// `GIT_USERNAME` (a variable or a secret) or `x-access-token` (what GitHub and most hosts
/// accept with a token) as the user name. Never over plain http (git refuses to send
/// credentials in clear text, and so do we).
fn http_auth(p: &PrepareEnvironment, url: &str) -> Option<super::git::HttpAuth> {
    if !url.get(..8)?.eq_ignore_ascii_case("https://") {
        return None;
    }
    let secret = |name: &str| {
        p.secrets
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.clone())
    };
    let password = secret("GIT_TOKEN")?;
    let username = p
        .vars
        .get("GIT_USERNAME")
        .cloned()
        .or_else(|| secret("GIT_USERNAME"))
        .unwrap_or_else(|| "x-access-token".to_string());
    Some(super::git::HttpAuth {
        username,
        password,
        url: url.to_string(),
    })
}

/// Step 2: clone or fetch a repository (returns its commit), or create a manual directory.
async fn materialize(
    p: &PrepareEnvironment,
    dir: &Path,
    redactor: &Redactor,
    log: &(dyn Fn(&str) + Sync),
    step: &(dyn Fn(&'static str) + Sync),
    stopping: &CancellationToken,
) -> Result<Option<String>, StepError> {
    let is_repo = p.source.kind.is_git();
    if is_repo && p.strategy == BindingStrategy::Auto {
        let url = p
            .source
            .url
            .clone()
            .ok_or_else(|| fail("clone", "no repository URL"))?;
        let branch = p.source.branch.clone().filter(|b| !b.is_empty());
        let existing = dir.join(".git").exists();
        let which: &'static str = if existing { "fetch" } else { "clone" };
        step(which);
        log(&format!(
            "{} {url}{}\n",
            if existing { "fetching" } else { "cloning" },
            branch
                .as_deref()
                .map(|b| format!(" (branch {b})"))
                .unwrap_or_default()
        ));
        let interrupt = Arc::new(AtomicBool::new(false));
        let (d, i) = (dir.to_path_buf(), interrupt.clone());
        let auth = http_auth(p, &url);
        if auth.is_some() {
            log("using the GIT_TOKEN secret if the server asks for credentials\n");
        }
        let job = tokio::task::spawn_blocking(move || {
            if existing {
                super::git::update_repo(&d, &url, branch.as_deref(), auth, &i)
            } else {
                if let Some(parent) = d.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                super::git::clone_repo(&url, branch.as_deref(), &d, auth, &i)
            }
        });
        let outcome = tokio::select! {
            r = tokio::time::timeout(GIT_TIMEOUT, job) => r,
            _ = stopping.cancelled() => {
                interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(fail(which, STOPPED_BY_SHUTDOWN));
            }
        };
        let sha = match outcome {
            Ok(Ok(Ok(sha))) => sha,
            Ok(Ok(Err(e))) => {
                if !existing {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(fail(which, redactor.redact_str(&format!("{e:#}"))));
            }
            Ok(Err(e)) => return Err(fail(which, format!("git task failed: {e}"))),
            Err(_) => {
                interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(fail(
                    which,
                    format!("timed out after {} s", GIT_TIMEOUT.as_secs()),
                ));
            }
        };
        log(&format!("at commit {sha}\n"));
        return Ok(Some(sha));
    } else if p.source.kind == EnvKind::Manual && !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail("resolve", format!("creating {}: {e}", dir.display())))?;
    }
    Ok(None)
}

/// Step 3: the working directory inside it.
fn working_dir(p: &PrepareEnvironment, dir: &Path) -> Result<PathBuf, StepError> {
    let rel =
        relative_inside(&p.working_dir).map_err(|e| fail("workdir", format!("working dir {e}")))?;
    let workdir = dir.join(&rel);
    if !workdir.is_dir() {
        return Err(fail(
            "workdir",
            format!("working dir {} does not exist", workdir.display()),
        ));
    }
    // The repository (or its setup script) decides what the working dir is on disk: a
    // symlink there must not move the agent's confinement root out of the environment.
    let beneath = crate::node::beneath::Beneath::open_root(dir)
        .and_then(|b| b.open(&rel, OFlag::O_DIRECTORY | OFlag::O_RDONLY, Mode::empty()));
    if let Err(e) = beneath {
        return Err(fail(
            "workdir",
            format!("working dir {}: {e}", p.working_dir),
        ));
    }
    Ok(workdir)
}

/// Where a setup script runs: the binding's checkout, or a thread's worktree.
struct Place<'a> {
    /// What its last success is remembered under: the binding's id, `worktree:<thread>`.
    memory_key: &'a str,
    /// The worktree and its repository's `.git`, for a worktree.
    mounts: Vec<Mount>,
}

/// Step 4: the setup script, with vars and every secret, its output redacted and streamed.
/// Returns true when it was skipped because nothing it depends on changed.
async fn setup(
    rt: &Runtime,
    p: &PrepareEnvironment,
    workdir: &Path,
    commit: Option<&str>,
    redactor: &Redactor,
    log: &(dyn Fn(&str) + Sync),
    place: Place<'_>,
) -> Result<bool, StepError> {
    let mac = setup_mac(rt, p, commit);
    let remembered = rt.remembered_setup(place.memory_key);
    if !p.force && remembered.as_ref().is_some_and(|r| r.setup_mac == mac) {
        log("setup skipped: commit, script, vars and secrets are unchanged since the last successful run\n");
        return Ok(true);
    }
    if !p.setup_script.trim().is_empty() {
        log("running setup script\n");
        let mut env: BTreeMap<String, String> = p.vars.clone();
        // Secret files are for agent CLIs' runs, not variables.
        for s in p.secrets.iter().filter(|s| s.file.is_none()) {
            env.insert(s.name.clone(), s.value.clone());
        }
        env.insert("VIBER_ENVIRONMENT".into(), p.name.clone());
        let script = format!("set -e\n{}", p.setup_script);
        let mut stream = redactor.clone();
        let outcome = run_bash(
            BashRun {
                script: &script,
                cwd: workdir,
                env: &env,
                abort: rt.stopping(),
                stop_grace: SETUP_STOP_GRACE,
                confine: &Confinement {
                    sandbox: rt.sandbox().clone(),
                    // Setup installs dependencies: it has the network whatever the tasks get.
                    network: Network::On,
                    container: p.container.clone(),
                    home: None,
                    terminal: None,
                    mounts: place.mounts.clone(),
                },
            },
            |text| {
                let safe = stream.push(&text);
                if !safe.is_empty() {
                    rt.send_event(Frame::EnvironmentLog {
                        binding_id: p.binding_id.clone(),
                        text: safe,
                    });
                }
            },
        )
        .await;
        let rest = stream.finish();
        if !rest.is_empty() {
            log(&rest);
        }
        match outcome {
            RunOutcome::Exited(0) => {}
            RunOutcome::Exited(code) => {
                return Err(fail(
                    "setup",
                    format!("setup script exited with status {code}"),
                ))
            }
            RunOutcome::Interrupted => return Err(fail("setup", STOPPED_BY_SHUTDOWN)),
            RunOutcome::Failed(e) => return Err(fail("setup", e)),
        }
    }
    rt.remember_setup(
        place.memory_key,
        Remembered {
            setup_mac: mac,
            commit: commit.map(str::to_string),
        },
    );
    Ok(false)
}

impl Runtime {
    /// A thread task's worktree (see [`crate::node::worktree`]): created when missing, and
    /// set up with the environment's script when it is new or what setup depends on
    /// changed. Returns the directory to run in and what the sandbox adds for it.
    pub(super) async fn thread_worktree(
        &self,
        submit: &TaskSubmit,
        spec: &WorktreeSpec,
    ) -> Result<(PathBuf, Vec<Mount>), String> {
        let cwd = submit
            .options
            .cwd
            .as_deref()
            .ok_or("a task in a worktree needs the checkout's working dir")?;
        tracing::debug!(thread = %spec.thread_id, "task waits for the worktree");
        let _turn = self.worktrees().lock(&spec.thread_id).await;
        let (wt, workdir, created) = self.worktrees().ensure(spec, Path::new(cwd)).await?;
        tracing::debug!(thread = %spec.thread_id, created, "task has the worktree");
        let Some(script) = spec.setup_script.clone().filter(|s| !s.trim().is_empty()) else {
            return Ok((workdir, wt.mounts()));
        };
        let p = PrepareEnvironment {
            binding_id: spec.binding_id.clone(),
            environment_id: String::new(),
            name: spec.environment.clone(),
            version: 0,
            source: crate::protocol::EnvironmentSource {
                kind: EnvKind::Git,
                url: None,
                branch: None,
                path: None,
            },
            strategy: BindingStrategy::Auto,
            path: None,
            working_dir: String::new(),
            setup_script: script,
            vars: submit.options.env.clone(),
            secrets: submit.secrets.clone(),
            force: false,
            container: None,
        };
        let secrets: Vec<&str> = submit.secrets.iter().map(|s| s.value.as_str()).collect();
        let redactor = Redactor::new(&secrets);
        let log = |text: &str| {
            self.send_event(Frame::EnvironmentLog {
                binding_id: spec.binding_id.clone(),
                text: redactor.redact_str(text),
            })
        };
        if created {
            log(&format!(
                "worktree for thread {} on branch {} at {}\n",
                spec.thread_id,
                wt.branch,
                wt.dir.display()
            ));
        }
        let place = Place {
            memory_key: &worktree_key(&spec.thread_id),
            mounts: wt.mounts(),
        };
        let ran = setup(self, &p, &workdir, Some(&wt.base), &redactor, &log, place).await;
        tracing::debug!(thread = %spec.thread_id, ok = ran.is_ok(), "worktree setup done");
        ran.map_err(|e| {
            format!(
                "the setup script failed in the thread's worktree: {}",
                e.message
            )
        })?;
        Ok((workdir, wt.mounts()))
    }
}

/// An HMAC (under a key that never leaves the node) over everything setup depends on.
fn setup_mac(rt: &Runtime, p: &PrepareEnvironment, commit: Option<&str>) -> String {
    let mut parts: Vec<String> = vec![
        format!("commit={}", commit.unwrap_or("")),
        format!("workdir={}", p.working_dir),
        format!("script={}", p.setup_script),
    ];
    for (k, v) in &p.vars {
        parts.push(format!("var:{k}={v}"));
    }
    let mut secrets: Vec<_> = p.secrets.iter().collect();
    secrets.sort_by(|a, b| a.name.cmp(&b.name));
    for s in secrets {
        parts.push(format!("secret:{}={}", s.name, s.value));
    }
    rt.mac(parts.join("\0").as_bytes())
}

/// The node's memory of successful setups, in `<data>/workspace/.viber-setup.json`.
#[derive(Default, Serialize, Deserialize)]
pub(super) struct SetupMemory {
    bindings: HashMap<String, Remembered>,
}

impl SetupMemory {
    pub fn load(path: &Path) -> SetupMemory {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, path: &Path) {
        if let Ok(json) = serde_json::to_vec_pretty(self) {
            if let Err(e) = crate::crypto::write_private_file(path, &json) {
                tracing::error!(error = %e, "saving setup memory");
            }
        }
    }
}

impl Runtime {
    fn remembered_setup(&self, binding: &str) -> Option<Remembered> {
        self.setup_memory().bindings.get(binding).cloned()
    }

    fn remember_setup(&self, binding: &str, r: Remembered) {
        let mut mem = self.setup_memory();
        mem.bindings.insert(binding.to_string(), r);
        mem.save(&self.setup_memory_path());
    }

    /// A thread's worktree is gone: so is the memory of its setup.
    pub(super) fn forget_worktree_setup(&self, thread_id: &str) {
        let mut mem = self.setup_memory();
        if mem.bindings.remove(&worktree_key(thread_id)).is_some() {
            mem.save(&self.setup_memory_path());
        }
    }
}

/// What a worktree's setup is remembered under.
fn worktree_key(thread_id: &str) -> String {
    format!("worktree:{thread_id}")
}

/// Answers `environment:validate`: the setup script's syntax (`bash -n`) and, for git
/// environments, whether the repository is reachable from this node and has the branch.
pub async fn validate(
    req: crate::protocol::ValidateEnvironment,
) -> crate::protocol::ValidationReport {
    use crate::protocol::ValidationCheck;
    let mut checks = Vec::new();
    checks.push(
        match super::executor::bash_syntax(&req.setup_script).await {
            Ok(()) => ValidationCheck {
                name: "setupScript".into(),
                ok: true,
                message: "syntax ok".into(),
                line: None,
            },
            Err(e) => ValidationCheck {
                name: "setupScript".into(),
                ok: false,
                message: match e.line {
                    Some(l) => format!("line {l}: {}", e.message),
                    None => e.message,
                },
                line: e.line,
            },
        },
    );
    if let Some(url) = req.repo_url {
        let branch = req.branch;
        let result = tokio::task::spawn_blocking(move || {
            super::git::remote_has_branch(
                &url,
                branch.as_deref(),
                std::time::Duration::from_secs(20),
            )
        })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("repository check panicked: {e}")));
        checks.push(ValidationCheck {
            name: "repository".into(),
            ok: result.is_ok(),
            message: match result {
                Ok(()) => "reachable; branch present".into(),
                Err(e) => format!("{e:#}"),
            },
            line: None,
        });
    }
    crate::protocol::ValidationReport {
        request_id: req.request_id,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined() {
        assert!(relative_inside("").is_ok());
        assert!(relative_inside("app/web").is_ok());
        assert!(relative_inside("./app").is_ok());
        assert!(relative_inside("../etc").is_err());
        assert!(relative_inside("a/../../b").is_err());
        assert!(relative_inside("/etc").is_err());
        assert!(absolute_clean("/srv/repo").is_ok());
        assert!(absolute_clean("srv/repo").is_err());
        assert!(absolute_clean("/srv/../etc").is_err());
    }

    #[test]
    fn slugs_are_safe_directory_names() {
        assert_eq!(slug("My App!", "env_0123456789abcdef"), "my-app--89abcdef");
    }
}
