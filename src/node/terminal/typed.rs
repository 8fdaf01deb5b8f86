//! Scripts typed into a thread's terminal (environment `terminalMode: tmux`): the shell
//! executor's scripts and the agent's bash commands run in the thread's tmux shell, so a
//! person watching the terminal sees each command and its output live, and what a command
//! starts in the background (a dev server) is still running for the next task.
//!
//! The script is typed as one line (`eval` of its base64, so the interactive shell's history
//! expansion and line editing cannot change it) after a listing of it; it runs in a subshell
//! (an `exit` in it does not end the terminal) between two markers, and the pane's output is
//! copied to a file (`tmux pipe-pane`) that the node reads back between the markers.
//!
//! Must not touch: the terminal's stream to viewers (`mod.rs`), redaction (the task's
//! emitter does it, like for every other run).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::tmux::{shell_quote, Session};
use crate::node::executor::RunOutcome;

/// How long a new terminal may take to start its shell.
const START_WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(30);
/// The markers are operating system commands (`ESC ] n ; text BEL`) of a number no
/// terminal uses: tmux drops them, so the person watching does not see them, but the copy of
/// the pane's output has them.
const OSC: u32 = 7799;
/// Shells the node types into; anything else in the foreground means the terminal is busy.
const SHELLS: &[&str] = &["bash", "sh", "dash", "zsh", "ash", "fish"];

/// A thread's terminal, ready to run scripts in.
#[derive(Clone)]
pub struct TypedShell {
    pub(super) session: Session,
}

impl TypedShell {
    /// Runs `script` in the terminal's shell and hands its output to `on_output`; None when
    /// the terminal cannot take it now (it is gone, or a program other than the shell has
    /// the foreground), so the caller runs the script apart.
    pub async fn run(
        &self,
        script: &str,
        env: &BTreeMap<String, String>,
        abort: &CancellationToken,
        grace: Duration,
        on_output: &mut (dyn FnMut(String) + Send),
    ) -> Option<RunOutcome> {
        let deadline = Instant::now() + START_WAIT;
        loop {
            if self.session.alive().await
                && self
                    .session
                    .foreground()
                    .await
                    .is_some_and(|p| SHELLS.contains(&p.as_str()))
            {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let nonce = crate::crypto::hex(&crate::crypto::random_bytes(8));
        let file = self.session.capture_file(&nonce);
        if let Err(e) = std::fs::write(&file, b"") {
            return Some(RunOutcome::Failed(format!("{}: {e}", file.display())));
        }
        let outcome = self
            .typed(script, env, &nonce, &file, abort, grace, on_output)
            .await;
        let _ = self.session.pipe_to(None).await;
        let _ = std::fs::remove_file(&file);
        Some(outcome.unwrap_or_else(RunOutcome::Failed))
    }

    #[allow(clippy::too_many_arguments)]
    async fn typed(
        &self,
        script: &str,
        env: &BTreeMap<String, String>,
        nonce: &str,
        file: &std::path::Path,
        abort: &CancellationToken,
        grace: Duration,
        on_output: &mut (dyn FnMut(String) + Send),
    ) -> Result<RunOutcome, String> {
        self.session.pipe_to(Some(file)).await?;
        // The task's own variables; no pager (a script's `git log` would wait for a key on
        // the terminal), and stdin at its end like a task's elsewhere.
        let exports: String = env
            .iter()
            .filter(|(k, _)| k.starts_with("VIBER_"))
            .map(|(k, v)| format!("export {k}={}; ", shell_quote(v)))
            .chain(["export PAGER=cat GIT_PAGER=cat; exec </dev/null; ".to_string()])
            .collect();
        let program = format!(
            "printf '\\033[2m# viber: %s\\033[0m\\n' {task}; \
             cat <<'__VIBER_SCRIPT_{nonce}'\n{script}\n__VIBER_SCRIPT_{nonce}\n\
             ( {exports}printf '\\033]{OSC};%s%s\\007' __VIBER_START_ {nonce}\n{script}\n); \
             printf '\\033]{OSC};%s%s_%d\\007' __VIBER_DONE_ {nonce} $?\n",
            task = shell_quote(
                env.get("VIBER_TASK_ID")
                    .map(String::as_str)
                    .unwrap_or("task")
            ),
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(program);
        // C-u clears a half-typed line; the leading space keeps it out of the history.
        self.session.keys(&["C-u"]).await?;
        self.session
            .type_line(&format!(" eval \"$(printf %s {b64} | base64 -d)\""))
            .await?;
        let start = format!("\u{1b}]{OSC};__VIBER_START_{nonce}\u{7}");
        let done = format!("\u{1b}]{OSC};__VIBER_DONE_{nonce}_");
        let mut reader = tokio::fs::File::open(file)
            .await
            .map_err(|e| e.to_string())?;
        let mut seen: Vec<u8> = Vec::new();
        // Output after the start marker not yet handed on.
        let mut emitted = None::<usize>;
        let mut stop_sent: Option<Instant> = None;
        loop {
            let mut chunk = Vec::new();
            reader
                .read_to_end(&mut chunk)
                .await
                .map_err(|e| e.to_string())?;
            seen.extend(chunk);
            // Up to the last whole character: the text read so far never changes.
            let whole = match std::str::from_utf8(&seen) {
                Ok(s) => s.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => seen.len(),
            };
            let text = String::from_utf8_lossy(&seen[..whole]);
            if emitted.is_none() {
                emitted = text.find(&start).map(|i| i + start.len());
            }
            if let Some(from) = emitted {
                let from = from.min(text.len());
                if let Some(end) = text[from..].find(&done).map(|i| from + i) {
                    on_output(clean(&text[from..end]));
                    let code: i32 = text[end + done.len()..]
                        .split(|c: char| !c.is_ascii_digit())
                        .next()
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(-1);
                    return Ok(match stop_sent {
                        Some(_) => RunOutcome::Interrupted,
                        None => RunOutcome::Exited(code),
                    });
                }
                let safe = from + emittable(&text[from..], &done);
                if safe > from {
                    on_output(clean(&text[from..safe]));
                    emitted = Some(safe);
                }
            }
            if abort.is_cancelled() {
                match stop_sent {
                    None => {
                        self.session.keys(&["C-c"]).await?;
                        stop_sent = Some(Instant::now());
                    }
                    Some(at) if at.elapsed() > grace * 2 => return Ok(RunOutcome::Interrupted),
                    Some(_) => {}
                }
            }
            if !self.session.alive().await {
                return Err("the thread's terminal ended while the script ran".into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Terminal output as task text: CRLF as LF, without the escape sequences programs send
/// to a terminal (colors, cursor moves, titles), which a task's text cannot show.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' if chars.peek() == Some(&'\n') => {}
            c => out.push(c),
        }
    }
    out
}

/// How much of `text` can go out now: all but a tail that could be the start of the end
/// marker, and never a CR whose LF may follow.
fn emittable(text: &str, marker: &str) -> usize {
    let hold = (1..=marker.len().min(text.len()))
        .rev()
        .find(|k| {
            text.is_char_boundary(text.len() - k) && marker.starts_with(&text[text.len() - k..])
        })
        .unwrap_or(0);
    let safe = text.len() - hold;
    if text[..safe].ends_with('\r') {
        safe - 1
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_possible_marker_start_is_held_back() {
        assert_eq!(super::emittable("tick-8\r\n", "__DONE_x_"), 8);
        assert_eq!(super::emittable("tick-8\r", "__DONE_x_"), 6);
        assert_eq!(super::emittable("tick-8\r\n__DO", "__DONE_x_"), 8);
        assert_eq!(super::emittable("", "__DONE_x_"), 0);
    }

    #[test]
    fn terminal_output_becomes_plain_text() {
        assert_eq!(
            super::clean("\u{1b}[01;34mdir\u{1b}[0m\r\nfile\u{1b}]0;title\u{7}\r\n"),
            "dir\nfile\n"
        );
    }
}
