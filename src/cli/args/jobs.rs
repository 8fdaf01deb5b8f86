//! `viber job ...`: scheduled jobs (a goal an environment runs on a cron schedule).

use clap::Subcommand;

use crate::cli::ClientArgs;

#[derive(Subcommand)]
pub enum JobAction {
    /// Schedule a goal in an environment: `viber job add ENV "update the dependencies and
    /// open a PR" --schedule "0 9 * * 1-5" --timezone Europe/Paris`.
    Add {
        /// Environment id or name.
        env: String,
        /// The goal each run sends (quote it).
        goal: String,
        /// A 5-field cron expression: minute hour day-of-month month day-of-week.
        #[arg(long)]
        schedule: String,
        /// IANA time zone the schedule is read in.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// A name for the job [default: the goal's first line].
        #[arg(long)]
        name: Option<String>,
        /// Executor (shell, llm, claude-code, codex, opencode) [default: the environment's].
        #[arg(long)]
        executor: Option<String>,
        /// Continue one thread on every run instead of starting a new one each time.
        #[arg(long)]
        reuse_thread: bool,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List jobs with their next and last run.
    #[command(alias = "ls")]
    List {
        /// Only this environment's.
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a job (its threads and tasks stay).
    Rm {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a job now, apart from its schedule; prints its thread and task.
    RunNow {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Turn a job's schedule on or off.
    Enable {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    Disable {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}
