//! `viber thread ...`: the thread subcommands' arguments (messages, and a thread's work in
//! its git worktree: diff, commit, push, pull request, sync, archive).

use clap::Subcommand;

use crate::cli::ClientArgs;

#[derive(Subcommand)]
pub enum ThreadAction {
    /// Start a thread in an environment with a first message and stream its task.
    New {
        env: String,
        #[arg(long)]
        title: Option<String>,
        /// Executor for the thread (shell, llm, claude-code, codex, opencode; default: the
        /// environment's).
        #[arg(long)]
        executor: Option<String>,
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        message: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List threads.
    List {
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a thread's conversation with each task's output.
    Show {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send a message: a follow-up to a running task, else the next task.
    Send {
        id: String,
        /// collect, steer or followup (for a running task).
        #[arg(long)]
        mode: Option<String>,
        /// Executor for this and the thread's later messages (default: the thread's).
        #[arg(long)]
        executor: Option<String>,
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        message: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What the thread changed in its worktree since its branch started (committed or not).
    Diff {
        id: String,
        /// Only the files and their counts.
        #[arg(long, conflicts_with = "patch")]
        stat: bool,
        /// Only the patch, uncoloured (it applies with `git apply`).
        #[arg(long)]
        patch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Commit every change in the thread's worktree.
    Commit {
        id: String,
        /// Default: the thread's title.
        #[arg(short, long)]
        message: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Push the thread's branch to the environment's remote.
    Push {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Push the thread's branch and open a pull request on GitHub.
    Pr {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        body: Option<String>,
        #[arg(long)]
        draft: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Merge the environment's branch into the thread's (exit 1 on a conflict: nothing is
    /// changed).
    Sync {
        id: String,
        /// Rebase the thread's branch onto it instead.
        #[arg(long)]
        rebase: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Archive a thread: its terminals end and its worktree is removed.
    Archive {
        id: String,
        /// Delete its branch too.
        #[arg(long)]
        delete_branch: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}
