//! An agent CLI's process, as Claude Code, Codex and OpenCode are driven: started inside the
//! task's confinement in a session of its own, JSON lines on stdin and stdout, the tail of
//! stderr kept for the error message, and at the end its whole process group ended (a
//! background process a tool call started cannot outlive the run).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

use super::cli::Cli;
use super::Run;
use crate::node::sandbox::Guard;

/// Longest stderr tail kept for an error message.
const STDERR_TAIL: usize = 4096;

pub struct AgentProcess {
    child: Child,
    pgid: i32,
    stdin: Option<ChildStdin>,
    pub stdout: Lines<BufReader<ChildStdout>>,
    errors: JoinHandle<String>,
    title: &'static str,
    _guard: Option<Guard>,
}

impl AgentProcess {
    /// Starts `cli` (found at `bin`) with `args` in the run's working dir and confinement.
    pub fn start(
        run: &Run<'_>,
        cli: &Cli,
        bin: &std::path::Path,
        args: &[String],
        env: &BTreeMap<String, String>,
    ) -> Result<AgentProcess, String> {
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let bin = bin.display().to_string();
        let prepared = run.confine.command(&bin, &arg_refs, run.cwd, env)?;
        let mut cmd = prepared.cmd;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        crate::node::sandbox::own_session(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cli.title))?;
        let pgid = child.id().map(|p| p as i32).unwrap_or(0);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(format!("{}'s pipes are missing", cli.title));
        };
        let errors = tokio::spawn(async move {
            let mut tail = String::new();
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tail.push_str(&l);
                tail.push('\n');
                if tail.len() > 2 * STDERR_TAIL {
                    tail = crate::text::tail(&tail, STDERR_TAIL).to_string();
                }
            }
            tail
        });
        Ok(AgentProcess {
            child,
            pgid,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
            errors,
            title: cli.title,
            _guard: prepared.guard,
        })
    }

    /// What people call the CLI.
    pub fn title(&self) -> &'static str {
        self.title
    }

    /// Writes one JSON line to the CLI; false when it no longer reads.
    pub async fn send(&mut self, v: &Value) -> bool {
        let Some(w) = self.stdin.as_mut() else {
            return false;
        };
        let mut line = v.to_string();
        line.push('\n');
        w.write_all(line.as_bytes()).await.is_ok() && w.flush().await.is_ok()
    }

    /// The next JSON line from the CLI (lines that are not JSON are skipped); None at the end
    /// of its output.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match self.stdout.next_line().await {
                Ok(Some(line)) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        return Some(v);
                    }
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Stops the CLI now: its process group gets SIGTERM, then SIGKILL after `grace`.
    pub async fn interrupt(&mut self, grace: Duration) {
        super::shell::stop_group(self.pgid, grace, &mut self.child).await;
    }

    /// Ends the process: stdin closes (the CLIs exit on it), a short wait, then the whole
    /// group is killed. Returns how it exited and its stderr's tail, as an error message's
    /// ending (": ..."), empty when it said nothing.
    pub async fn finish(mut self) -> (String, String) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        super::shell::stop_group(self.pgid, Duration::ZERO, &mut self.child).await;
        let tail = tokio::time::timeout(Duration::from_secs(1), &mut self.errors)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let status = match status {
            Ok(Ok(s)) => s.to_string(),
            _ => "still running; killed".into(),
        };
        let tail = tail.trim();
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::text::head(tail, 2000))
        };
        (status, tail)
    }

    /// The error for a CLI that ended without finishing its turn.
    pub async fn ended_early(self) -> String {
        let title = self.title;
        let (status, tail) = self.finish().await;
        format!("{title} ended before finishing its turn ({status}){tail}")
    }
}
