//! Scheduled jobs: the scheduler that runs each enabled job when its cron schedule says, and
//! a run itself (a thread gets the job's goal as a message, as if an operator sent it).
//!
//! Owns: reading a schedule ([`Schedule`]), the scheduler's clock ([`JobClock`]), when a job
//! runs next, what a run that was missed while the gateway was down does (it runs once at
//! start when it is at most `GatewayConfig::jobs_grace` late, else it is recorded as missed),
//! and skipping a run whose previous one still goes. Must not touch: SQL other than through
//! `store::Store`, and how a message becomes a task (that is the threads API's
//! `send_message`, shared with the REST handler).

use std::time::Duration;

use crate::clock::now_ms;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::http::{open_thread, send_message};
use crate::gateway::App;
use crate::protocol::api::{JobThreadMode, JobTrigger, SendMessage, SendOutcome, ThreadStatus};
use crate::protocol::events::Event;
use crate::protocol::TaskState;
use crate::store::{JobRecord, JobRun};

/// A cron schedule in a time zone.
pub struct Schedule(cronexpr::Crontab);

impl Schedule {
    /// Reads a standard 5-field cron expression (minute, hour, day of month, month, day of
    /// week) in the IANA time zone `timezone`; the error says what is wrong.
    pub fn parse(expression: &str, timezone: &str) -> Result<Schedule, String> {
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "schedule must have 5 fields (minute hour day-of-month month day-of-week), not {fields}: {expression:?}"
            ));
        }
        if timezone.split_whitespace().count() != 1 {
            return Err(format!("unknown time zone {timezone:?}"));
        }
        cronexpr::parse_crontab(&format!("{expression} {timezone}"))
            .map(Schedule)
            .map_err(|e| {
                // The crate's message points into the line it parsed; say it plainly.
                let e = e.to_string();
                let e = e
                    .lines()
                    .last()
                    .unwrap_or(&e)
                    .trim_start_matches('^')
                    .trim();
                format!("bad schedule {expression:?} in {timezone}: {e}")
            })
    }

    /// The first time after `after_ms` (epoch ms) the schedule fires, in epoch ms.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let from = cronexpr::MakeTimestamp::from_millisecond(after_ms).ok()?;
        let next = self.0.find_next(from).ok()?;
        Some(next.timestamp().as_millisecond())
    }
}

/// The scheduler's clock: real time, or (for tests, `--jobs-clock-scale`) time that runs
/// `scale` times faster from the gateway's start, so a schedule of minutes fires in seconds.
#[derive(Debug, Clone, Copy)]
pub struct JobClock {
    origin: i64,
    scale: u32,
}

impl JobClock {
    pub fn new(scale: u32) -> JobClock {
        JobClock {
            origin: now_ms(),
            scale: scale.max(1),
        }
    }

    pub fn now(&self) -> i64 {
        let real = now_ms();
        self.origin + (real - self.origin) * i64::from(self.scale)
    }

    /// Real time until the scheduler's clock reads `at` (epoch ms); zero when it is past.
    pub fn until(&self, at: i64) -> Duration {
        let ms = (at - self.now()).max(0) as u64 / u64::from(self.scale);
        Duration::from_millis(ms)
    }
}

/// When the enabled job `job` runs next after `after` (None while disabled, or when its
/// schedule never fires again).
pub fn next_run(job: &JobRecord, after: i64) -> Option<i64> {
    if !job.enabled {
        return None;
    }
    Schedule::parse(&job.schedule, &job.timezone)
        .ok()?
        .next_after(after)
}

/// Runs due jobs until shutdown: at start (catching up what the gateway missed), then when
/// the next one is due, when a job changes ([`JobClock::wake`]), and at least every
/// `GatewayConfig::jobs_tick`. An idle gateway with no jobs looks once a tick.
pub async fn scheduler(app: App) {
    let clock = app.jobs_clock;
    let tick = app.config.jobs_tick;
    // Late by more than this at start: it fell due while the gateway was down.
    let catch_up_ms = CATCH_UP_AFTER.as_millis() as i64 * i64::from(clock.scale);
    let grace_ms = app.config.jobs_grace.as_millis() as i64;
    let mut at_start = true;
    loop {
        let now = clock.now();
        match app.store.due_jobs(now).await {
            Ok(due) => {
                for job in due {
                    let late = now - job.next_run_at.unwrap_or(now);
                    let trigger = trigger_for(late, at_start, catch_up_ms, grace_ms);
                    let next = next_run(&job, now);
                    if let Err(e) = run(&app, &job, trigger, now, next).await {
                        tracing::error!(job = %job.id, error = %e.message, "recording a job run");
                    }
                }
            }
            Err(e) => tracing::error!(error = format!("{e:#}"), "reading due jobs"),
        }
        at_start = false;
        let wait = match app.store.next_job_at().await {
            Ok(Some(at)) => clock.until(at).clamp(MIN_WAIT, tick),
            Ok(None) => tick,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "reading the next job");
                tick
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = app.jobs_wake.notified() => {}
            _ = app.shutdown.cancelled() => return,
        }
    }
}

/// At start, a job more than this late (in the scheduler's time) fell due while the gateway
/// was down.
const CATCH_UP_AFTER: Duration = Duration::from_secs(5);
/// The shortest sleep between looks, so a clock that rounds down does not spin.
const MIN_WAIT: Duration = Duration::from_millis(10);

/// Why a job that is `late_ms` past its time runs now: on schedule (found by a tick), to
/// catch up (found at start, after the gateway was down over its time), or not at all (missed
/// by more than the grace window).
fn trigger_for(late_ms: i64, at_start: bool, catch_up_ms: i64, grace_ms: i64) -> JobTrigger {
    if late_ms > grace_ms {
        JobTrigger::Missed
    } else if at_start && late_ms > catch_up_ms {
        JobTrigger::CatchUp
    } else {
        JobTrigger::Schedule
    }
}

/// Runs `job` now (or records why not), then sets its next run to `next`. `Missed` only
/// records the miss. A scheduled run whose previous task still goes is skipped (`Overlap`);
/// an operator's (`Manual`) is refused with a 409 instead.
pub async fn run(
    app: &App,
    job: &JobRecord,
    trigger: JobTrigger,
    at: i64,
    next: Option<i64>,
) -> ApiResult<JobRun> {
    // One run decision at a time, on the job as stored now: a run-now and a scheduled run
    // at the same moment must not both see the previous run ended.
    let _one_at_a_time = app.jobs_running.lock().await;
    let job = &app
        .store
        .job(job.id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {:?}", job.id)))?;
    let still_going = job.last_run.as_ref().is_some_and(|r| {
        r.task
            .as_ref()
            .is_some_and(|(s, _)| matches!(s, TaskState::Pending | TaskState::Running))
    });
    let (trigger, outcome) = if trigger == JobTrigger::Missed {
        let why = "it was due while the gateway was down, longer ago than the grace window";
        (trigger, Err(why.to_string()))
    } else if still_going {
        if trigger == JobTrigger::Manual {
            return Err(ApiError::conflict(
                "the job's previous run is still going; stop it or wait",
            ));
        }
        let why = "its previous run was still going";
        (JobTrigger::Overlap, Err(why.to_string()))
    } else {
        (trigger, start(app, job).await.map_err(|e| e.message))
    };
    let run = match outcome {
        Ok((thread_id, task_id)) => JobRun {
            at,
            trigger,
            task_id: Some(task_id),
            thread_id: Some(thread_id),
            error: None,
            task: None,
        },
        Err(error) => {
            tracing::warn!(job = %job.id, ?trigger, %error, "job did not run");
            // A skipped run keeps pointing at the run that still goes, so the next tick
            // (and run-now) still sees it going.
            let going = job.last_run.as_ref().filter(|_| still_going);
            JobRun {
                at,
                trigger,
                task_id: going.and_then(|r| r.task_id.clone()),
                thread_id: going.and_then(|r| r.thread_id.clone()),
                error: Some(error),
                task: None,
            }
        }
    };
    app.store
        .record_job_run(job.id.clone(), run.clone(), next)
        .await?;
    changed(app, job);
    Ok(run)
}

/// Sends the job's goal to its thread; returns (thread, task).
async fn start(app: &App, job: &JobRecord) -> ApiResult<(String, String)> {
    // Refused before a thread is opened, so a job on an unbound environment does not leave
    // an empty thread per run.
    if app
        .store
        .bindings_of_environment(job.environment_id.clone())
        .await?
        .is_empty()
    {
        return Err(ApiError::conflict(
            "the environment is not mapped to any node; bind it first",
        ));
    }
    let reusable = match (&job.thread_mode, &job.thread_id) {
        (JobThreadMode::Reuse, Some(id)) => app
            .store
            .thread(id.clone())
            .await?
            .filter(|t| t.status != ThreadStatus::Archived),
        _ => None,
    };
    let thread = match reusable {
        Some(t) => t,
        None => open_thread(app, &job.environment_id, Some(job.name.clone())).await?,
    };
    let message = SendMessage {
        message: job.goal.clone(),
        injection_mode: None,
        executor: job.executor.map(|e| e.as_str().to_string()),
    };
    let (_, outcome) = send_message(app, thread.id.clone(), message).await?;
    let task_id = match outcome {
        SendOutcome::Started(view) => view.id,
        SendOutcome::FollowUp(f) => f.task_id,
    };
    tracing::info!(job = %job.id, thread = %thread.id, task = %task_id, "job ran");
    Ok((thread.id, task_id))
}

/// Tells the board that a job changed (created, edited, ran, deleted), and the scheduler
/// that its next time may have moved.
pub fn changed(app: &App, job: &JobRecord) {
    app.jobs_wake.notify_one();
    app.events.publish(Event::JobChanged {
        job_id: job.id.clone(),
        environment_id: job.environment_id.clone(),
    });
}

/// The longest the scheduler waits between looks at due jobs by default.
pub const DEFAULT_TICK: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<cronexpr::MakeTimestamp>()
            .unwrap()
            .0
            .as_millisecond()
    }

    #[test]
    fn a_run_missed_while_down_is_caught_up_only_within_the_grace_window() {
        let (tick, grace) = (5_000, 3_600_000);
        assert_eq!(trigger_for(300, false, tick, grace), JobTrigger::Schedule);
        assert_eq!(trigger_for(300, true, tick, grace), JobTrigger::Schedule);
        assert_eq!(trigger_for(600_000, true, tick, grace), JobTrigger::CatchUp);
        assert_eq!(
            trigger_for(3_600_001, true, tick, grace),
            JobTrigger::Missed
        );
        // A busy gateway that fell behind at run time still runs it, as scheduled.
        assert_eq!(
            trigger_for(600_000, false, tick, grace),
            JobTrigger::Schedule
        );
    }

    #[test]
    fn schedules_fire_in_their_time_zone_and_bad_ones_say_why() {
        let weekdays = Schedule::parse("0 9 * * 1-5", "Europe/Paris").unwrap();
        // Saturday 2026-11-28 12:00 UTC: next is Monday 09:00 in Paris (08:00 UTC).
        assert_eq!(
            weekdays.next_after(ms("2026-11-28T12:00:00Z")),
            Some(ms("2026-11-30T08:00:00Z"))
        );
        let every_minute = Schedule::parse("* * * * *", "UTC").unwrap();
        assert_eq!(
            every_minute.next_after(ms("2026-11-28T12:00:30Z")),
            Some(ms("2026-11-28T12:01:00Z"))
        );
        for (expr, tz) in [
            ("* * * *", "UTC"),
            ("61 * * * *", "UTC"),
            ("* * * * *", "Mars/Olympus"),
            ("* * * * *", "UTC UTC"),
        ] {
            let e = Schedule::parse(expr, tz).err().unwrap();
            assert!(e.contains(expr) || e.contains(tz), "{e}");
        }
    }
}
