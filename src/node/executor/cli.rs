//! Agent CLIs on this node (Claude Code, Codex, OpenCode): where each one is, its version,
//! and what to tell an operator whose node lacks it.
//!
//! A CLI is found on the node's PATH, or at the path its `VIBER_*_BIN` variable names (for
//! a CLI installed outside PATH, such as a project's `node_modules/.bin`). Each is looked up
//! once per process; a node picks up a newly installed CLI when it restarts.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use super::llm::approval::{self, Approval};
use crate::protocol::ExecutorKind;

/// One agent CLI this node can drive.
pub struct Cli {
    pub kind: ExecutorKind,
    /// What people call it.
    pub title: &'static str,
    /// The command looked up on PATH.
    pub command: &'static str,
    /// A variable naming the CLI's path, which wins over PATH.
    pub path_var: &'static str,
}

pub const CLAUDE_CODE: Cli = Cli {
    kind: ExecutorKind::ClaudeCode,
    title: "Claude Code",
    command: "claude",
    path_var: "VIBER_CLAUDE_BIN",
};

pub const CODEX: Cli = Cli {
    kind: ExecutorKind::Codex,
    title: "Codex",
    command: "codex",
    path_var: "VIBER_CODEX_BIN",
};

pub const OPENCODE: Cli = Cli {
    kind: ExecutorKind::OpenCode,
    title: "OpenCode",
    command: "opencode",
    path_var: "VIBER_OPENCODE_BIN",
};

pub const ALL: [&Cli; 3] = [&CLAUDE_CODE, &CODEX, &OPENCODE];

/// Looks every CLI up at once (each `--version` takes 0.4 to 0.9 s), at start-up rather than
/// on the first handshake, and logs what this node can run.
pub fn detect() {
    std::thread::scope(|s| {
        for cli in ALL {
            s.spawn(move || cli.installed());
        }
    });
    for cli in ALL {
        match cli.installed() {
            Some(f) => {
                tracing::info!(cli = cli.command, version = %f.version, path = %f.path.display(), "agent CLI found")
            }
            None => tracing::debug!(cli = cli.command, "agent CLI not installed"),
        }
    }
}

/// A CLI found on this node.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub version: String,
}

impl Cli {
    /// The CLI's path and version, when it is installed and answers `--version`.
    pub fn installed(&'static self) -> Option<&'static Found> {
        static FOUND: [OnceLock<Option<Found>>; 3] =
            [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let slot = ALL.iter().position(|c| c.kind == self.kind)?;
        FOUND[slot].get_or_init(|| self.look_up()).as_ref()
    }

    fn look_up(&self) -> Option<Found> {
        let path = match std::env::var_os(self.path_var) {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)).filter(|p| p.is_file()),
            _ => crate::node::sandbox::find_on_path(self.command),
        }?;
        let out = std::process::Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = version_in(&text)?;
        out.status.success().then_some(Found { path, version })
    }

    /// The error for a task that needs this CLI on a node without it.
    pub fn missing(&self) -> String {
        format!(
            "{} is not installed on this node: install it with `{}` (the `{}` command must be \
             on the node's PATH, or {} must name it) and restart the node",
            self.title,
            self.kind.install_hint().unwrap_or_default(),
            self.command,
            self.path_var
        )
    }

    /// Capabilities for an installed CLI: its executor name, and the name with its version.
    pub fn capabilities(&'static self) -> Vec<String> {
        self.installed()
            .map(|f| {
                let name = self.kind.as_str();
                vec![name.to_string(), format!("{name}@{}", f.version)]
            })
            .unwrap_or_default()
    }
}

/// The CLI session a run continues: the one this task's earlier run started, else the one
/// the gateway handed over from the thread's previous task.
pub async fn session(run: &super::Run<'_>) -> Option<String> {
    let kept = run
        .memory
        .lock()
        .await
        .first()
        .and_then(|m| m["agentSession"].as_str().map(str::to_string));
    kept.or_else(|| run.options.resume_session.clone())
}

/// Keeps the CLI's session for the task's next run and reports it to the gateway, which
/// hands it to the thread's next task.
pub async fn remember_session(run: &super::Run<'_>, id: &str) {
    let mut memory = run.memory.lock().await;
    if memory.first().and_then(|m| m["agentSession"].as_str()) == Some(id) {
        return;
    }
    *memory = vec![serde_json::json!({ "agentSession": id })];
    run.emit
        .chunk(crate::protocol::ui::UiChunk::MessageMetadata {
            message_metadata: serde_json::json!({ "agentSession": id }),
        });
}

/// Whether `path` (absolute, or relative to `cwd`) stays inside `cwd`, by its components.
pub fn inside(cwd: &Path, path: &Path) -> bool {
    let full = cwd.join(path);
    let mut parts: Vec<Component> = Vec::new();
    for c in full.components() {
        match c {
            Component::ParentDir => {
                parts.pop();
            }
            Component::CurDir => {}
            other => parts.push(other),
        }
    }
    parts.iter().collect::<PathBuf>().starts_with(cwd)
}

/// A CLI's permission prompt about tool call `call`: answered by the node when `auto`
/// (the working mode lets it through), else by the operator through the approval flow.
pub struct Prompt {
    pub call: String,
    pub auto: bool,
}

impl Prompt {
    pub async fn decide(self, run: &super::Run<'_>) -> Approval {
        if self.auto {
            Approval::Approved
        } else {
            approval::ask(run, &self.call).await
        }
    }
}

/// The version in a `--version` line: its first word that starts with a digit
/// (`2.1.197 (Claude Code)`, `codex-cli 0.171.0`, `1.18.33`).
fn version_in(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_each_clis_banner() {
        assert_eq!(version_in("2.1.197 (Claude Code)\n").unwrap(), "2.1.197");
        assert_eq!(version_in("codex-cli 0.171.0\n").unwrap(), "0.171.0");
        assert_eq!(version_in("1.18.33\n").unwrap(), "1.18.33");
        assert_eq!(version_in("usage: whatever"), None);
    }

    #[test]
    fn patches_inside_the_working_dir_are_told_apart() {
        let cwd = Path::new("/w/repo");
        assert!(inside(cwd, Path::new("src/a.rs")));
        assert!(inside(cwd, Path::new("/w/repo/b")));
        assert!(!inside(cwd, Path::new("../other/a")));
        assert!(!inside(cwd, Path::new("/etc/passwd")));
        assert!(!inside(cwd, Path::new("/w/repository/x")));
    }

    #[test]
    fn a_missing_cli_says_how_to_install_it() {
        let m = CODEX.missing();
        assert!(m.contains("npm install -g @openai/codex"), "{m}");
        assert!(m.contains("VIBER_CODEX_BIN"), "{m}");
    }
}
