//! Scheduled jobs: a job with a cron schedule runs on its own (the scheduler's clock runs 60
//! times faster here, so "every minute" is about every second), into a new thread each time
//! or one reused thread; run-now, on/off, bad input and the CLI.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

/// A gateway whose job clock runs 60x, a node, and a manual environment bound to it.
async fn setup(gdir: &TempDir, ndir: &TempDir) -> (Gateway, Proc, String) {
    let gw = Gateway::start(
        gdir.path(),
        0,
        &["--jobs-clock-scale", "60", "--jobs-tick-ms", "100"],
    );
    let token = gw.enroll("j").await;
    let node = start_node(&gw.url, Some(&token), ndir.path(), "j");
    gw.wait_node_status("j", "online", T).await;
    let node_id = gw.nodes().await[0]["id"].clone();
    let (env, _) = gw
        .env_bound(json!({"name": "sched", "type": "manual"}), &node_id)
        .await;
    let env_id = env["id"].as_str().unwrap().to_string();
    (gw, node, env_id)
}

async fn job(gw: &Gateway, id: &str) -> Value {
    let (code, v) = gw.get(&format!("/api/jobs/{id}")).await;
    assert_eq!(code, 200, "{v}");
    v
}

/// Waits until the job's last run satisfies `f`.
async fn wait_run(gw: &Gateway, id: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let j = job(gw, id).await;
        if f(&j["lastRun"]) {
            return j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {id}: {what}: {j}\n{}",
            gw.proc.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_on_its_schedule_into_new_or_reused_threads() {
    let (gdir, ndir) = (TempDir::new("jobs-gw"), TempDir::new("jobs-node"));
    let (gw, _node, env_id) = setup(&gdir, &ndir).await;
    let jobs = format!("/api/environments/{env_id}/jobs");

    // Bad input is refused with what is wrong.
    for (body, needle) in [
        (json!({"schedule": "* * * *", "goal": "x"}), "5 fields"),
        (json!({"schedule": "61 * * * *", "goal": "x"}), "61"),
        (
            json!({"schedule": "* * * * *", "timezone": "Mars/Olympus", "goal": "x"}),
            "Mars/Olympus",
        ),
        (json!({"schedule": "* * * * *", "goal": " "}), "goal"),
        (
            json!({"schedule": "* * * * *", "goal": "x", "executor": "nope"}),
            "executor",
        ),
        (
            json!({"schedule": "* * * * *", "goal": "x", "thread": "some"}),
            "some",
        ),
    ] {
        let (code, v) = gw.post(&jobs, body.clone()).await;
        assert_eq!(code, 422, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let (code, _) = gw
        .post(
            "/api/environments/nope/jobs",
            json!({"schedule": "* * * * *", "goal": "x"}),
        )
        .await;
    assert_eq!(code, 404);

    // Every minute, a new thread each time: it runs on its own, twice, in two threads.
    let (code, every) = gw
        .post(
            &jobs,
            json!({"name": "tick", "schedule": "* * * * *", "timezone": "Europe/Paris",
                   "goal": "echo scheduled-$((6*7))", "executor": "shell"}),
        )
        .await;
    assert_eq!(code, 201, "{every}");
    let id = every["id"].as_str().unwrap().to_string();
    assert!(every["nextRunAt"].is_string(), "{every}");
    assert_eq!(every["thread"], "new");
    let first = wait_run(&gw, &id, "a completed scheduled run", |r| {
        r["state"] == "completed" && r["trigger"] == "schedule"
    })
    .await;
    let task = first["lastRun"]["taskId"].as_str().unwrap().to_string();
    let (_, text) = gw.finished(&task).await;
    assert!(text.contains("scheduled-42"), "{text}");
    let first_thread = first["lastRun"]["threadId"].as_str().unwrap().to_string();
    let (_, thread) = gw.get(&format!("/api/threads/{first_thread}")).await;
    assert_eq!(thread["title"], "tick");
    let second = wait_run(&gw, &id, "a second run", |r| {
        r["taskId"].as_str().is_some_and(|t| t != task) && r["state"] == "completed"
    })
    .await;
    assert_ne!(second["lastRun"]["threadId"], first_thread.as_str());

    // Off: it stops running and has no next run; the CLI lists it as off.
    let (code, off) = gw
        .request(
            reqwest::Method::PATCH,
            &format!("/api/jobs/{id}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(code, 200, "{off}");
    assert!(off.get("nextRunAt").is_none(), "{off}");
    let listed = gw.cli(&["job", "list", "--env", "sched"]);
    assert!(listed.contains(&id) && listed.contains("off"), "{listed}");

    // One reused thread, added from the CLI and run now: both runs go to the same thread.
    let out = gw.cli(&[
        "job",
        "add",
        "sched",
        "echo reused",
        "--schedule",
        "0 3 1 1 *",
        "--name",
        "yearly",
        "--executor",
        "shell",
        "--reuse-thread",
    ]);
    assert!(out.contains("runs next at"), "{out}");
    let (_, all) = gw.get(&jobs).await;
    let reused = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "yearly")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = gw.cli(&["job", "run-now", &reused]);
    assert!(out.contains("started task"), "{out}");
    let one = wait_run(&gw, &reused, "the first manual run", |r| {
        r["state"] == "completed" && r["trigger"] == "manual"
    })
    .await;
    let thread = one["lastRun"]["threadId"].clone();
    assert_eq!(one["threadId"], thread);
    let (code, run) = gw.post(&format!("/api/jobs/{reused}/run"), json!({})).await;
    assert_eq!(code, 201, "{run}");
    assert_eq!(run["threadId"], thread);
    let (_, messages) = gw
        .get(&format!(
            "/api/threads/{}/messages",
            thread.as_str().unwrap()
        ))
        .await;
    assert_eq!(
        messages["messages"].as_array().unwrap().len(),
        2,
        "{messages}"
    );

    // Deleting a job keeps its threads.
    gw.cli(&["job", "rm", &reused]);
    let (code, _) = gw.get(&format!("/api/jobs/{reused}")).await;
    assert_eq!(code, 404);
    let (code, _) = gw
        .get(&format!("/api/threads/{}", thread.as_str().unwrap()))
        .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_cannot_start_says_why_and_a_running_one_is_not_doubled() {
    let (gdir, ndir) = (TempDir::new("jobs2-gw"), TempDir::new("jobs2-node"));
    let (gw, _node, env_id) = setup(&gdir, &ndir).await;
    // An environment bound nowhere: the run is recorded with the reason.
    let (code, lone) = gw
        .post(
            "/api/environments",
            json!({"name": "unbound", "type": "manual"}),
        )
        .await;
    assert_eq!(code, 201, "{lone}");
    let (code, j) = gw
        .post(
            "/api/environments/unbound/jobs",
            json!({"schedule": "0 0 1 1 *", "goal": "echo x", "executor": "shell"}),
        )
        .await;
    assert_eq!(code, 201, "{j}");
    let (code, v) = gw
        .post(
            &format!("/api/jobs/{}/run", j["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not mapped"),
        "{v}"
    );
    let j = job(&gw, j["id"].as_str().unwrap()).await;
    assert!(
        j["lastRun"]["error"]
            .as_str()
            .unwrap()
            .contains("not mapped"),
        "{j}"
    );
    // A run that cannot start leaves no empty thread behind.
    let (_, threads) = gw.get("/api/threads?environmentId=unbound").await;
    assert_eq!(threads["threads"].as_array().unwrap().len(), 0, "{threads}");

    // A long run on an every-minute schedule: later ticks skip instead of piling up, and
    // run-now is refused while it goes.
    let (code, slow) = gw
        .post(
            &format!("/api/environments/{env_id}/jobs"),
            json!({"schedule": "* * * * *", "goal": "sleep 30", "executor": "shell"}),
        )
        .await;
    assert_eq!(code, 201, "{slow}");
    let id = slow["id"].as_str().unwrap().to_string();
    let running = wait_run(&gw, &id, "a running task", |r| r["state"] == "running").await;
    let task = running["lastRun"]["taskId"].clone();
    let skipped = wait_run(&gw, &id, "a skipped tick", |r| r["trigger"] == "overlap").await;
    let last = &skipped["lastRun"];
    assert!(
        last["error"].as_str().unwrap().contains("still going"),
        "{last}"
    );
    assert_eq!(last["taskId"], task, "{last}");
    assert_eq!(last["state"], "running", "{last}");
    let (code, v) = gw.post(&format!("/api/jobs/{id}/run"), json!({})).await;
    assert_eq!(code, 409, "{v}");
    let (code, _) = gw
        .post(
            &format!("/api/tasks/{}/stop", task.as_str().unwrap()),
            json!({}),
        )
        .await;
    assert_eq!(code, 202);
    let (_, tasks) = gw.get("/api/tasks").await;
    let of_env = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["goal"] == "sleep 30")
        .count();
    assert_eq!(of_env, 1, "{tasks}");
}

/// A run that fell due while the gateway was down runs once at start within the grace
/// window, and is recorded as missed past it. The downtime is made by moving the jobs'
/// next runs back in the stopped gateway's database.
#[tokio::test(flavor = "multi_thread")]
async fn runs_missed_while_the_gateway_was_down_are_caught_up_within_the_grace_window() {
    let gdir = TempDir::new("jobs3-gw");
    let port = free_port();
    let mut gw = Gateway::start(gdir.path(), port, &[]);
    let (code, env) = gw
        .post(
            "/api/environments",
            json!({"name": "later", "type": "manual"}),
        )
        .await;
    assert_eq!(code, 201, "{env}");
    let mut ids = Vec::new();
    for name in ["recent", "ancient"] {
        let (code, j) = gw
            .post(
                "/api/environments/later/jobs",
                json!({"name": name, "schedule": "0 4 * * *", "goal": "echo caught-up",
                       "executor": "shell"}),
            )
            .await;
        assert_eq!(code, 201, "{j}");
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    assert!(gw.proc.terminate().success(), "{}", gw.proc.logs());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let db = rusqlite::Connection::open(gdir.join("viber.db")).unwrap();
    for (id, ago_ms) in [(&ids[0], 10 * 60_000), (&ids[1], 3 * 3_600_000)] {
        db.execute(
            "UPDATE jobs SET next_run_at = ?2 WHERE id = ?1",
            rusqlite::params![id, now - ago_ms],
        )
        .unwrap();
    }
    drop(db);

    let gw = Gateway::start(gdir.path(), port, &["--jobs-grace-secs", "3600"]);
    let recent = wait_run(&gw, &ids[0], "a catch-up run", |r| {
        r["trigger"] == "catch-up"
    })
    .await;
    // It ran: the environment is bound nowhere, so it says why it could not start.
    assert!(
        recent["lastRun"]["error"]
            .as_str()
            .unwrap()
            .contains("not mapped"),
        "{recent}"
    );
    let ancient = wait_run(&gw, &ids[1], "a missed run", |r| r["trigger"] == "missed").await;
    assert!(ancient["lastRun"].get("taskId").is_none(), "{ancient}");
    // Both run next at their schedule's next time, not again now.
    for j in [&recent, &ancient] {
        let next = j["nextRunAt"].as_str().unwrap();
        assert!(next.ends_with(":00.000Z"), "{j}");
    }
}
