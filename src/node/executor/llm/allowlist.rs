//! The `agent-decides` allowlist: which bash commands run without asking.
//!
//! The rule (also in the README):
//! - The command must be one simple command: words, quoted or not, and nothing the shell
//!   would act on before running it. No pipes, lists, redirections, substitutions, globs,
//!   subshells, background jobs or line breaks: any of `| & ; < > ( ) $ \` * ? [ ] { } !`
//!   or a newline outside quotes, `~` or `#` starting a word, and `$` or `` ` `` inside
//!   double quotes mean "ask".
//! - An allowlist entry is a list of words (`"cargo test"` is `cargo`, `test`); the command
//!   is allowed when its words start with an entry's words.
//! - Commands that run other commands (`env`, `xargs`, `sudo`, `bash`, `sh`, `eval`, `exec`,
//!   `timeout`, `nice`, `nohup`, `watch`, `ssh`, ...) are never allowed by the list.
//! - For common tools, options and scripts known to run code or write files are refused:
//!   `find -exec/-execdir/-ok/-okdir/-delete/-fprint*`, `git -c/--config-env/--exec-path/
//!   --upload-pack/--receive-pack/-u`, `sed -i` and `e`/`w`/`r` commands, `awk` programs
//!   with `system`, `getline`, `|` or `>`, `tar --to-command/-I/--use-compress-program/
//!   --checkpoint-action/-F/--info-script/--rsh-command`, `rsync -e/--rsh`,
//!   `sort --compress-program`.
//!
//! Anything refused here is not forbidden: it waits for the operator's approval.

/// Whether `command` may run without approval under `allowlist`.
pub fn allowed(allowlist: &[String], command: &str) -> bool {
    let Some(argv) = simple_command(command) else {
        return false;
    };
    if argv.is_empty() || RUNS_OTHERS.contains(&base_name(&argv[0])) || runs_code(&argv) {
        return false;
    }
    allowlist.iter().any(|entry| match simple_command(entry) {
        Some(prefix) if !prefix.is_empty() => argv.starts_with(&prefix),
        _ => false,
    })
}

/// Commands whose purpose is to run another command.
const RUNS_OTHERS: &[&str] = &[
    "env", "xargs", "sudo", "doas", "su", "bash", "sh", "zsh", "dash", "ksh", "fish", "eval",
    "exec", "command", "builtin", "source", ".", "timeout", "nice", "nohup", "watch", "time",
    "ssh", "parallel", "setsid", "stdbuf", "strace", "chroot", "unshare", "script", "busybox",
];

fn base_name(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

/// Splits a command into words the way the shell would, or None when the shell would do
/// more than run one command with those words.
pub fn simple_command(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = command.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        ch => cur.push(ch),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '$' | '`' => return None,
                        '\\' => cur.push(chars.next()?),
                        ch => cur.push(ch),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next()? {
                    '\n' => return None,
                    ch => cur.push(ch),
                }
            }
            // Home expansion and comments only start a word.
            '~' | '#' if !in_word => return None,
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '*' | '?' | '[' | ']' | '{'
            | '}' | '!' | '\n' | '\r' => return None,
            ch => {
                in_word = true;
                cur.push(ch);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

/// Whether the words use an option or script known to run code or write files.
fn runs_code(argv: &[String]) -> bool {
    let args = &argv[1..];
    let any = |pred: &dyn Fn(&str) -> bool| args.iter().any(|a| pred(a));
    let opt = |names: &[&str]| {
        any(&|a: &str| {
            names
                .iter()
                .any(|n| a == *n || (n.starts_with("--") && a.starts_with(&format!("{n}="))))
        })
    };
    match base_name(&argv[0]) {
        "find" => opt(&[
            "-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0", "-fprintf",
            "-fls",
        ]),
        "git" => {
            opt(&[
                "-c",
                "--config-env",
                "--exec-path",
                "--upload-pack",
                "--receive-pack",
                "-u",
            ]) || any(&|a: &str| {
                a.starts_with("-c") && a.len() > 2
                    || a.starts_with("--upload-pack")
                    || a.starts_with("--receive-pack")
                    || a.starts_with("--exec")
            })
        }
        "sed" | "gsed" => {
            opt(&["-i", "--in-place"])
                || any(&|a: &str| a.starts_with("-i") && !a.starts_with("--"))
                || args
                    .iter()
                    .filter(|a| !a.starts_with('-'))
                    .any(|a| sed_runs(a))
        }
        "awk" | "gawk" | "mawk" | "nawk" => any(&|a: &str| {
            a.contains("system") || a.contains("getline") || a.contains('|') || a.contains('>')
        }),
        "tar" => {
            opt(&[
                "--to-command",
                "-I",
                "--use-compress-program",
                "--checkpoint-action",
                "-F",
                "--info-script",
                "--new-volume-script",
                "--rsh-command",
                "--rmt-command",
            ]) || any(&|a: &str| a.starts_with("--to-command") || a.starts_with("--use-compress"))
        }
        "rsync" => opt(&["-e", "--rsh"]) || any(&|a: &str| a.starts_with("--rsh")),
        "sort" => any(&|a: &str| a.starts_with("--compress-program")),
        _ => false,
    }
}

/// Whether a sed script may run a command (`e`) or touch files (`w`, `W`, `r`, `R`). Errs on
/// the side of asking: any such letter in command position counts.
fn sed_runs(script: &str) -> bool {
    let bytes = script.as_bytes();
    bytes.iter().enumerate().any(|(i, b)| {
        // After the start, a separator, an address (a line number, `$`, `,`, a `/regex/`)
        // or the flags of an `s` command.
        let command_position = i == 0
            || matches!(
                bytes[i - 1],
                b';' | b'/' | b'{' | b'}' | b' ' | b'\n' | b',' | b'$' | b'!' | b'0'..=b'9'
            );
        command_position && matches!(b, b'e' | b'w' | b'W' | b'r' | b'R')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entries_match_whole_word_prefixes_of_one_simple_command() {
        let l = list(&["ls", "cargo test", "git status", "find", "grep"]);
        for ok in [
            "ls",
            "ls -la src",
            "cargo test --all",
            "cargo  test",
            "git status --short",
            "find . -name 'x.rs'",
            "grep -rn \"fn main\" src",
        ] {
            assert!(allowed(&l, ok), "{ok}");
        }
        for ask in [
            "cargo build",
            "cargotest",
            "lsof",
            "ls; rm -rf /",
            "ls && rm x",
            "ls | sh",
            "ls > f",
            "ls $(rm x)",
            "ls `rm x`",
            "ls \"$(rm x)\"",
            "ls *",
            "ls ~",
            "ls\nrm x",
            "ls 'unterminated",
            "(ls)",
            "ls & rm x",
            "",
        ] {
            assert!(!allowed(&l, ask), "{ask:?}");
        }
    }

    /// Issue 12, item 4: options and scripts that run code are refused for common tools, and
    /// commands that run other commands are never allowed.
    #[test]
    fn tools_options_that_run_code_need_approval() {
        let l = list(&[
            "find", "git", "sed", "awk", "tar", "env", "xargs", "rsync", "sort",
        ]);
        for ask in [
            "find . -exec touch /tmp/x {} +",
            "find . -exec touch /tmp/x ;",
            "find . -execdir rm x",
            "find . -delete",
            "find . -fprint /tmp/out",
            "git -c alias.x=!touch /tmp/pwned x",
            "git -calias.x=!cmd x",
            "git --config-env=core.pager=X log",
            "git fetch --upload-pack=touch /tmp/x origin",
            "git ls-remote -u 'touch /tmp/x' origin",
            "sed e",
            "sed '1e touch /tmp/x' f",
            "sed 's/a/b/e' f",
            "sed -i s/a/b/ f",
            "sed 'w /tmp/out' f",
            "awk 'BEGIN{system(\"touch /tmp/x\")}'",
            "awk '{print | \"sh\"}' f",
            "awk '{print > \"/tmp/x\"}' f",
            "tar --to-command=sh -xf a.tar",
            "tar -I 'sh -c x' -xf a.tar",
            "tar --checkpoint-action=exec=sh -cf a.tar .",
            "rsync -e 'sh -c x' a b",
            "sort --compress-program=sh f",
            "env touch /tmp/x",
            "xargs rm",
            "/usr/bin/env rm x",
        ] {
            assert!(!allowed(&l, ask), "{ask}");
        }
        for ok in [
            "find . -name '*.rs' -type f",
            "git log --oneline -5",
            "git diff HEAD~1",
            "sed -n 1,5p f",
            "sed s/a/b/ f",
            "awk '{print $1}' f",
            "tar -tf a.tar",
            "sort -u f",
        ] {
            assert!(allowed(&l, ok), "{ok}");
        }
    }
}
