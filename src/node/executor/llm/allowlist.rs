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
//!   `timeout`, `nice`, `nohup`, `watch`, `ssh`, ...) and programmable tools whose arguments
//!   are programs (`sed`, `awk`, `perl`, `python`, `node`, `tar`, `rsync`, editors and pagers)
//!   are never allowed by the list.
//! - `git` needs an entry with its subcommand (`git status`, `git log`); subcommands that run
//!   commands (`submodule`, `bisect`, `rebase`, `difftool`, `mergetool`, `filter-branch`,
//!   `config`, ...) always ask, as do `-c`, `--config-env`, `--exec-path`, `--upload-pack`,
//!   `--receive-pack`, `-u`, `-x`, `--exec`, `-O`/`--open-files-in-pager` and `--ext-diff`.
//! - `find -exec/-execdir/-ok/-okdir/-delete/-fprint*/-fls` and `sort --compress-program`
//!   ask. Long options count when abbreviated, as getopt accepts (`--upload-pa`).
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
        // A `git` entry needs its subcommand right after `git` (no global options).
        Some(prefix) if base_name(&argv[0]) == "git" && !git_subcommand_first(&prefix) => false,
        Some(prefix) if !prefix.is_empty() => argv.starts_with(&prefix),
        _ => false,
    })
}

/// Whether the words are `git SUBCOMMAND ...`: no global option (`-C`, `-c`, `--git-dir`,
/// `--exec-path`, ...) before the subcommand.
fn git_subcommand_first(argv: &[String]) -> bool {
    argv.get(1).is_some_and(|s| !s.starts_with('-'))
}

/// Whether `arg` is the long option `name` (`--name`, `--name=...`) or any abbreviation of
/// it, as getopt and git accept.
fn long_opt(arg: &str, name: &str) -> bool {
    let Some(given) = arg.strip_prefix("--") else {
        return false;
    };
    let given = given.split('=').next().unwrap_or(given);
    let name = name.trim_start_matches("--");
    !given.is_empty() && name.starts_with(given)
}

/// Commands whose purpose is to run another command, and tools whose arguments are
/// programs: too many ways to run code to list their options.
const RUNS_OTHERS: &[&str] = &[
    "env",
    "xargs",
    "sudo",
    "doas",
    "su",
    "bash",
    "sh",
    "zsh",
    "dash",
    "ksh",
    "fish",
    "eval",
    "exec",
    "command",
    "builtin",
    "source",
    ".",
    "timeout",
    "nice",
    "nohup",
    "watch",
    "time",
    "ssh",
    "parallel",
    "setsid",
    "stdbuf",
    "strace",
    "chroot",
    "unshare",
    "script",
    "busybox",
    "sed",
    "gsed",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "perl",
    "python",
    "python3",
    "ruby",
    "node",
    "deno",
    "bun",
    "php",
    "lua",
    "tclsh",
    "tar",
    "rsync",
    "vi",
    "vim",
    "nvim",
    "emacs",
    "less",
    "more",
    "man",
    "git-shell",
];

/// Git long options that run commands, change configuration or write files.
const GIT_RUNS_OPTIONS: &[&str] = &[
    "--config-env",
    "--config",
    "--template",
    "--exec-path",
    "--upload-pack",
    "--receive-pack",
    "--exec",
    "--open-files-in-pager",
    "--ext-diff",
    "--textconv",
    "--extcmd",
    "--tool",
    "--output",
    "--output-directory",
];

/// Git subcommands that run commands or change what later commands run.
const GIT_RUNS: &[&str] = &[
    "submodule",
    "bisect",
    "rebase",
    "difftool",
    "mergetool",
    "filter-branch",
    "filter-repo",
    "config",
    "daemon",
    "instaweb",
    "credential",
    "web--browse",
    "am",
    "send-email",
    "p4",
    "svn",
    "alias",
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
                        // As bash: the backslash goes only before these (a line break after
                        // one would join lines: refused).
                        '\\' => match chars.next()? {
                            '\n' => return None,
                            ch @ ('"' | '\\') => cur.push(ch),
                            ch => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                        },
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

/// Whether the words use an option or subcommand known to run code or write files.
fn runs_code(argv: &[String]) -> bool {
    let args = &argv[1..];
    let any = |pred: &dyn Fn(&str) -> bool| args.iter().any(|a| pred(a));
    match base_name(&argv[0]) {
        "find" => any(&|a: &str| {
            matches!(
                a,
                "-exec" | "-execdir" | "-ok" | "-okdir" | "-delete" | "-fls"
            ) || a.starts_with("-fprint")
        }),
        "git" => {
            !git_subcommand_first(argv)
                || GIT_RUNS.contains(&args[0].as_str())
                || any(&|a: &str| {
                    // Short options, alone, clustered or attached (`-c`, `-calias.x=!cmd`,
                    // `-u`, `-x`, `-O`, `-o FILE`), and long ones, abbreviated or not. Writing
                    // a file (`--output`) could rewrite the repository's config.
                    (a.starts_with('-')
                        && !a.starts_with("--")
                        && a[1..].contains(['c', 'u', 'x', 'O', 'o']))
                        || GIT_RUNS_OPTIONS.iter().any(|n| long_opt(a, n))
                })
        }
        "sort" => any(&|a: &str| long_opt(a, "--compress-program")),
        _ => false,
    }
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

    /// Issue 12, item 4: options and subcommands that run code are refused, programmable
    /// tools and commands that run other commands are never allowed, in every spelling the
    /// review found (attached and clustered short options, abbreviated long ones).
    #[test]
    fn tools_options_that_run_code_need_approval() {
        let l = list(&[
            "find",
            "git",
            "git log",
            "git status",
            "git diff",
            "git grep",
            "git fetch",
            "git ls-remote",
            "git submodule",
            "git rebase",
            "sed",
            "sed -n",
            "awk",
            "tar",
            "env",
            "xargs",
            "rsync",
            "sort",
        ]);
        for ask in [
            "find . -exec touch /tmp/x {} +",
            "find . -execdir rm x",
            "find . -delete",
            "find . -fprint /tmp/out",
            "git status -c alias.x=!touch",
            "git -c alias.x=!touch /tmp/pwned x",
            "git -calias.x=!cmd x",
            "git --config-env=core.pager=X log",
            "git log --config-env=x=y",
            "git fetch --upload-pack=touch origin",
            "git fetch --upload-pa=touch origin",
            "git ls-remote -u 'touch /tmp/x' origin",
            "git submodule foreach touch /tmp/x",
            "git rebase -x 'touch /tmp/x' HEAD~1",
            "git grep -O'touch /tmp/x' foo",
            "git grep --open-files-in-pager=sh foo",
            "git diff --ext-diff",
            "git branch",
            "git log -1 --format=x --output=.git/config",
            "git log -1 --out=.git/config",
            "git grep --op='touch /x' foo",
            "git ls-remote --u='touch /x' .",
            "git -C d submodule foreach cmd",
            "git --no-pager log",
            "git grep \"--ope\\\nn-files-in-pager=sh\" x",
            "sort --co=sh f",
            "sed -n 1,5p f",
            "sed e",
            "sed -e'1e touch /x' f",
            "awk '{print $1}' f",
            "awk -f repo.awk",
            "tar -tf a.tar",
            "tar --to-c=sh -xf a.tar",
            "rsync -ae 'sh -c x' a localhost:b",
            "sort --compress-program=sh f",
            "sort --compress-prog=sh f",
            "env touch /tmp/x",
            "xargs rm",
            "/usr/bin/env rm x",
        ] {
            assert!(!allowed(&l, ask), "{ask}");
        }
        for ok in [
            "find . -name '*.rs' -type f",
            "git log --oneline -5",
            "git status --short",
            "git diff HEAD~1 --stat",
            "git grep -n foo",
            "sort -u f",
        ] {
            assert!(allowed(&l, ok), "{ok}");
        }
    }
}
