//! `viber job add|list|rm|run-now|enable|disable`: scheduled jobs.

use super::{or_dash, print_table, seg, Client};
use crate::protocol::api::{CreateJob, JobList, JobRunView, JobView, UpdateJob};

/// What `viber job add` sends.
pub struct NewJob {
    pub env: String,
    pub schedule: String,
    pub timezone: String,
    pub name: Option<String>,
    pub executor: Option<String>,
    pub reuse_thread: bool,
    pub disabled: bool,
    pub goal: String,
}

pub async fn add(client: &Client, j: NewJob) -> anyhow::Result<()> {
    let body = CreateJob {
        name: j.name,
        schedule: j.schedule,
        timezone: Some(j.timezone),
        goal: j.goal,
        executor: j.executor,
        thread: Some(if j.reuse_thread { "reuse" } else { "new" }.into()),
        enabled: Some(!j.disabled),
    };
    let v: JobView = client
        .post(&format!("/api/environments/{}/jobs", seg(&j.env)), &body)
        .await?;
    match &v.next_run_at {
        Some(next) => println!("job {} ({:?}) runs next at {next}", v.id, v.name),
        None => println!("job {} ({:?}) is disabled", v.id, v.name),
    }
    Ok(())
}

pub async fn list(client: &Client, env: Option<&str>, as_json: bool) -> anyhow::Result<()> {
    let path = match env {
        Some(e) => format!("/api/jobs?environmentId={}", seg(e)),
        None => "/api/jobs".to_string(),
    };
    let v: JobList = client.get(&path).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if v.jobs.is_empty() {
        println!("no jobs; add one with `viber job add ENV GOAL --schedule \"0 9 * * 1-5\"`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .jobs
        .iter()
        .map(|j| {
            let last = j.last_run.as_ref().map(|r| {
                let outcome = match (&r.state, &r.error) {
                    (Some(s), _) => s.to_string(),
                    (None, Some(e)) => format!("{}: {e}", r.trigger),
                    (None, None) => r.trigger.to_string(),
                };
                format!("{} {outcome}", r.at)
            });
            vec![
                j.id.clone(),
                j.name.clone(),
                format!("{} {}", j.schedule, j.timezone),
                j.thread.to_string(),
                if j.enabled { "on" } else { "off" }.to_string(),
                or_dash(j.next_run_at.as_deref()),
                or_dash(last),
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "NAME", "SCHEDULE", "THREAD", "ENABLED", "NEXT RUN", "LAST RUN",
        ],
        &rows,
    );
    Ok(())
}

pub async fn remove(client: &Client, id: &str) -> anyhow::Result<()> {
    client.delete(&format!("/api/jobs/{}", seg(id))).await?;
    println!("deleted {id}");
    Ok(())
}

pub async fn run_now(client: &Client, id: &str) -> anyhow::Result<()> {
    let r: JobRunView = client
        .post_empty(&format!("/api/jobs/{}/run", seg(id)))
        .await?;
    println!(
        "started task {} in thread {}",
        or_dash(r.task_id.as_deref()),
        or_dash(r.thread_id.as_deref())
    );
    Ok(())
}

pub async fn set_enabled(client: &Client, id: &str, enabled: bool) -> anyhow::Result<()> {
    let body = UpdateJob {
        enabled: Some(enabled),
        ..UpdateJob::default()
    };
    let v: JobView = client
        .patch(&format!("/api/jobs/{}", seg(id)), &body)
        .await?;
    match &v.next_run_at {
        Some(next) => println!("{} is on; it runs next at {next}", v.id),
        None => println!("{} is off", v.id),
    }
    Ok(())
}
