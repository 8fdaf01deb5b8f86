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
//! Owns: finding the tool, the command line that confines one process tree, the environment
//! it gets, which working dirs a task may use. Must not touch: running and reaping the
//! process (`executor::shell` does), what a network request may reach (`proxy.rs`).

mod container;
pub mod forward;
mod proxy;

pub use proxy::Proxy;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures_util::future::BoxFuture;

use crate::protocol::{ContainerSpec, NetworkAccess, TaskOptions};

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

use crate::protocol::SANDBOX_CAPABILITY;

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

/// The outbound network one process tree gets.
#[derive(Clone)]
pub enum Network {
    On,
    Off,
    /// Only through the node's proxy, to what the allowlist allows.
    Allowlist(Arc<Allowlist>),
}

/// Asks an operator whether a task may reach a host its allowlist does not name: `Ok` to
/// let the connection through, `Err` with why not.
pub trait NetworkAsk: Send + Sync {
    fn ask(&self, host: String, port: u16) -> BoxFuture<'static, Result<(), String>>;
}

/// The hosts a task may reach, and who to ask about others.
pub struct Allowlist {
    hosts: Vec<String>,
    /// None: refuse what is not listed without asking.
    ask: Option<Arc<dyn NetworkAsk>>,
    /// `host:port`s an operator allowed during this task.
    approved: Mutex<Vec<String>>,
    /// One question at a time, so concurrent connections to one host ask once.
    asking: tokio::sync::Mutex<()>,
}

impl Allowlist {
    pub fn new(hosts: Vec<String>, ask: Option<Arc<dyn NetworkAsk>>) -> Allowlist {
        Allowlist {
            hosts,
            ask,
            approved: Mutex::new(Vec::new()),
            asking: tokio::sync::Mutex::new(()),
        }
    }

    fn listed(&self, host: &str, port: u16) -> bool {
        self.hosts
            .iter()
            .chain(lock(&self.approved).iter())
            .any(|p| proxy::matches(p, host, port))
    }

    /// Whether an entry names this address itself (so a name resolving to it may be
    /// reached, private or not).
    fn names_address(&self, ip: IpAddr, port: u16) -> bool {
        self.hosts
            .iter()
            .any(|p| proxy::matches(p, &ip.to_string(), port))
    }

    /// Whether `host:port` may be reached: listed, approved before, or approved now.
    async fn allows(&self, host: &str, port: u16) -> Result<(), String> {
        if self.listed(host, port) {
            return Ok(());
        }
        let refused = format!(
            "network access to {host}:{port} is not allowed: this environment's \
             networkAccess is \"allowlist\" and {host} is not on its networkAllowlist"
        );
        let Some(ask) = &self.ask else {
            return Err(refused);
        };
        let _one = self.asking.lock().await;
        if self.listed(host, port) {
            return Ok(());
        }
        ask.ask(host.to_string(), port)
            .await
            .map_err(|why| format!("{refused}; {why}"))?;
        lock(&self.approved).push(format!("{host}:{port}"));
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Network {
    /// A task's network, from its options (default: on); `ask` is consulted about hosts an
    /// allowlist does not name.
    pub fn of(options: &TaskOptions, ask: Option<Arc<dyn NetworkAsk>>) -> Network {
        match options.network_access.unwrap_or(NetworkAccess::On) {
            NetworkAccess::On => Network::On,
            NetworkAccess::Off => Network::Off,
            NetworkAccess::Allowlist => Network::Allowlist(Arc::new(Allowlist::new(
                options.network_allowlist.clone(),
                ask,
            ))),
        }
    }
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
                None => self.sandbox.command(program, args, cwd, env, &self.network),
                Some(home) => {
                    std::fs::create_dir_all(home)
                        .map_err(|e| format!("creating {}: {e}", home.display()))?;
                    let mut env = env.clone();
                    env.insert("HOME".into(), home.display().to_string());
                    self.sandbox
                        .command_in(program, args, cwd, Some(home), &env, &self.network)
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

/// Paths inside the sandbox for the allowlist plumbing (in its private /tmp).
const SOCKET_INSIDE: &str = "/tmp/.viber/proxy.sock";
const FORWARDER_INSIDE: &str = "/tmp/.viber/viber";

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
            Mode::Auto | Mode::Bwrap => match probe_bwrap() {
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
                    .chain(default_hidden())
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
    /// (see [`process_env`]). The caller sets stdio and the process group.
    pub fn command(
        &self,
        program: &str,
        args: &[&str],
        cwd: &Path,
        env: &BTreeMap<String, String>,
        network: &Network,
    ) -> Result<Prepared, String> {
        self.command_in(program, args, cwd, None, env, network)
    }

    /// [`Self::command`], with `home` also writable (it must not expose the data dir
    /// either).
    fn command_in(
        &self,
        program: &str,
        args: &[&str],
        cwd: &Path,
        home: Option<&Path>,
        env: &BTreeMap<String, String>,
        network: &Network,
    ) -> Result<Prepared, String> {
        let bwrap = match &self.inner.tool {
            Tool::Missing(_) => return Err(self.check(cwd, network).unwrap_err()),
            Tool::Off => {
                self.check(cwd, network)?;
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(args).current_dir(cwd);
                set_env(&mut cmd, env);
                return Ok(Prepared { cmd, guard: None });
            }
            Tool::Bwrap(path) => path,
        };
        let cwd = &self
            .working_dir(cwd, network)?
            .ok_or("the sandbox has no working dir")?;
        let mut a: Vec<OsString> = BWRAP_BASE.iter().map(OsString::from).collect();
        // Cover the data dir (which also holds the workspaces), then open the task's own
        // working dir again inside it.
        push(&mut a, &["--tmpfs"]);
        a.push(self.inner.data_dir.clone().into());
        push(&mut a, &["--bind"]);
        a.push(cwd.into());
        a.push(cwd.into());
        // After the working dir's bind, so a hidden path inside it stays hidden (one that
        // contains the working dir was refused).
        for h in &self.inner.hide {
            if h.is_dir() {
                push(&mut a, &["--tmpfs"]);
            } else if h.exists() {
                push(&mut a, &["--ro-bind", "/dev/null"]);
            } else {
                continue;
            }
            a.push(h.into());
        }
        // /run is covered (its sockets would let a task ask systemd, D-Bus or docker to run
        // something outside): keep only the resolver's files when resolv.conf points there.
        if let Some(dir) = std::fs::canonicalize("/etc/resolv.conf")
            .ok()
            .filter(|p| p.starts_with("/run"))
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            push(&mut a, &["--ro-bind"]);
            a.push(dir.clone().into());
            a.push(dir.into());
        }
        if let Some(home) = home {
            let home = self.confined_dir(home)?;
            push(&mut a, &["--bind"]);
            a.push(home.clone().into());
            a.push(home.into());
        }
        let mut proxy = None;
        match network {
            Network::On => {}
            Network::Off => push(&mut a, &["--unshare-net"]),
            Network::Allowlist(hosts) => {
                let p = proxy::Proxy::start(
                    &self.inner.run_dir,
                    hosts.clone(),
                    self.inner.resolve.clone(),
                )
                .map_err(|e| format!("starting the network allowlist proxy: {e:#}"))?;
                let exe =
                    self.inner.forwarder.clone().ok_or(
                        "cannot find the viber binary to run the network proxy's forwarder",
                    )?;
                push(&mut a, &["--unshare-net", "--bind"]);
                a.push(p.socket().into());
                a.push(SOCKET_INSIDE.into());
                push(&mut a, &["--ro-bind"]);
                a.push(exe.into());
                a.push(FORWARDER_INSIDE.into());
                proxy = Some(p);
            }
        }
        push(&mut a, &["--chdir"]);
        a.push(cwd.into());
        push(&mut a, &["--"]);
        if proxy.is_some() {
            push(
                &mut a,
                &[FORWARDER_INSIDE, forward::SUBCOMMAND, SOCKET_INSIDE, "--"],
            );
        }
        push(&mut a, &[program]);
        push(&mut a, args);
        let mut cmd = tokio::process::Command::new(bwrap);
        cmd.args(a).current_dir(cwd);
        set_env(&mut cmd, env);
        Ok(Prepared {
            cmd,
            guard: proxy.map(Guard::Proxy),
        })
    }
}

/// What every sandbox is: dies with the node, its own PID and IPC namespaces, no
/// capabilities, the system read-only, its own /dev, /proc and /tmp.
const BWRAP_BASE: &[&str] = &[
    "--die-with-parent",
    "--unshare-pid",
    "--unshare-ipc",
    "--cap-drop",
    "ALL",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
    "--tmpfs",
    "/run",
];

fn push(a: &mut Vec<OsString>, items: &[&str]) {
    a.extend(items.iter().map(OsString::from));
}

/// Runs bwrap once with the options every task uses; its path when that works.
fn probe_bwrap() -> Result<PathBuf, String> {
    let path = find_on_path("bwrap").ok_or("bubblewrap (bwrap) is not installed")?;
    let out = std::process::Command::new(&path)
        .args(BWRAP_BASE)
        .args(["--unshare-net", "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} does not work here: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(path)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What the sandbox hides besides the data dir unless told otherwise: the usual places of
/// the node user's credentials, and the shadow password files.
fn default_hidden() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["/etc/shadow", "/etc/gshadow"].map(PathBuf::from).to_vec();
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let home = PathBuf::from(home);
        out.extend(
            [
                ".ssh",
                ".gnupg",
                ".aws",
                ".azure",
                ".kube",
                ".docker",
                ".config/gh",
                ".config/gcloud",
                ".git-credentials",
                ".netrc",
                ".npmrc",
                ".pypirc",
                ".claude",
                ".claude.json",
                ".codex",
            ]
            .iter()
            .map(|p| home.join(p)),
        );
    }
    out
}

/// Names of the node's own variables that a task must not inherit: its internals, sockets
/// to agents and buses outside the sandbox, and anything named like a credential.
fn internal(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    up.starts_with("VIBER_")
        || up.starts_with("DBUS_")
        || [
            "TMPDIR",
            "XDG_RUNTIME_DIR",
            "SSH_AUTH_SOCK",
            "SSH_AGENT_PID",
            "GPG_AGENT_INFO",
        ]
        .contains(&up.as_str())
        || [
            "KEY",
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "CREDENTIAL",
            "CREDS",
            "AUTH",
            "_PAT",
            "_DSN",
            "_PWD",
        ]
        .iter()
        .any(|w| up.contains(w))
}

/// A value that carries a password in a URL (`scheme://user:secret@host`).
fn has_userinfo(value: &std::ffi::OsStr) -> bool {
    let v = value.to_string_lossy();
    v.split("://").skip(1).any(|rest| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// A task process's environment: the node's, minus its internals and credentials, plus
/// `env` (the task's vars and secrets, which may name anything).
pub fn process_env(env: &BTreeMap<String, String>) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, v)| k.to_str().is_some_and(|k| !internal(k)) && !has_userinfo(v))
        .filter(|(k, _)| k.to_str().is_some_and(|k| !env.contains_key(k)))
        .collect();
    out.extend(env.iter().map(|(k, v)| (k.into(), v.into())));
    out
}

/// Starts the process in a session of its own (so also a process group of its own, whose
/// id is its pid): it has no controlling terminal, so it cannot push keystrokes into the
/// terminal of a node started in one, and stopping the group reaches all it starts.
pub fn own_session(cmd: &mut tokio::process::Command) {
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

fn set_env(cmd: &mut tokio::process::Command, env: &BTreeMap<String, String>) {
    cmd.env_clear().envs(process_env(env));
}

/// Parses `--proxy-resolve HOST=IP`.
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let (host, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected HOST=IP"))?;
    let ip: IpAddr = ip
        .trim()
        .parse()
        .map_err(|e| format!("{s:?}: {ip:?} is not an IP address: {e}"))?;
    Ok((host.trim().trim_end_matches('.').to_ascii_lowercase(), ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_internals_and_credentials_are_not_inherited() {
        for k in [
            "VIBER_HOME",
            "viber_node_token",
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "PGPASSWORD",
            "TMPDIR",
            "MYSQL_PWD",
            "GITHUB_PAT",
            "SENTRY_DSN",
            "DBUS_SESSION_BUS_ADDRESS",
            "XDG_RUNTIME_DIR",
            "SSH_AUTH_SOCK",
        ] {
            assert!(internal(k), "{k}");
        }
        for k in [
            "PATH",
            "HOME",
            "LANG",
            "TERM",
            "USER",
            "CARGO_HOME",
            "PWD",
            "OLDPWD",
        ] {
            assert!(!internal(k), "{k}");
        }
        assert!(has_userinfo("postgres://app:pw@db:5432/x".as_ref()));
        assert!(has_userinfo("http://u:p@proxy:3128".as_ref()));
        assert!(!has_userinfo("https://example.com/a@b".as_ref()));
        assert!(!has_userinfo("/usr/bin:/bin".as_ref()));
        // What the task itself sets is kept, whatever its name.
        let env = BTreeMap::from([("GIT_TOKEN".to_string(), "t".to_string())]);
        let got = process_env(&env);
        assert!(got.iter().any(|(k, v)| k == "GIT_TOKEN" && v == "t"));
        assert_eq!(got.iter().filter(|(k, _)| k == "GIT_TOKEN").count(), 1);
    }

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

    #[test]
    fn resolve_entries_parse() {
        assert_eq!(
            parse_resolve("Api.Example.com.=127.0.0.1").unwrap(),
            ("api.example.com".to_string(), "127.0.0.1".parse().unwrap())
        );
        assert!(parse_resolve("nohost").is_err());
        assert!(parse_resolve("h=notanip").is_err());
    }
}
