//! `viber tui`: a keyboard-driven dashboard in the terminal (ratatui on crossterm) that
//! works over SSH in 80x24: environments and their threads, nodes and their health, a
//! thread's live output, approvals to answer, new threads and messages, and a terminal in a
//! thread's environment.
//!
//! - `app.rs`: the state and what each key does (no I/O);
//! - `view.rs`: drawing it;
//! - this file: the loop. Keys (from a thread that reads the terminal), the gateway's event
//!   stream, loads and a followed task stream all arrive as [`Msg`]s on one channel; the
//!   screen is drawn only when one of them changed it. Requests run in their own tasks, so
//!   the screen never waits on the network.

mod app;
mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEvent, KeyEventKind};
use reqwest::Method;
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use self::app::{Action, App, ThreadScreen};
use super::args::ShellArgs;
use super::tasks::{follow_stream_with, shown, Shown, SseParser};
use super::{seg, Client, ClientArgs};
use crate::protocol::api::{
    ApprovalAnswer, ApprovalAnswered, CreateThread, EnvironmentList, NodeList, PendingApproval,
    SendMessage, SendOutcome, TaskView, ThreadList, ThreadMessages, ThreadView,
};

enum Msg {
    Key(KeyEvent),
    Resized,
    /// The event stream is up (true) or down.
    Live(bool),
    /// Something changed on the gateway (`/api/events`): its type and data.
    Changed(String, Value),
    Snapshot(Result<Snapshot, String>),
    Thread {
        id: String,
        messages: Vec<crate::protocol::api::ThreadMessageView>,
        awaiting: Option<(String, PendingApproval)>,
    },
    Chunk(String, Shown),
    /// A request ended: a message for the status line, and a thread to open.
    Done(Result<(String, Option<String>), String>),
}

type Snapshot = (
    Vec<crate::protocol::api::EnvironmentView>,
    Vec<ThreadView>,
    Vec<crate::protocol::api::NodeView>,
);

pub async fn run(client_args: &ClientArgs) -> anyhow::Result<()> {
    let client = Client::new(client_args)?;
    // Fail before taking over the terminal when the gateway cannot be reached.
    let first = load(&client).await?;
    let mut app = App::new(client.base());
    app.apply_snapshot(first.0, first.1, first.2);

    let (tx, mut rx) = unbounded_channel();
    let reading = Arc::new(AtomicBool::new(true));
    spawn_keys(tx.clone(), reading.clone());
    let events = tokio::spawn(follow_events(client.clone(), tx.clone()));
    let mut d = Driver {
        client,
        client_args: client_args.clone(),
        tx,
        reading,
        stream: None,
        term: ratatui::try_init()?,
    };
    let mut dirty = true;
    let result: anyhow::Result<()> = async {
        loop {
            if dirty {
                d.term.draw(|f| view::draw(f, &app))?;
                dirty = false;
            }
            let Some(msg) = rx.recv().await else {
                return Ok(());
            };
            // Everything that arrived meanwhile, then one draw.
            let mut batch = vec![msg];
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            for msg in batch {
                let (action, changed) = d.handle(&mut app, msg);
                dirty |= changed;
                match action {
                    None => {}
                    Some(Action::Quit) => return Ok(()),
                    Some(Action::Terminal { env, thread }) => {
                        d.terminal(&mut app, env, thread).await?;
                        dirty = true;
                    }
                    Some(other) => d.act(&mut app, other),
                }
            }
        }
    }
    .await;
    ratatui::restore();
    events.abort();
    if let Some(s) = d.stream {
        s.abort();
    }
    result
}

/// What the loop keeps besides the state: the gateway, the channel everything answers on,
/// the task stream it follows, and the terminal.
struct Driver {
    client: Client,
    client_args: ClientArgs,
    tx: UnboundedSender<Msg>,
    /// Cleared while a terminal session has the keyboard.
    reading: Arc<AtomicBool>,
    stream: Option<tokio::task::JoinHandle<()>>,
    term: ratatui::DefaultTerminal,
}

impl Driver {
    /// Applies one message; returns what to do next and whether the screen changed.
    fn handle(&mut self, app: &mut App, msg: Msg) -> (Option<Action>, bool) {
        match msg {
            Msg::Key(k) => app.key(k),
            Msg::Resized => (None, true),
            Msg::Live(up) => {
                let changed = app.live != up;
                app.live = up;
                (up.then_some(Action::Reload), changed)
            }
            Msg::Changed(kind, data) => {
                on_change(app, &kind, &data);
                (Some(Action::Reload), true)
            }
            Msg::Snapshot(Ok((envs, threads, nodes))) => {
                app.apply_snapshot(envs, threads, nodes);
                (None, true)
            }
            Msg::Snapshot(Err(e)) | Msg::Done(Err(e)) => {
                app.status = e;
                (None, true)
            }
            Msg::Done(Ok((status, open))) => {
                app.status = status;
                (open.map(Action::OpenThread), true)
            }
            Msg::Thread {
                id,
                messages,
                awaiting,
            } => {
                app.apply_thread(&id, messages, awaiting);
                if let Some(task) = app.task_to_follow() {
                    app.start_following(&task);
                    self.stop_following();
                    let (c, t) = (self.client.clone(), self.tx.clone());
                    self.stream = Some(tokio::spawn(follow(c, task, t)));
                }
                (None, true)
            }
            Msg::Chunk(task, s) => {
                app.apply_chunk(&task, s);
                (None, true)
            }
        }
    }

    fn stop_following(&mut self) {
        if let Some(s) = self.stream.take() {
            s.abort();
        }
    }

    /// Leaves the screen for the thread's terminal (`viber shell`), and comes back.
    async fn terminal(&mut self, app: &mut App, env: String, thread: String) -> anyhow::Result<()> {
        self.reading.store(false, Ordering::SeqCst);
        // The key reader polls every 50 ms; let it see the pause.
        tokio::time::sleep(Duration::from_millis(120)).await;
        ratatui::restore();
        let args = ShellArgs {
            env,
            node: None,
            thread: Some(thread),
            new: false,
            size: None,
            command: Vec::new(),
            client: self.client_args.clone(),
        };
        let outcome = super::terminals::shell(&self.client, &args).await;
        self.term = ratatui::try_init()?;
        self.term.clear()?;
        self.reading.store(true, Ordering::SeqCst);
        app.status = match outcome {
            Ok(_) => "back from the terminal (it keeps running)".into(),
            Err(e) => format!("terminal: {e:#}"),
        };
        Ok(())
    }

    /// Starts the request an action needs; its answer comes back as a [`Msg`].
    fn act(&mut self, app: &mut App, action: Action) {
        if action == Action::CloseThread {
            app.thread = None;
            self.stop_following();
            return reload(&self.client, &self.tx, None);
        }
        act(&self.client, &self.tx, app, action);
    }
}

/// What an event says before the reload that follows it: which tasks wait for approval.
fn on_change(app: &mut App, kind: &str, data: &Value) {
    let task = data["taskId"].as_str().unwrap_or_default().to_string();
    match kind {
        "task.approval" => {
            app.awaiting_tasks.insert(task);
        }
        "task.state" => {
            app.awaiting_tasks.remove(&task);
        }
        _ => {}
    }
}

/// Starts the request an action needs; its answer comes back as a [`Msg`].
fn act(client: &Client, tx: &UnboundedSender<Msg>, app: &mut App, action: Action) {
    let (c, t) = (client.clone(), tx.clone());
    match action {
        Action::Reload => reload(client, tx, app.thread.as_ref().map(|t| t.id.clone())),
        Action::OpenThread(id) => {
            let title = app
                .threads
                .iter()
                .find(|x| x.id == id)
                .map(|x| x.title.clone())
                .unwrap_or_default();
            app.thread = Some(ThreadScreen {
                id: id.clone(),
                title,
                ..ThreadScreen::default()
            });
            reload(client, tx, Some(id));
        }
        Action::NewThread { env, message } => {
            tokio::spawn(async move {
                let r = async {
                    let body = CreateThread {
                        environment_id: env,
                        title: None,
                    };
                    let thread: ThreadView = c.post("/api/threads", &body).await?;
                    send(&c, &thread.id, message).await?;
                    Ok::<_, anyhow::Error>(("thread started".to_string(), Some(thread.id)))
                }
                .await;
                let _ = t.send(Msg::Done(r.map_err(|e| format!("{e:#}"))));
            });
        }
        Action::Send { thread, message } => {
            tokio::spawn(async move {
                let r = send(&c, &thread, message).await.map(|s| (s, None));
                let _ = t.send(Msg::Done(r.map_err(|e| format!("{e:#}"))));
            });
        }
        Action::Answer {
            task,
            approval,
            approve,
        } => {
            if let Some(th) = app.thread.as_mut() {
                th.awaiting = None;
            }
            app.awaiting_tasks.remove(&task);
            tokio::spawn(async move {
                let body = ApprovalAnswer {
                    approve,
                    reason: None,
                    scope: None,
                };
                let r: anyhow::Result<ApprovalAnswered> = c
                    .post(
                        &format!("/api/tasks/{}/approvals/{}", seg(&task), seg(&approval)),
                        &body,
                    )
                    .await;
                let r = r.map(|a| {
                    let what = if a.approved { "approved" } else { "denied" };
                    (format!("{what} {}", a.approval_id), None)
                });
                let _ = t.send(Msg::Done(r.map_err(|e| format!("{e:#}"))));
            });
        }
        // The driver handles these itself.
        Action::Quit | Action::CloseThread | Action::Terminal { .. } => {}
    }
}

async fn send(c: &Client, thread: &str, message: String) -> anyhow::Result<String> {
    let body = SendMessage {
        message,
        injection_mode: None,
        executor: None,
    };
    let out: SendOutcome = c
        .post(&format!("/api/threads/{}/messages", seg(thread)), &body)
        .await?;
    Ok(match out {
        SendOutcome::Started(t) => format!("started task {}", t.id),
        SendOutcome::FollowUp(f) => format!("sent to the running task {}", f.task_id),
    })
}

async fn load(c: &Client) -> anyhow::Result<Snapshot> {
    let (envs, threads, nodes) = tokio::try_join!(
        c.get::<EnvironmentList>("/api/environments"),
        c.get::<ThreadList>("/api/threads"),
        c.get::<NodeList>("/api/nodes"),
    )?;
    Ok((envs.environments, threads.threads, nodes.nodes))
}

/// Loads the lists, and the open thread (its conversation and a waiting approval).
fn reload(client: &Client, tx: &UnboundedSender<Msg>, thread: Option<String>) {
    let (c, t) = (client.clone(), tx.clone());
    tokio::spawn(async move {
        let _ = t.send(Msg::Snapshot(load(&c).await.map_err(|e| format!("{e:#}"))));
        let Some(id) = thread else { return };
        let r = async {
            let m: ThreadMessages = c
                .get(&format!("/api/threads/{}/messages", seg(&id)))
                .await?;
            let awaiting = match m.messages.last() {
                Some(last) => {
                    let task: TaskView =
                        c.get(&format!("/api/tasks/{}", seg(&last.task_id))).await?;
                    task.awaiting_approval.map(|a| (task.id, a))
                }
                None => None,
            };
            Ok::<_, anyhow::Error>((m.messages, awaiting))
        }
        .await;
        let _ = t.send(match r {
            Ok((messages, awaiting)) => Msg::Thread {
                id,
                messages,
                awaiting,
            },
            Err(e) => Msg::Done(Err(format!("{e:#}"))),
        });
    });
}

/// Follows a task's stream, sending what it shows.
async fn follow(c: Client, task: String, tx: UnboundedSender<Msg>) {
    let r = follow_stream_with(&c, &task, true, |chunk| {
        if let Some(s) = shown(chunk) {
            let _ = tx.send(Msg::Chunk(task.clone(), s));
        }
    })
    .await;
    if let Err(e) = r {
        let _ = tx.send(Msg::Done(Err(format!("stream: {e:#}"))));
    }
}

/// Follows `/api/events` for as long as the dashboard runs, reconnecting after a second.
async fn follow_events(c: Client, tx: UnboundedSender<Msg>) {
    loop {
        if let Ok(res) = c.request(Method::GET, "/api/events").send().await {
            if res.status().is_success() {
                let _ = tx.send(Msg::Live(true));
                let mut parser = SseParser::default();
                let mut body = res.bytes_stream();
                while let Some(Ok(bytes)) = body.next().await {
                    let Ok(events) = parser.push_bytes(&bytes) else {
                        break;
                    };
                    for ev in events {
                        let kind = ev.event.unwrap_or_default();
                        if kind == "ready" {
                            continue;
                        }
                        let data = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                        let _ = tx.send(Msg::Changed(kind, data));
                    }
                }
            }
        }
        let _ = tx.send(Msg::Live(false));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reads the terminal's keys on a thread of its own while `reading` is set (a terminal
/// session takes them otherwise).
fn spawn_keys(tx: UnboundedSender<Msg>, reading: Arc<AtomicBool>) {
    std::thread::spawn(move || loop {
        if !reading.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        match event::poll(Duration::from_millis(50)) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(_) => return,
        }
        let msg = match event::read() {
            Ok(TermEvent::Key(k)) if k.kind != KeyEventKind::Release => Msg::Key(k),
            Ok(TermEvent::Resize(..)) => Msg::Resized,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.send(msg).is_err() {
            return;
        }
    });
}
