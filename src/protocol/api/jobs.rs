//! Scheduled jobs: a goal an environment runs on a cron schedule.

use serde::{Deserialize, Serialize};

use crate::protocol::names::wire_enum;
use crate::protocol::{ExecutorKind, TaskState};

wire_enum! {
    /// Which thread a job's runs go to.
    pub enum JobThreadMode ("thread mode") {
        /// A new thread for every run.
        New = "new",
        /// One thread, made by the first run, that every later run continues.
        Reuse = "reuse",
    }
}

wire_enum! {
    /// What started a run.
    pub enum JobTrigger ("trigger") {
        /// Its time came.
        Schedule = "schedule",
        /// An operator asked (`run-now`).
        Manual = "manual",
        /// It was due while the gateway was down, and ran once at start (within the grace
        /// window).
        CatchUp = "catch-up",
        /// It was due while the gateway was down, too long ago to run: skipped.
        Missed = "missed",
        /// Its previous run was still going: skipped.
        Overlap = "overlap",
    }
}

/// `POST /api/environments/:id/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct CreateJob {
    /// A name to tell jobs apart [default: the goal's first line].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// A standard 5-field cron expression: minute, hour, day of month, month, day of week
    /// (`0 9 * * 1-5`: weekdays at 9:00).
    pub schedule: String,
    /// An IANA time zone the schedule is read in [default: `UTC`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub timezone: Option<String>,
    /// What each run asks (the message a thread gets).
    pub goal: String,
    /// The executor [default: the environment's, else `llm` where the node offers it].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub executor: Option<String>,
    /// `new` (default) or `reuse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub thread: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

/// `PATCH /api/jobs/:id`: the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct UpdateJob {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub goal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub executor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub thread: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
}

/// A job's last run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct JobRunView {
    pub at: String,
    pub trigger: JobTrigger,
    /// The task it started (none when it was skipped or could not start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub thread_id: Option<String>,
    /// The task's state now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub state: Option<TaskState>,
    /// Why it did not start, or why its task failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(optional_fields))]
pub struct JobView {
    pub id: String,
    pub environment_id: String,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub goal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub executor: Option<ExecutorKind>,
    pub thread: JobThreadMode,
    /// The thread a `reuse` job continues, once its first run made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub thread_id: Option<String>,
    pub enabled: bool,
    /// When it runs next (none while disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_run: Option<JobRunView>,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct JobList {
    pub jobs: Vec<JobView>,
}
