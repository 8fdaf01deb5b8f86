//! The `shell` executor: the input is a bash script. It runs in its own process group with
//! stdout and stderr on one pipe (so their order is kept), streamed as text deltas while it
//! runs. Abort escalates SIGINT -> SIGTERM -> SIGKILL to the whole group.
//!
//! Also owns running bash for others ([`run_bash`]: the agent's `bash` tool, environment
//! setup) and checking a script's syntax ([`bash_syntax`]). Must not touch: what the output
//! means (callers decide), redaction (the emitter does it).

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use super::{Executor, Run, RunOutcome};
use crate::node::sandbox::{Confinement, Guard, Prepared};
use crate::protocol::ui::UiChunk;

pub struct Shell;

/// After the script exits, how long to keep reading output that background processes still
/// write before the rest of the group is killed.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

impl Executor for Shell {
    fn name(&self) -> &'static str {
        "shell"
    }

    fn run<'a>(&'a self, run: Run<'a>) -> BoxFuture<'a, RunOutcome> {
        Box::pin(async move {
            run.emit.chunk(UiChunk::StartStep);
            run.emit.chunk(UiChunk::TextStart {
                id: run.part_id.clone(),
            });
            let outcome = run_bash(
                BashRun {
                    script: run.input,
                    cwd: run.cwd,
                    env: run.env,
                    abort: run.abort.clone(),
                    stop_grace: run.stop_grace,
                    confine: run.confine,
                },
                |text| run.emit.chunk(UiChunk::text_delta(&run.part_id, text)),
            )
            .await;
            run.emit.chunk(UiChunk::TextEnd {
                id: run.part_id.clone(),
            });
            run.emit.chunk(UiChunk::FinishStep);
            outcome
        })
    }
}

/// One bash script to run.
pub struct BashRun<'a> {
    pub script: &'a str,
    pub cwd: &'a std::path::Path,
    pub env: &'a std::collections::BTreeMap<String, String>,
    /// Cancelled to stop the script (SIGINT, SIGTERM, SIGKILL to its process group).
    pub abort: tokio_util::sync::CancellationToken,
    pub stop_grace: Duration,
    /// The sandbox and network the script runs with.
    pub confine: &'a Confinement,
}

/// Runs a bash script in its own process group and hands its output (stdout and stderr,
/// in order, as UTF-8 text) to `on_output` while it runs.
pub async fn run_bash(run: BashRun<'_>, mut on_output: impl FnMut(String) + Send) -> RunOutcome {
    if let Some(shell) = &run.confine.terminal {
        let typed = shell
            .run(
                run.script,
                run.cwd,
                run.env,
                &run.abort,
                run.stop_grace,
                &mut on_output,
            )
            .await;
        if let Some(outcome) = typed {
            return outcome;
        }
    }
    let (mut child, pgid, pipe, guard) = match spawn(&run).await {
        Ok(started) => started,
        Err(outcome) => return outcome,
    };
    let (exit, interrupted) = pump(&run, &mut child, pgid, pipe, &mut on_output).await;
    // Nothing of the run may outlive it.
    kill_group(pgid, Signal::SIGKILL);
    // The proxy stops, the container is removed.
    drop(guard);
    if interrupted {
        RunOutcome::Interrupted
    } else {
        RunOutcome::Exited(exit.unwrap_or(-1))
    }
}

/// What [`spawn`] started: the child, its group, the pipe's read end, and what must live
/// until it ends (its allowlist proxy or container).
type Started = (
    tokio::process::Child,
    Pid,
    tokio::net::unix::pipe::Receiver,
    Option<Guard>,
);

/// Starts bash in its sandbox in a new process group, stdout and stderr on one pipe.
async fn spawn(run: &BashRun<'_>) -> Result<Started, RunOutcome> {
    // Close-on-exec: a process the node starts meanwhile on another thread (a terminal's
    // tmux server lives on) must not inherit the write end, or EOF would never come.
    let (reader, writer): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| RunOutcome::Failed(format!("creating output pipe: {e}")))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| RunOutcome::Failed(format!("creating output pipe: {e}")))?;
    let Prepared { mut cmd, guard } = run
        .confine
        .command("bash", &["-c", run.script], run.cwd, run.env)
        .map_err(RunOutcome::Failed)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .kill_on_drop(false);
    crate::node::sandbox::own_session(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        RunOutcome::Failed(format!("cannot start bash in {}: {e}", run.cwd.display()))
    })?;
    // The parent's copies of the write end were moved into `cmd`; drop it so EOF arrives
    // when the group's processes close theirs.
    drop(cmd);
    let pgid = Pid::from_raw(child.id().map(|p| p as i32).unwrap_or(0));
    match tokio::net::unix::pipe::Receiver::from_owned_fd(reader) {
        Ok(pipe) => Ok((child, pgid, pipe, guard)),
        Err(e) => {
            kill_group(pgid, Signal::SIGKILL);
            let _ = child.wait().await;
            Err(RunOutcome::Failed(format!("reading output pipe: {e}")))
        }
    }
}

/// Reads the group's output until the pipe is closed and the script has exited, escalating
/// stop signals when the run is aborted. Returns the exit code and whether it was aborted.
///
/// One `select!` loop on purpose: reading, reaping, draining after exit and aborting share
/// the `exit`, `eof` and deadline state, and each branch is a line or two.
async fn pump(
    run: &BashRun<'_>,
    child: &mut tokio::process::Child,
    pgid: Pid,
    mut pipe: tokio::net::unix::pipe::Receiver,
    on_output: &mut impl FnMut(String),
) -> (Option<i32>, bool) {
    let mut text = Utf8Stream::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut exit: Option<i32> = None;
    let mut interrupted = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut eof = false;
    while !(eof && exit.is_some()) {
        tokio::select! {
            n = pipe.read(&mut buf), if !eof => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    if let Some(s) = text.push(&buf[..n]) {
                        on_output(s);
                    }
                }
            },
            status = child.wait(), if exit.is_none() => {
                exit = Some(match status {
                    Ok(st) => exit_code(st),
                    Err(_) => -1,
                });
                drain_deadline = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = async { tokio::time::sleep_until(drain_deadline.unwrap()).await }, if drain_deadline.is_some() && !eof => {
                // The script exited but something it started still holds the pipe.
                kill_group(pgid, Signal::SIGKILL);
                drain_deadline = None;
            }
            _ = run.abort.cancelled(), if !interrupted && exit.is_none() => {
                interrupted = true;
                escalate(pgid, run.stop_grace, child).await;
                // Keep reading: whatever the processes printed while dying is output too.
            }
        }
    }
    if let Some(rest) = text.finish() {
        on_output(rest);
    }
    (exit, interrupted)
}

/// A bash syntax error: the line it is on (1-based, in the script) and bash's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: Option<u32>,
    pub message: String,
}

/// Checks a script with `bash -n` (parses without running anything).
pub async fn bash_syntax(script: &str) -> Result<(), SyntaxError> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SyntaxError {
            line: None,
            message: format!("cannot run bash: {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes()).await;
    }
    let out = child.wait_with_output().await.map_err(|e| SyntaxError {
        line: None,
        message: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    // bash: line 3: syntax error near unexpected token `fi'
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("syntax error").trim();
    let line = first
        .split("line ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.trim().parse().ok());
    let message = first.splitn(3, ": ").nth(2).unwrap_or(first).to_string();
    Err(SyntaxError { line, message })
}

/// SIGINT, then SIGTERM, then SIGKILL to the group, each after `grace` if the group is still
/// alive. Reaps the leader on the way.
async fn escalate(pgid: Pid, grace: Duration, child: &mut tokio::process::Child) {
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGKILL] {
        kill_group(pgid, sig);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let _ = child.try_wait();
            if !group_alive(pgid) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!(?sig, pgid = pgid.as_raw(), "process group survived signal");
    }
}

/// Stops a process group as a run's abort does (SIGINT, SIGTERM, SIGKILL after `grace`
/// each), for executors that start their own processes.
pub(super) async fn stop_group(pgid: i32, grace: Duration, child: &mut tokio::process::Child) {
    let pgid = Pid::from_raw(pgid);
    escalate(pgid, grace, child).await;
    kill_group(pgid, Signal::SIGKILL);
}

/// Signals a process group. When the group's leader is a sandbox's outer `bwrap`, the
/// gentle signals go to the rest of the group only: `bwrap` would die of SIGINT or SIGTERM at
/// once and leave the sandbox without the process whose death (`--die-with-parent`) takes it
/// down, so a node that died during the grace period would leave the task running. SIGKILL
/// goes to the whole group.
fn kill_group(pgid: Pid, sig: Signal) {
    if pgid.as_raw() <= 0 {
        return;
    }
    if sig != Signal::SIGKILL && leads_sandbox(pgid) {
        for pid in group_members(pgid) {
            if pid != pgid {
                let _ = nix::sys::signal::kill(pid, sig);
            }
        }
        return;
    }
    let _ = killpg(pgid, sig);
}

/// Whether the process `pid` is bubblewrap.
fn leads_sandbox(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == "bwrap")
}

/// The processes in the group `pgid`, from `/proc`.
fn group_members(pgid: Pid) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
            let pgrp: i32 = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()?;
            (pgrp == pgid.as_raw()).then_some(Pid::from_raw(pid))
        })
        .collect()
}

fn group_alive(pgid: Pid) -> bool {
    pgid.as_raw() > 0 && killpg(pgid, None).is_ok()
}

fn exit_code(st: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
}

/// Turns a byte stream into UTF-8 text without splitting a character across deltas; invalid
/// bytes become U+FFFD.
#[derive(Default)]
pub struct Utf8Stream {
    carry: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> Option<String> {
        self.carry.extend_from_slice(bytes);
        // Keep back an incomplete sequence at the end (at most 3 bytes).
        let mut cut = self.carry.len();
        for back in 1..=3.min(self.carry.len()) {
            let b = self.carry[self.carry.len() - back];
            if b & 0xC0 == 0x80 {
                continue; // continuation byte
            }
            if b >= 0xC0 {
                let need = if b >= 0xF0 {
                    4
                } else if b >= 0xE0 {
                    3
                } else {
                    2
                };
                if back < need {
                    cut = self.carry.len() - back;
                }
            }
            break;
        }
        if cut == 0 {
            return None;
        }
        let rest = self.carry.split_off(cut);
        let s = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = rest;
        Some(s)
    }

    pub fn finish(&mut self) -> Option<String> {
        if self.carry.is_empty() {
            return None;
        }
        let s = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Stream;

    #[tokio::test]
    async fn syntax_errors_name_their_line() {
        assert_eq!(
            super::bash_syntax("echo ok\nif true; then echo y; fi\n").await,
            Ok(())
        );
        let e = super::bash_syntax("echo a\necho b\nif true; then\n  echo c\n")
            .await
            .unwrap_err();
        assert!(e.line.is_some(), "{e:?}");
        let e = super::bash_syntax("echo a\nfi\n").await.unwrap_err();
        assert_eq!(e.line, Some(2), "{e:?}");
        assert!(e.message.contains("fi"), "{e:?}");
    }

    #[test]
    fn utf8_is_never_split_at_any_cut() {
        let text = "héllo wörld → ✓ 𝄞 end";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut s = Utf8Stream::default();
            let mut out = String::new();
            out.extend(s.push(&bytes[..cut]));
            out.extend(s.push(&bytes[cut..]));
            out.extend(s.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
    }
}
