//! One terminal's process and its output: starting it (under a PTY of the node's, or in
//! tmux and watched through an attach client), the reader that redacts its output into the
//! ring and types its input, and its end.
//!
//! Must not touch: viewers (`attach.rs`), the frames of other terminals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{lock, pty, Control, Exit, Term, Terminals, FORGET_AFTER};
use crate::node::sandbox::{Confinement, Network};
use crate::protocol::terminal::TerminalOpen;
use crate::secrets::Redactor;

/// Output held back by the redactor (it may be the start of a secret) goes out after this
/// long without more, so an echoed keystroke is not kept waiting.
const REDACT_IDLE: Duration = Duration::from_millis(15);
/// Input held for a terminal whose program does not read it; more is dropped.
const TYPED_MAX: usize = 1024 * 1024;

impl Terminals {
    /// Starts a new terminal's process (in tmux when it has a session) and streams it.
    pub(super) async fn start(&self, t: &Arc<Term>, open: &TerminalOpen) -> Result<(), String> {
        let mut cwd = open
            .options
            .cwd
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                self.inner
                    .workspace_dir
                    .join(crate::node::runtime::DEFAULT_TASK_DIR)
            });
        if !cwd.is_dir() {
            return Err(format!(
                "working directory {} does not exist on this node",
                cwd.display()
            ));
        }
        // A thread's terminal opens in the thread's worktree (created when it is the first
        // to need it; its task sets it up).
        let mut mounts = Vec::new();
        if let Some(spec) = &open.options.worktree {
            tracing::debug!(terminal = %t.id, "terminal waits for the worktree");
            let _turn = self.inner.worktrees.lock(&spec.thread_id).await;
            let (wt, dir, _) = self.inner.worktrees.ensure(spec, &cwd).await?;
            tracing::debug!(terminal = %t.id, "terminal has the worktree");
            cwd = dir;
            mounts = wt.mounts();
        }
        let confine = Confinement {
            sandbox: self.inner.sandbox.clone(),
            network: Network::of(&open.options, None),
            container: open.options.container.clone(),
            home: None,
            terminal: None,
            mounts,
        };
        confine.check(&cwd)?;
        let mut env: BTreeMap<String, String> = open.options.env.clone();
        for s in open.secrets.iter().filter(|s| s.file.is_none()) {
            env.insert(s.name.clone(), s.value.clone());
        }
        env.insert("TERM".into(), "xterm-256color".into());
        env.entry("LANG".into()).or_insert_with(|| "C.UTF-8".into());
        env.insert("VIBER_TERMINAL_ID".into(), t.id.clone());
        env.insert("VIBER_NODE_ID".into(), self.inner.node_id.clone());
        let (program, args) = match open.command.split_first() {
            Some((p, a)) => (p.clone(), a.to_vec()),
            None => login_shell(),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let prepared = confine.command(&program, &args, &cwd, &env)?;
        *lock(&t.guard) = prepared.guard;
        let redactor = redactor_of(open);
        match &t.tmux {
            Some(session) => {
                let std = prepared.cmd.as_std();
                let argv: Vec<_> = std.get_args().map(|a| a.to_os_string()).collect();
                let vars: Vec<_> = std
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
                    .collect();
                let dir = std.get_current_dir().unwrap_or(&cwd).to_path_buf();
                session
                    .create(
                        &std.get_program().to_os_string(),
                        &argv,
                        &dir,
                        &vars,
                        open.cols,
                        open.rows,
                    )
                    .await?;
                self.changed();
                let this = self.clone();
                let t = t.clone();
                let (cols, rows) = (open.cols, open.rows);
                tokio::spawn(async move { this.stream(t, None, redactor, cols, rows).await });
            }
            None => {
                let (child, master) = pty::spawn(prepared.cmd, open.cols, open.rows, open.echo)
                    .map_err(|e| format!("starting {program}: {e}"))?;
                t.pid.store(
                    child.id().unwrap_or(0),
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.changed();
                let this = self.clone();
                let t = t.clone();
                let (cols, rows) = (open.cols, open.rows);
                tokio::spawn(async move {
                    this.stream(t, Some((child, master)), redactor, cols, rows)
                        .await
                });
            }
        }
        Ok(())
    }

    /// Reads the terminal until its process ends: redacts the output into the ring, types
    /// input, resizes. A tmux terminal is read through attach clients, one after another
    /// while the session lives.
    pub(super) async fn stream(
        &self,
        t: Arc<Term>,
        mut own: Option<(tokio::process::Child, pty::Master)>,
        mut redactor: Redactor,
        cols: u16,
        rows: u16,
    ) {
        let Some(mut control) = lock(&t.control_rx).take() else {
            return;
        };
        let mut size = (cols.max(1), rows.max(1));
        let exit = loop {
            let (mut child, master) = match own.take() {
                Some(p) => p,
                None => {
                    let Some(session) = &t.tmux else {
                        break Exit::default();
                    };
                    if !session.alive().await {
                        break Exit {
                            code: session.exit_status(),
                            error: None,
                        };
                    }
                    match pty::spawn(session.attach_command(), size.0, size.1, true) {
                        Ok(p) => p,
                        Err(e) => {
                            break Exit {
                                code: None,
                                error: Some(format!("attaching to tmux: {e}")),
                            }
                        }
                    }
                }
            };
            let stopped = pump(&t, &master, &mut control, &mut redactor, &mut size).await;
            if stopped {
                if let Some(s) = &t.tmux {
                    s.kill().await;
                }
                kill_group(&child);
                let _ = child.wait().await;
                break Exit {
                    code: None,
                    error: Some("closed".into()),
                };
            }
            let status = child.wait().await;
            if t.tmux.is_none() {
                break Exit {
                    code: status.ok().and_then(exit_code),
                    error: None,
                };
            }
            // The attach client ended: the session ended too, or the client alone (the loop
            // looks and attaches again).
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(s) = &t.tmux {
            s.forget();
        }
        t.append(redactor.finish().as_bytes());
        *lock(&t.guard) = None;
        t.ended(exit);
        self.changed();
        // Its viewers have a while to read the end; then it is forgotten (the gateway keeps
        // its record).
        tokio::time::sleep(FORGET_AFTER).await;
        self.forget(&t.id);
    }

    /// Drops an ended terminal and its attachments.
    pub(super) fn forget(&self, id: &str) {
        let removed = lock(&self.inner.terms).remove(id);
        if let Some(t) = removed {
            for (_, a) in lock(&t.attachments).drain() {
                a.cancel.cancel();
            }
            self.changed();
        }
    }
}

/// The reader's loop over one PTY: true when the terminal was closed, false when the PTY's
/// processes ended.
async fn pump(
    t: &Term,
    master: &pty::Master,
    control: &mut mpsc::UnboundedReceiver<Control>,
    redactor: &mut Redactor,
    size: &mut (u16, u16),
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    let mut utf8 = Utf8::default();
    // Keystrokes not yet taken by the terminal: written as it takes them, never waited for
    // (a program that does not read its input must not stop its output or its close).
    let mut typed: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    loop {
        let holding = redactor.holding();
        tokio::select! {
            n = master.write(typed.make_contiguous()), if !typed.is_empty() => match n {
                Ok(n) => {
                    typed.drain(..n);
                }
                Err(_) => return false,
            },
            read = master.read(&mut buf) => match read {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    if redactor.is_empty() {
                        t.append(&buf[..n]);
                    } else {
                        let text = utf8.decode(&buf[..n]);
                        t.append(redactor.push(&text).as_bytes());
                    }
                }
            },
            c = control.recv() => match c {
                Some(Control::Input(bytes)) => {
                    if typed.len() + bytes.len() <= TYPED_MAX {
                        typed.extend(bytes);
                    } else {
                        tracing::warn!(terminal = %t.id, "input dropped: the terminal does not take it");
                    }
                }
                Some(Control::Resize(cols, rows)) => {
                    *size = (cols.max(1), rows.max(1));
                    let _ = master.resize(size.0, size.1);
                }
                None => return true,
            },
            _ = tokio::time::sleep(REDACT_IDLE), if holding => {
                t.append(redactor.finish().as_bytes());
            }
            _ = t.stop.cancelled() => return true,
        }
    }
}

/// Decodes a byte stream as UTF-8, keeping a character split between reads for the next.
#[derive(Default)]
struct Utf8 {
    carry: Vec<u8>,
}

impl Utf8 {
    fn decode(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let keep = match std::str::from_utf8(&self.carry) {
            Ok(_) => 0,
            // An incomplete character at the end waits for the rest.
            Err(e) if e.error_len().is_none() => self.carry.len() - e.valid_up_to(),
            Err(_) => 0,
        };
        let rest = self.carry.split_off(self.carry.len() - keep);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        text
    }
}

pub(super) fn redactor_of(open: &TerminalOpen) -> Redactor {
    let secrets: Vec<&str> = open.secrets.iter().map(|s| s.value.as_str()).collect();
    Redactor::new(&secrets)
}

/// bash as a login shell where there is one, else sh.
fn login_shell() -> (String, Vec<String>) {
    if Path::new("/bin/bash").exists() {
        ("/bin/bash".into(), vec!["-l".into()])
    } else {
        ("/bin/sh".into(), vec!["-l".into()])
    }
}

fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

/// Ends the terminal's session: SIGHUP, as when a terminal closes, then SIGKILL.
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let pg = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGHUP);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGCONT);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_between_reads_is_kept_whole() {
        let mut u = Utf8::default();
        let bytes = "é€".as_bytes();
        assert_eq!(u.decode(&bytes[..1]), "");
        assert_eq!(u.decode(&bytes[1..3]), "é");
        assert_eq!(u.decode(&bytes[3..]), "€");
        assert_eq!(u.decode(b"\xffa"), "\u{fffd}a");
    }
}
