//! Terminals kept in tmux, so they outlive the node's process: one tmux server per terminal,
//! on a socket in the node's data dir (`<data>/tmux/<terminal id>`, hidden from every
//! sandbox, so a process in the terminal cannot drive tmux itself). The pane runs the
//! sandboxed command; the node watches it through a `tmux attach` client under a PTY of
//! its own, and starts another client when it restarts.
//!
//! Why a server per terminal: a tmux server's environment is the one it started with, so
//! each terminal gets exactly its own variables and secrets and no other's.
//!
//! Must not touch: the sandbox (the caller hands over the confined command), the stream
//! (`mod.rs`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The session's name on its server.
const SESSION: &str = "viber";
/// The server's settings: no status line (the viewer shows its own), keys go through at
/// once, a long history, and what a terminal in a browser can show.
const CONF: &str = "set -g status off\n\
    set -sg escape-time 0\n\
    set -g history-limit 50000\n\
    set -g default-terminal xterm-256color\n\
    set -g mouse off\n\
    set -g aggressive-resize on\n\
    set -g default-shell /bin/sh\n";
/// The longest socket path the kernel accepts (sun_path, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The tmux of this node, if it has one.
pub fn binary() -> Option<PathBuf> {
    std::env::var_os("VIBER_TMUX_BIN")
        .map(PathBuf::from)
        .or_else(|| crate::node::sandbox::find_on_path("tmux"))
}

/// Where one terminal's tmux lives.
#[derive(Debug, Clone)]
pub struct Session {
    tmux: PathBuf,
    socket: PathBuf,
    /// Where the pane's command writes its exit status.
    status_file: PathBuf,
    conf: PathBuf,
}

impl Session {
    /// The session of terminal `id` under `dir` (which it creates, 0700).
    pub fn at(tmux: PathBuf, dir: &Path, id: &str) -> Result<Session, String> {
        crate::crypto::private_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let socket = dir.join(id);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(format!(
                "the tmux socket path {} is too long for a Unix socket; use a shorter data dir",
                socket.display()
            ));
        }
        let conf = dir.join("tmux.conf");
        if std::fs::read_to_string(&conf).ok().as_deref() != Some(CONF) {
            std::fs::write(&conf, CONF).map_err(|e| format!("writing {}: {e}", conf.display()))?;
        }
        Ok(Session {
            tmux,
            status_file: dir.join(format!("{id}.status")),
            socket,
            conf,
        })
    }

    /// Every terminal id with a live tmux server under `dir` (after the node restarted).
    pub async fn existing(tmux: &Path, dir: &Path) -> Vec<Session> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !crate::protocol::terminal::valid_terminal_id(&name) || name.ends_with(".status") {
                continue;
            }
            let Ok(s) = Session::at(tmux.to_path_buf(), dir, &name) else {
                continue;
            };
            if s.alive().await {
                found.push(s);
            } else {
                s.forget();
            }
        }
        found
    }

    pub fn id(&self) -> String {
        self.socket
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new(&self.tmux);
        c.arg("-u")
            .arg("-S")
            .arg(&self.socket)
            .arg("-f")
            .arg(&self.conf)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Starts the server with `program args` in the pane, in `cwd`, with exactly `env`.
    pub async fn create(
        &self,
        program: &OsString,
        args: &[OsString],
        cwd: &Path,
        env: &[(OsString, OsString)],
        cols: u16,
        rows: u16,
    ) -> Result<(), String> {
        let _ = std::fs::remove_file(&self.status_file);
        // The pane's command records its status for the node (tmux forgets it with the
        // session): `sh -c 'p=$0; "$@"; echo $? > "$p"' file program args...`.
        let mut c = self.tmux();
        c.env_clear()
            .envs(env.iter().cloned())
            .arg("new-session")
            .arg("-d")
            .arg("-s")
            .arg(SESSION)
            .arg("-x")
            .arg(cols.max(1).to_string())
            .arg("-y")
            .arg(rows.max(1).to_string())
            .arg("-c")
            .arg(cwd)
            .arg("--")
            .arg("/bin/sh")
            .arg("-c")
            .arg("p=$0; \"$@\"; echo $? > \"$p\"")
            .arg(&self.status_file)
            .arg(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let out = c
            .output()
            .await
            .map_err(|e| format!("starting tmux: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "tmux new-session failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// The client that shows the session: run it under a PTY.
    pub fn attach_command(&self) -> Command {
        let mut c = self.tmux();
        c.env_clear()
            .env("TERM", "xterm-256color")
            .env("LANG", "C.UTF-8")
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("attach-session")
            .arg("-t")
            .arg(SESSION);
        c.kill_on_drop(false);
        c
    }

    /// Whether the session still exists.
    pub async fn alive(&self) -> bool {
        let mut c = self.tmux();
        c.arg("has-session")
            .arg("-t")
            .arg(SESSION)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.status().await.is_ok_and(|s| s.success())
    }

    /// The pids of the pane's processes (its command; the tree hangs below).
    pub async fn pane_pids(&self) -> Vec<u32> {
        let mut c = self.tmux();
        c.args(["list-panes", "-s", "-t", SESSION, "-F", "#{pane_pid}"])
            .stderr(std::process::Stdio::null());
        match c.output().await {
            Ok(out) => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Copies everything the pane prints to `file` (None: stops copying).
    pub async fn pipe_to(&self, file: Option<&Path>) -> Result<(), String> {
        let mut c = self.tmux();
        c.args(["pipe-pane", "-t", SESSION]);
        if let Some(f) = file {
            // The pipe's command runs outside the sandbox, with the terminal's PATH: no
            // lookup.
            c.arg(format!(
                "exec /bin/cat >> {}",
                shell_quote(&f.to_string_lossy())
            ));
        }
        self.ok(c, "pipe-pane").await
    }

    /// Types `text` into the pane (literally), then Enter.
    pub async fn type_line(&self, text: &str) -> Result<(), String> {
        let mut c = self.tmux();
        c.args(["send-keys", "-t", SESSION, "-l", text]);
        self.ok(c, "send-keys").await?;
        self.keys(&["Enter"]).await
    }

    /// Sends keys by name (`C-c`, `Enter`, `C-u`).
    pub async fn keys(&self, keys: &[&str]) -> Result<(), String> {
        let mut c = self.tmux();
        c.args(["send-keys", "-t", SESSION]).args(keys);
        self.ok(c, "send-keys").await
    }

    /// The name of the program in the pane's foreground.
    pub async fn foreground(&self) -> Option<String> {
        let mut c = self.tmux();
        c.args([
            "display-message",
            "-p",
            "-t",
            SESSION,
            "#{pane_current_command}",
        ])
        .stderr(std::process::Stdio::null());
        let out = c.output().await.ok()?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Where a run's copy of the pane's output goes.
    pub fn capture_file(&self, nonce: &str) -> PathBuf {
        let mut name = self.socket.as_os_str().to_os_string();
        name.push(format!(".{nonce}.out"));
        PathBuf::from(name)
    }

    async fn ok(&self, mut c: Command, what: &str) -> Result<(), String> {
        let out = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("tmux {what}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tmux {what}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The pane command's exit status, once it ended.
    pub fn exit_status(&self) -> Option<i32> {
        std::fs::read_to_string(&self.status_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Ends the server and everything in it.
    pub async fn kill(&self) {
        let mut c = self.tmux();
        c.arg("kill-server")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = c.status().await;
    }

    /// Removes the socket and status files.
    pub fn forget(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.status_file);
    }
}

/// `s` in single quotes for sh.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
