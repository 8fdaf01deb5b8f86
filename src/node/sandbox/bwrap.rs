//! The bubblewrap command line that confines one process tree: the system read-only, the
//! working dir (and an agent's home) read-write, private `/tmp`, `/proc` and `/run`, the
//! data dir and the hidden paths covered, no capabilities, and the network the task may
//! use (with the allowlist proxy's socket and forwarder bound in under `allowlist`); and
//! the probe that checks, at start, that bubblewrap works here.
//!
//! Must not touch: which working dirs are allowed (`mod.rs`), the process's environment
//! (`process.rs`), what the proxy allows (`proxy.rs`, `network.rs`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::process::set_env;
use super::{find_on_path, forward, proxy, Guard, Network, Prepared, Sandbox};

/// Paths inside the sandbox for the allowlist plumbing (in its private /tmp).
const SOCKET_INSIDE: &str = "/tmp/.viber/proxy.sock";
const FORWARDER_INSIDE: &str = "/tmp/.viber/viber";

impl Sandbox {
    /// `program args` under bubblewrap at `bwrap`, in `cwd` (already checked, links
    /// resolved), with `home` also writable and `network`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bwrap_command(
        &self,
        bwrap: &Path,
        program: &str,
        args: &[&str],
        cwd: &Path,
        home: Option<&Path>,
        env: &BTreeMap<String, String>,
        network: &Network,
        mounts: &[super::Mount],
    ) -> Result<Prepared, String> {
        let mut a: Vec<OsString> = BWRAP_BASE.iter().map(OsString::from).collect();
        // Cover the data dir (which also holds the workspaces), then open the task's own
        // working dir again inside it.
        push(&mut a, &["--tmpfs"]);
        a.push(self.inner.data_dir.clone().into());
        push(&mut a, &["--bind"]);
        a.push(cwd.into());
        a.push(cwd.into());
        // In order: a read-only part of a writable mount comes after it.
        for m in mounts {
            let path = self.confined_dir(&m.path)?;
            push(&mut a, &[if m.writable { "--bind" } else { "--ro-bind" }]);
            a.push(path.clone().into());
            a.push(path.into());
        }
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
pub(super) fn probe_bwrap() -> Result<PathBuf, String> {
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

/// What the sandbox hides besides the data dir unless told otherwise: the usual places of
/// the node user's credentials, and the shadow password files.
pub(super) fn default_hidden() -> Vec<PathBuf> {
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
