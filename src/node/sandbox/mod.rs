//! The sandbox every process a task or a setup script starts runs in.
//!
//! Built on bubblewrap (`bwrap`): the process sees the system read-only, its working dir
//! read-write, a private `/tmp` and `/proc`, and not the node's data dir (keys, tokens, the
//! database, other environments' workspaces, session logs), which is covered by an empty
//! tmpfs. It keeps no capabilities (a root node's tasks cannot remount their way out), gets
//! its own PID and IPC namespaces, dies with the node, and, by the task's `networkAccess`,
//! its own network namespace with loopback only (`off`) or with only the node's allowlist
//! proxy (`allowlist`, see `proxy.rs` and `forward.rs`).
//!
//! Whatever the sandbox, a process's environment is the node's minus its internals
//! (`VIBER_*`) and anything that looks like a credential (`*KEY*`, `*TOKEN*`, `*SECRET*`,
//! `*PASSWORD*`, ...), plus what the task or environment sets.
//!
//! This file owns finding the tool, which working dirs a task may use, and choosing how one
//! process tree is confined ([`Confinement`]). The parts, each in its own file:
//! - `bwrap.rs`: bubblewrap's command line, and the probe that it works here;
//! - `container.rs`: the same tree in a podman or docker container (`containerImage`);
//! - `process.rs`: the environment and session the process starts with;
//! - `network.rs`: a task's network, the allowlist and its question to the operator;
//! - `proxy.rs` and `forward.rs`: the allowlist proxy, and its forwarder inside the sandbox.
//!
//! Must not touch: running and reaping the process (`executor::shell` does).

mod bwrap;
mod container;
pub mod forward;
mod network;
mod process;
mod proxy;

pub use network::{parse_resolve, Allowlist, Network, NetworkAsk};
pub use process::own_session;
pub use proxy::Proxy;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::protocol::{ContainerSpec, SANDBOX_CAPABILITY};

/// How the node confines task processes (`viber node --sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// bubblewrap when it is installed and works; without it, tasks are refused.
    Auto,
    /// bubblewrap, or the node does not start.
    Bwrap,
    /// No sandbox: tasks run as the node's user with its files and network. Explicit only.
    Off,
}

/// The sandbox tool of this node, shared by every task.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    tool: Tool,
    data_dir: PathBuf,
    workspace_dir: PathBuf,
    /// Where the allowlist proxies' sockets live (inside the data dir, so hidden).
    run_dir: PathBuf,
    /// Host names the allowlist proxy resolves itself (`--proxy-resolve HOST=IP`).
    resolve: HashMap<String, IpAddr>,
    /// The `viber` binary that runs the forwarder inside an allowlist sandbox.
    forwarder: Option<PathBuf>,
    /// More paths covered like the data dir (`--sandbox-hide`).
    hide: Vec<PathBuf>,
    /// podman or docker, for environments with a container image.
    engine: Option<container::Engine>,
}

enum Tool {
    Bwrap(PathBuf),
    Off,
    /// Asked for `auto` and no working bwrap: the reason, shown when a task is refused.
    Missing(String),
}

/// Where one process tree runs: the node's sandbox and the network it may use, in a
/// container when the environment names an image.
#[derive(Clone)]
pub struct Confinement {
    pub sandbox: Sandbox,
    pub network: Network,
    pub container: Option<ContainerSpec>,
    /// A writable home directory (`HOME`) for programs that keep state there, such as
    /// agent CLIs; None keeps the node's, read-only in the sandbox.
    pub home: Option<PathBuf>,
    /// A thread's terminal whose shell (already in this sandbox) runs bash scripts, typed in.
    pub terminal: Option<crate::node::terminal::TypedShell>,
    /// More paths the process sees, in order (a thread's worktree and its repository's
    /// `.git`, with the parts it must not change read-only). Not in a container.
    pub mounts: Vec<Mount>,
}

/// A path a sandboxed process sees besides its working dir (at the same place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub path: PathBuf,
    pub writable: bool,
}

impl Mount {
    pub fn writable(path: &Path) -> Mount {
        Mount {
            path: path.to_path_buf(),
            writable: true,
        }
    }

    pub fn read_only(path: &Path) -> Mount {
        Mount {
            path: path.to_path_buf(),
            writable: false,
        }
    }
}

impl Confinement {
    /// No sandbox and the host's network, as `--sandbox off` gives, without a node: for
    /// tests of the agent's file tools, which confine themselves (`node::beneath`).
    pub fn unconfined() -> Confinement {
        Confinement {
            sandbox: Sandbox {
                inner: Arc::new(Inner {
                    tool: Tool::Off,
                    data_dir: PathBuf::from("/nonexistent"),
                    workspace_dir: PathBuf::from("/nonexistent/workspace"),
                    run_dir: std::env::temp_dir(),
                    resolve: HashMap::new(),
                    forwarder: None,
                    hide: Vec::new(),
                    engine: None,
                }),
            },
            network: Network::On,
            container: None,
            home: None,
            terminal: None,
            mounts: Vec::new(),
        }
    }

    /// Whether a task may run in `cwd` so confined (see [`Sandbox::check`]; a container
    /// needs an engine instead of bwrap).
    pub fn check(&self, cwd: &Path) -> Result<(), String> {
        match &self.container {
            Some(spec) => self
                .sandbox
                .container_check(spec, cwd, &self.network)
                .map(drop),
            None => self.sandbox.check(cwd, &self.network),
        }
    }

    /// `program args` in `cwd` confined as this says (see [`Sandbox::command`]).
    pub fn command(
        &self,
        program: &str,
        args: &[&str],
        cwd: &Path,
        env: &BTreeMap<String, String>,
    ) -> Result<Prepared, String> {
        match &self.container {
            Some(spec) => {
                self.sandbox
                    .container_command(spec, program, args, cwd, env, &self.network)
            }
            None => match &self.home {
                None => self.sandbox.command_in(
                    program,
                    args,
                    cwd,
                    None,
                    env,
                    &self.network,
                    &self.mounts,
                ),
                Some(home) => {
                    std::fs::create_dir_all(home)
                        .map_err(|e| format!("creating {}: {e}", home.display()))?;
                    let mut env = env.clone();
                    env.insert("HOME".into(), home.display().to_string());
                    self.sandbox.command_in(
                        program,
                        args,
                        cwd,
                        Some(home),
                        &env,
                        &self.network,
                        &self.mounts,
                    )
                }
            },
        }
    }
}

/// A command ready to spawn, and what must live as long as the process does.
pub struct Prepared {
    pub cmd: tokio::process::Command,
    /// The allowlist proxy serving this process tree, or the container it runs in: stopped
    /// and removed when dropped.
    pub guard: Option<Guard>,
}

/// What a process tree needs until it ends.
pub enum Guard {
    Proxy(Proxy),
    Container(container::Running),
}

impl Sandbox {
    /// Finds the tool `mode` asks for. `Bwrap` without a working bwrap is an error; `Auto`
    /// without one gives a sandbox that refuses tasks (and says why).
    pub fn detect(
        mode: Mode,
        data_dir: &Path,
        workspace_dir: &Path,
        resolve: HashMap<String, IpAddr>,
        hide: Vec<PathBuf>,
    ) -> anyhow::Result<Sandbox> {
        let tool = match mode {
            Mode::Off => {
                tracing::warn!(
                    "sandbox is off: tasks run with this node's files, keys and network"
                );
                Tool::Off
            }
            Mode::Auto | Mode::Bwrap => match bwrap::probe_bwrap() {
                Ok(path) => Tool::Bwrap(path),
                Err(why) if mode == Mode::Bwrap => anyhow::bail!("--sandbox bwrap: {why}"),
                Err(why) => {
                    tracing::error!(
                        "no sandbox: {why}; tasks are refused until bubblewrap is installed \
                         (apt-get install bubblewrap) or the node runs with --sandbox off"
                    );
                    Tool::Missing(why)
                }
            },
        };
        let run_dir = data_dir.join("run");
        crate::crypto::private_dir(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        Ok(Sandbox {
            inner: Arc::new(Inner {
                tool,
                data_dir: canonical(data_dir),
                workspace_dir: canonical(workspace_dir),
                run_dir,
                resolve,
                forwarder: std::env::current_exe().ok(),
                hide: hide
                    .iter()
                    .cloned()
                    .chain(bwrap::default_hidden())
                    .map(|p| canonical(&p))
                    .collect(),
                engine: container::Engine::detect(),
            }),
        })
    }

    /// Runs the allowlist forwarder from `viber` at `path` instead of this executable (for
    /// programs other than `viber` that use the sandbox, such as its benchmark).
    pub fn with_forwarder(mut self, path: PathBuf) -> Sandbox {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.forwarder = Some(path);
        }
        self
    }

    /// `bwrap`, `off` or `missing`.
    pub fn status(&self) -> &'static str {
        match self.inner.tool {
            Tool::Bwrap(_) => "bwrap",
            Tool::Off => "off",
            Tool::Missing(_) => "missing",
        }
    }

    /// The capabilities the node advertises: `sandbox:bwrap` (`off`, `missing`), and
    /// `container:podman` (or `docker`) when it has an engine.
    pub fn capabilities(&self) -> Vec<String> {
        let mut caps = vec![format!("{SANDBOX_CAPABILITY}{}", self.status())];
        caps.extend(
            self.inner
                .engine
                .as_ref()
                .map(container::Engine::capability),
        );
        caps
    }

    /// Whether a task may run in `cwd` with `network`: the node has a sandbox (or it was
    /// turned off and the task asks for no network limit it could not keep), and the
    /// directory does not expose the data dir (it is not the data dir, above it, or in it
    /// outside the workspace).
    pub fn check(&self, cwd: &Path, network: &Network) -> Result<(), String> {
        self.working_dir(cwd, network).map(drop)
    }

    /// [`Self::check`], returning the working dir with its links resolved (what the sandbox
    /// binds; None when there is no sandbox).
    fn working_dir(&self, cwd: &Path, network: &Network) -> Result<Option<PathBuf>, String> {
        match &self.inner.tool {
            Tool::Missing(why) => {
                return Err(format!(
                    "this node has no sandbox ({why}); install bubblewrap (apt-get install \
                     bubblewrap) or start the node with --sandbox off to run tasks unconfined"
                ))
            }
            Tool::Off if !matches!(network, Network::On) => {
                return Err(
                    "this node runs without a sandbox (--sandbox off), so it cannot limit the \
                     task's network as its networkAccess asks"
                        .into(),
                )
            }
            Tool::Off => return Ok(None),
            Tool::Bwrap(_) => {}
        }
        self.confined_dir(cwd).map(Some)
    }

    /// `cwd` with its links resolved, unless mounting it read-write would expose the data
    /// dir (it is the data dir, above it, or in it outside the workspace).
    fn confined_dir(&self, cwd: &Path) -> Result<PathBuf, String> {
        let cwd = std::fs::canonicalize(cwd)
            .map_err(|e| format!("working directory {}: {e}", cwd.display()))?;
        let (data, ws) = (&self.inner.data_dir, &self.inner.workspace_dir);
        let inside_workspace = cwd.starts_with(ws) && cwd != *ws;
        if data.starts_with(&cwd) || (cwd.starts_with(data) && !inside_workspace) {
            return Err(format!(
                "working directory {} would expose the node's data dir to the task",
                cwd.display()
            ));
        }
        if let Some(h) = self.inner.hide.iter().find(|h| cwd.starts_with(h)) {
            return Err(format!(
                "working directory {} is inside {}, which the sandbox hides",
                cwd.display(),
                h.display()
            ));
        }
        Ok(cwd)
    }

    /// `program args` confined to `cwd` with `network`, its environment built from `env`
    /// (see `process.rs`). The caller sets stdio and the process group.
    pub fn command(
        &self,
        program: &str,
        args: &[&str],
        cwd: &Path,
        env: &BTreeMap<String, String>,
        network: &Network,
    ) -> Result<Prepared, String> {
        self.command_in(program, args, cwd, None, env, network, &[])
    }

    /// [`Self::command`], with `home` also writable and `mounts` (neither may expose the
    /// data dir).
    #[allow(clippy::too_many_arguments)]
    fn command_in(
        &self,
        program: &str,
        args: &[&str],
        cwd: &Path,
        home: Option<&Path>,
        env: &BTreeMap<String, String>,
        network: &Network,
        mounts: &[Mount],
    ) -> Result<Prepared, String> {
        let bwrap = match &self.inner.tool {
            Tool::Missing(_) => return Err(self.check(cwd, network).unwrap_err()),
            Tool::Off => {
                self.check(cwd, network)?;
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).current_dir(cwd);
                process::set_env(&mut cmd, env);
                return Ok(Prepared { cmd, guard: None });
            }
            Tool::Bwrap(path) => path,
        };
        let cwd = &self
            .working_dir(cwd, network)?
            .ok_or("the sandbox has no working dir")?;
        self.bwrap_command(bwrap, program, args, cwd, home, env, network, mounts)
    }
}

/// The first file called `name` in the directories of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_tool(tool: Tool) -> Sandbox {
        let mut c = Confinement::unconfined();
        let inner = Arc::get_mut(&mut c.sandbox.inner).unwrap();
        inner.tool = tool;
        c.sandbox
    }

    #[test]
    fn a_node_without_a_sandbox_refuses_and_an_unconfined_one_keeps_no_network_promise() {
        let dir = std::env::temp_dir();
        let missing = with_tool(Tool::Missing("bwrap is not installed".into()));
        let e = missing.check(&dir, &Network::On).unwrap_err();
        assert!(
            e.contains("bubblewrap") && e.contains("--sandbox off"),
            "{e}"
        );
        assert!(missing
            .command("true", &[], &dir, &BTreeMap::new(), &Network::On)
            .is_err());
        let off = with_tool(Tool::Off);
        assert!(off.check(&dir, &Network::On).is_ok());
        for net in [
            Network::Off,
            Network::Allowlist(Arc::new(Allowlist::new(vec![], None))),
        ] {
            let e = off.check(&dir, &net).unwrap_err();
            assert!(e.contains("networkAccess"), "{e}");
        }
    }
}
