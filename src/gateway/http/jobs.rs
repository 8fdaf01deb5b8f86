//! `/api/environments/:id/jobs` and `/api/jobs*`: scheduled jobs (a goal an environment runs
//! on a cron schedule), and running one now. The scheduler itself is `gateway::jobs`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::environments::load_env;
use super::openapi::Errors;
use super::tasks::{check_text, parse_executor};
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::error::{ApiError, ApiResult, Body, Path, Query};
use crate::gateway::jobs::{self, Schedule};
use crate::gateway::App;
use crate::protocol::api::{
    CreateJob, ErrorBody, JobList, JobRunView, JobThreadMode, JobTrigger, JobView, UpdateJob,
};
use crate::store::{JobRecord, JobRun};

/// Jobs one environment may have.
const JOBS_PER_ENVIRONMENT: usize = 100;

fn run_view(r: &JobRun) -> JobRunView {
    JobRunView {
        at: iso8601(r.at),
        trigger: r.trigger,
        task_id: r.task_id.clone(),
        thread_id: r.thread_id.clone(),
        state: r.task.as_ref().map(|(s, _)| *s),
        error: r
            .error
            .clone()
            .or_else(|| r.task.as_ref().and_then(|(_, e)| e.clone())),
    }
}

fn job_view(j: &JobRecord) -> JobView {
    JobView {
        id: j.id.clone(),
        environment_id: j.environment_id.clone(),
        name: j.name.clone(),
        schedule: j.schedule.clone(),
        timezone: j.timezone.clone(),
        goal: j.goal.clone(),
        executor: j.executor,
        thread: j.thread_mode,
        thread_id: j.thread_id.clone(),
        enabled: j.enabled,
        next_run_at: j.next_run_at.filter(|_| j.enabled).map(iso8601),
        last_run: j.last_run.as_ref().map(run_view),
        created_at: iso8601(j.created_at),
    }
}

async fn load(app: &App, id: &str) -> ApiResult<JobRecord> {
    app.store
        .job(id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
}

/// Checks a job's fields and sets its next run from now.
fn settle(app: &App, job: &mut JobRecord) -> ApiResult<()> {
    if job.name.trim().is_empty() || job.name.len() > 200 {
        return Err(ApiError::validation("name must be 1 to 200 characters"));
    }
    check_text("goal", &job.goal)?;
    let schedule = Schedule::parse(&job.schedule, &job.timezone).map_err(ApiError::validation)?;
    job.next_run_at = schedule
        .next_after(app.jobs_clock.now())
        .filter(|_| job.enabled);
    Ok(())
}

/// A job's default name: the goal's first line, cut near 60 characters.
fn name_from(goal: &str) -> String {
    let line = goal
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("job");
    line.chars().take(60).collect()
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct JobsQuery {
    /// Only this environment's jobs (id or name).
    environment_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/jobs",
    operation_id = "listJobs",
    tag = "jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "Scheduled jobs, oldest first", body = JobList),
        (status = 404, description = "No such environment", body = ErrorBody),
        Errors,
    )
)]
pub async fn list(State(app): State<App>, Query(q): Query<JobsQuery>) -> ApiResult<Json<JobList>> {
    let env = match q.environment_id {
        Some(id) => Some(load_env(&app, &id).await?.id),
        None => None,
    };
    let jobs = app.store.list_jobs(env).await?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(job_view).collect(),
    }))
}

#[utoipa::path(
    get,
    path = "/environments/{id}/jobs",
    operation_id = "listEnvironmentJobs",
    tag = "jobs",
    params(("id" = String, Path, description = "Environment id or name")),
    responses(
        (status = 200, description = "The environment's jobs, oldest first", body = JobList),
        (status = 404, description = "No such environment", body = ErrorBody),
        Errors,
    )
)]
pub async fn list_of_environment(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobList>> {
    list(
        State(app),
        Query(JobsQuery {
            environment_id: Some(id),
        }),
    )
    .await
}

#[utoipa::path(
    post,
    path = "/environments/{id}/jobs",
    operation_id = "createJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Environment id or name")),
    request_body = CreateJob,
    responses(
        (status = 201, description = "Created; it runs at `nextRunAt`", body = JobView),
        (status = 404, description = "No such environment", body = ErrorBody),
        (status = 422, description = "Bad schedule, time zone, executor or thread mode", body = ErrorBody),
        Errors,
    )
)]
pub async fn create(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<CreateJob>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let env = load_env(&app, &id).await?;
    if app.store.list_jobs(Some(env.id.clone())).await?.len() >= JOBS_PER_ENVIRONMENT {
        return Err(ApiError::conflict(format!(
            "the environment already has {JOBS_PER_ENVIRONMENT} jobs"
        )));
    }
    let now = now_ms();
    let mut job = JobRecord {
        id: crypto::new_id("job"),
        environment_id: env.id,
        name: req
            .name
            .map(|n| n.trim().to_string())
            .unwrap_or_else(|| name_from(&req.goal)),
        schedule: req.schedule.trim().to_string(),
        timezone: req
            .timezone
            .unwrap_or_else(|| "UTC".into())
            .trim()
            .to_string(),
        goal: req.goal,
        executor: req.executor.as_deref().map(parse_executor).transpose()?,
        thread_mode: match req.thread.as_deref() {
            None => JobThreadMode::New,
            Some(m) => m.parse()?,
        },
        thread_id: None,
        enabled: req.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
        next_run_at: None,
        last_run: None,
    };
    settle(&app, &mut job)?;
    app.store.insert_job(job.clone()).await?;
    jobs::changed(&app, &job);
    Ok((StatusCode::CREATED, Json(job_view(&job))))
}

#[utoipa::path(
    get,
    path = "/jobs/{id}",
    operation_id = "getJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job, its next run and its last run", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        Errors,
    )
)]
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    Ok(Json(job_view(&load(&app, &id).await?)))
}

#[utoipa::path(
    patch,
    path = "/jobs/{id}",
    operation_id = "updateJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    request_body = UpdateJob,
    responses(
        (status = 200, description = "Updated; its next run is computed again", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "Bad schedule, time zone, executor or thread mode", body = ErrorBody),
        Errors,
    )
)]
pub async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    Body(req): Body<UpdateJob>,
) -> ApiResult<Json<JobView>> {
    let mut job = load(&app, &id).await?;
    if let Some(n) = req.name {
        job.name = n.trim().to_string();
    }
    if let Some(s) = req.schedule {
        job.schedule = s.trim().to_string();
    }
    if let Some(tz) = req.timezone {
        job.timezone = tz.trim().to_string();
    }
    if let Some(g) = req.goal {
        job.goal = g;
    }
    if let Some(e) = req.executor {
        job.executor = Some(parse_executor(&e)?);
    }
    if let Some(m) = req.thread {
        job.thread_mode = m.parse()?;
    }
    if let Some(on) = req.enabled {
        job.enabled = on;
    }
    job.updated_at = now_ms();
    settle(&app, &mut job)?;
    app.store.update_job(job.clone()).await?;
    jobs::changed(&app, &job);
    Ok(Json(job_view(&load(&app, &id).await?)))
}

#[utoipa::path(
    delete,
    path = "/jobs/{id}",
    operation_id = "deleteJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 204, description = "Deleted (its threads and tasks stay)"),
        (status = 404, description = "No such job", body = ErrorBody),
        Errors,
    )
)]
pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let job = load(&app, &id).await?;
    app.store.delete_job(id).await?;
    jobs::changed(&app, &job);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/jobs/{id}/run",
    operation_id = "runJob",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 201, description = "Started: the thread and task of this run (the schedule is unchanged)", body = JobRunView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "Its previous run still goes, or it could not start (the environment is not bound, ...)", body = ErrorBody),
        Errors,
    )
)]
pub async fn run_now(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<JobRunView>)> {
    let job = load(&app, &id).await?;
    let run = jobs::run(
        &app,
        &job,
        JobTrigger::Manual,
        app.jobs_clock.now(),
        job.next_run_at,
    )
    .await?;
    if let Some(error) = &run.error {
        return Err(ApiError::conflict(format!(
            "the job did not start: {error}"
        )));
    }
    Ok((StatusCode::CREATED, Json(run_view(&run))))
}
