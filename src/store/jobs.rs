//! Scheduled jobs and their last run.

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};
use crate::protocol::api::{JobThreadMode, JobTrigger};
use crate::protocol::{ExecutorKind, TaskState};

#[derive(Debug, Clone)]
pub struct JobRecord {
    pub id: String,
    pub environment_id: String,
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub goal: String,
    pub executor: Option<ExecutorKind>,
    pub thread_mode: JobThreadMode,
    /// The thread a `reuse` job continues.
    pub thread_id: Option<String>,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub next_run_at: Option<i64>,
    pub last_run: Option<JobRun>,
}

/// What a job's last run did.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub at: i64,
    pub trigger: JobTrigger,
    pub task_id: Option<String>,
    pub thread_id: Option<String>,
    pub error: Option<String>,
    /// The task's state and error now (read-only; filled by SELECTs).
    pub task: Option<(TaskState, Option<String>)>,
}

const COLUMNS: &str = "j.id, j.environment_id, j.name, j.schedule, j.timezone, j.goal, \
     j.executor, j.thread_mode, j.thread_id, j.enabled, j.created_at, j.updated_at, \
     j.next_run_at, j.last_run_at, j.last_trigger, j.last_task_id, j.last_thread_id, \
     j.last_error, t.state, t.error";

const FROM: &str = "jobs j LEFT JOIN tasks t ON t.id = j.last_task_id";

fn from_row(r: &Row) -> rusqlite::Result<JobRecord> {
    let last_at: Option<i64> = r.get(13)?;
    let last_trigger: Option<JobTrigger> = r.get(14)?;
    let state: Option<TaskState> = r.get(18)?;
    Ok(JobRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        name: r.get(2)?,
        schedule: r.get(3)?,
        timezone: r.get(4)?,
        goal: r.get(5)?,
        executor: r.get(6)?,
        thread_mode: r.get(7)?,
        thread_id: r.get(8)?,
        enabled: r.get(9)?,
        created_at: r.get(10)?,
        updated_at: r.get(11)?,
        next_run_at: r.get(12)?,
        last_run: match (last_at, last_trigger) {
            (Some(at), Some(trigger)) => Some(JobRun {
                at,
                trigger,
                task_id: r.get(15)?,
                thread_id: r.get(16)?,
                error: r.get(17)?,
                task: state
                    .map(|s| Ok::<_, rusqlite::Error>((s, r.get(19)?)))
                    .transpose()?,
            }),
            _ => None,
        },
    })
}

impl Store {
    pub async fn insert_job(&self, j: JobRecord) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "INSERT INTO jobs (id, environment_id, name, schedule, timezone, goal, executor,
                                   thread_mode, thread_id, enabled, created_at, updated_at,
                                   next_run_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    j.id,
                    j.environment_id,
                    j.name,
                    j.schedule,
                    j.timezone,
                    j.goal,
                    j.executor,
                    j.thread_mode,
                    j.thread_id,
                    j.enabled,
                    j.created_at,
                    j.updated_at,
                    j.next_run_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Saves what an operator can change (not the last run).
    pub async fn update_job(&self, j: JobRecord) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE jobs SET name = ?2, schedule = ?3, timezone = ?4, goal = ?5,
                        executor = ?6, thread_mode = ?7, thread_id = ?8, enabled = ?9,
                        updated_at = ?10, next_run_at = ?11
                 WHERE id = ?1",
                params![
                    j.id,
                    j.name,
                    j.schedule,
                    j.timezone,
                    j.goal,
                    j.executor,
                    j.thread_mode,
                    j.thread_id,
                    j.enabled,
                    j.updated_at,
                    j.next_run_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn job(&self, id: String) -> anyhow::Result<Option<JobRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {COLUMNS} FROM {FROM} WHERE j.id = ?1"),
                [id],
                from_row,
            )
            .optional()
        })
        .await
    }

    /// Jobs of one environment, or of all; oldest first.
    pub async fn list_jobs(
        &self,
        environment_id: Option<String>,
    ) -> anyhow::Result<Vec<JobRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {FROM}
                 WHERE ?1 IS NULL OR j.environment_id = ?1
                 ORDER BY j.created_at, j.id"
            ))?;
            let rows = st.query_map([environment_id], from_row)?;
            rows.collect()
        })
        .await
    }

    /// Enabled jobs whose time has come, soonest first.
    pub async fn due_jobs(&self, now: i64) -> anyhow::Result<Vec<JobRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {FROM}
                 WHERE j.enabled = 1 AND j.next_run_at <= ?1
                 ORDER BY j.next_run_at, j.id LIMIT 100"
            ))?;
            let rows = st.query_map([now], from_row)?;
            rows.collect()
        })
        .await
    }

    /// When the next enabled job is due (epoch ms), if any.
    pub async fn next_job_at(&self) -> anyhow::Result<Option<i64>> {
        self.read(|c| {
            c.row(
                "SELECT min(next_run_at) FROM jobs WHERE enabled = 1",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Records a run (or a skipped one) and when the job runs next. A `reuse` job keeps the
    /// thread the run went to.
    pub async fn record_job_run(
        &self,
        id: String,
        run: JobRun,
        next_run_at: Option<i64>,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE jobs SET last_run_at = ?2, last_trigger = ?3, last_task_id = ?4,
                        last_thread_id = ?5, last_error = ?6, next_run_at = ?7,
                        thread_id = CASE WHEN thread_mode = 'reuse' THEN coalesce(?5, thread_id)
                                         ELSE thread_id END
                 WHERE id = ?1",
                params![
                    id,
                    run.at,
                    run.trigger,
                    run.task_id,
                    run.thread_id,
                    run.error,
                    next_run_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Moves a job's next run without recording one (a missed run that is not caught up).
    pub async fn set_job_next_run(
        &self,
        id: String,
        next_run_at: Option<i64>,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "UPDATE jobs SET next_run_at = ?2 WHERE id = ?1",
                params![id, next_run_at],
            )?;
            Ok(())
        })
        .await
    }

    /// Deletes a job; false when there was none.
    pub async fn delete_job(&self, id: String) -> anyhow::Result<bool> {
        self.write(move |c| Ok(c.exec("DELETE FROM jobs WHERE id = ?1", [id])? == 1))
            .await
    }
}
