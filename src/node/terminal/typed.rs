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
/// The longest line typed (tmux refuses a much longer command); a longer script runs apart.
const MAX_LINE: usize = 8 * 1024;
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
    /// Runs `script` in `cwd` from the terminal's shell and hands its output to `on_output`;
    /// None when the terminal cannot take it now (it is gone, a program other than the shell
    /// has the foreground, or the script is too long to type), so the caller runs it apart.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        script: &str,
        cwd: &std::path::Path,
        env: &BTreeMap<String, String>,
        abort: &CancellationToken,
        grace: Duration,
        on_output: &mut (dyn FnMut(String) + Send),
    ) -> Option<RunOutcome> {
        let nonce = crate::crypto::hex(&crate::crypto::random_bytes(8));
        let line = typed_line(script, cwd, env, &nonce)?;
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
        let file = self.session.capture_file(&nonce);
        if let Err(e) = std::fs::write(&file, b"") {
            return Some(RunOutcome::Failed(format!("{}: {e}", file.display())));
        }
        let outcome = self
            .typed(&line, &nonce, &file, abort, grace, on_output)
            .await;
        let _ = self.session.pipe_to(None).await;
        let _ = std::fs::remove_file(&file);
        Some(outcome.unwrap_or_else(RunOutcome::Failed))
    }

    async fn typed(
        &self,
        line: &str,
        nonce: &str,
        file: &std::path::Path,
        abort: &CancellationToken,
        grace: Duration,
        on_output: &mut (dyn FnMut(String) + Send),
    ) -> Result<RunOutcome, String> {
        self.session.pipe_to(Some(file)).await?;
        // C-u clears a half-typed line; the leading space keeps it out of the history.
        self.session.keys(&["C-u"]).await?;
        self.session.type_line(line).await?;
        let start = format!("\u{1b}]{OSC};__VIBER_START_{nonce}\u{7}").into_bytes();
        let done = format!("\u{1b}]{OSC};__VIBER_DONE_{nonce}_").into_bytes();
        let mut reader = tokio::fs::File::open(file)
            .await
            .map_err(|e| e.to_string())?;
        // What was read and not handed on yet (before the start marker: only its last bytes).
        let mut seen: Vec<u8> = Vec::new();
        let mut started = false;
        let mut stop_sent: Option<Instant> = None;
        loop {
            reader
                .read_to_end(&mut seen)
                .await
                .map_err(|e| e.to_string())?;
            if !started {
                if let Some(i) = find(&seen, &start) {
                    seen.drain(..i + start.len());
                    started = true;
                }
            }
            // The end marker comes after the script, whether it started or not (an `eval`
            // that failed prints no start).
            if let Some(end) = find(&seen, &done) {
                if started {
                    on_output(clean(&String::from_utf8_lossy(&seen[..end])));
                }
                let code: i32 = seen[end + done.len()..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .map(|b| *b as char)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(-1);
                return Ok(match stop_sent {
                    Some(_) => RunOutcome::Interrupted,
                    None => RunOutcome::Exited(code),
                });
            }
            let keep = if started {
                let safe = emittable(&seen, &done);
                if safe > 0 {
                    on_output(clean(&String::from_utf8_lossy(&seen[..safe])));
                }
                safe
            } else {
                // Only the tail that could hold a marker's start is kept.
                seen.len().saturating_sub(start.len().max(done.len()))
            };
            seen.drain(..keep);
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

/// The line typed into the shell for one script; None when it is too long to type.
///
/// It runs the script with `bash -c` in a subshell that changes to the task's working dir:
/// the interactive shell's aliases, functions, options and directory do not reach it, an
/// `exit` in it does not end the terminal, and what it starts in the background stays in
/// the terminal's sandbox after it ends. No pager (a `git log` would wait for a key), and
/// stdin at its end as for a task elsewhere. The end marker is printed outside the `eval`,
/// so it comes even when the `eval` fails.
fn typed_line(
    script: &str,
    cwd: &std::path::Path,
    env: &BTreeMap<String, String>,
    nonce: &str,
) -> Option<String> {
    let vars: String = env
        .iter()
        .filter(|(k, _)| k.starts_with("VIBER_"))
        .map(|(k, v)| format!("{k}={} ", shell_quote(v)))
        .collect();
    let program = format!(
        "printf '\\033[2m# viber: %s\\033[0m\\n' {task}; \
         cat <<'__VIBER_SCRIPT_{nonce}'\n{script}\n__VIBER_SCRIPT_{nonce}\n\
         printf '\\033]{OSC};%s%s\\007' __VIBER_START_ {nonce}; \
         ( builtin cd -- {cwd} && PAGER=cat GIT_PAGER=cat {vars}command bash -c {quoted} </dev/null )\n",
        task = shell_quote(env.get("VIBER_TASK_ID").map(String::as_str).unwrap_or("task")),
        cwd = shell_quote(&cwd.to_string_lossy()),
        quoted = shell_quote(script),
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(program);
    let line = format!(
        " eval \"$(printf %s {b64} | base64 -d)\"; printf '\\033]{OSC};%s%s_%d\\007' __VIBER_DONE_ {nonce} $?"
    );
    (line.len() <= MAX_LINE).then_some(line)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
/// marker, never a CR whose LF may follow, never part of a character.
fn emittable(text: &[u8], marker: &[u8]) -> usize {
    let hold = (1..=marker.len().min(text.len()))
        .rev()
        .find(|k| marker.starts_with(&text[text.len() - k..]))
        .unwrap_or(0);
    let mut safe = text.len() - hold;
    if safe > 0 && text[safe - 1] == b'\r' {
        safe -= 1;
    }
    // Back to the start of a character cut in two.
    let mut i = safe;
    while i > 0 && i > safe.saturating_sub(4) && text[i - 1] & 0xC0 == 0x80 {
        i -= 1;
    }
    if i > 0 && i < safe && text[i - 1] >= 0xC0 && utf8_len(text[i - 1]) > safe - (i - 1) {
        return i - 1;
    }
    safe
}

/// The length of the UTF-8 sequence a lead byte starts.
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_a_possible_marker_start_is_held_back() {
        let m = b"__DONE_x_";
        assert_eq!(super::emittable(b"tick-8\r\n", m), 8);
        assert_eq!(super::emittable(b"tick-8\r", m), 6);
        assert_eq!(super::emittable(b"tick-8\r\n__DO", m), 8);
        assert_eq!(super::emittable(b"", m), 0);
        // A character cut in two waits for its rest.
        let e = "é€".as_bytes();
        assert_eq!(super::emittable(&e[..4], m), 2);
        assert_eq!(super::emittable(e, m), 5);
    }

    #[test]
    fn terminal_output_becomes_plain_text() {
        assert_eq!(
            super::clean("\u{1b}[01;34mdir\u{1b}[0m\r\nfile\u{1b}]0;title\u{7}\r\n"),
            "dir\nfile\n"
        );
    }
}
