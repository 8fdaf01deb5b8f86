//! The dashboard's state and what each key does. Nothing here draws or talks to the gateway:
//! keys become [`Action`]s that `tui/mod.rs` carries out, and what comes back is applied
//! with the `apply_*` methods, each saying whether the screen changed.

use std::collections::BTreeSet;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::cli::tasks::Shown;
use crate::protocol::api::{
    EnvironmentView, NodeView, PendingApproval, ThreadMessageView, ThreadView,
};
use crate::protocol::TaskState;

/// Bytes of a running task's output the thread view keeps (the end of it).
const LIVE_KEPT: usize = 256 * 1024;

/// Which list the arrow keys move in on the main screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Environments,
    Threads,
    Nodes,
}

/// What a line of typed text is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// The first message of a new thread in this environment.
    NewThread { env: String },
    /// A message to this thread.
    Message { thread: String },
}

#[derive(Debug, Clone)]
pub struct Input {
    pub purpose: Purpose,
    pub text: String,
}

/// An open thread.
#[derive(Debug, Clone, Default)]
pub struct ThreadScreen {
    pub id: String,
    pub title: String,
    pub messages: Vec<ThreadMessageView>,
    /// The task whose stream is followed, and what it showed so far.
    pub live_task: Option<String>,
    pub live: String,
    /// The thread's task waiting for an operator, and what it asks.
    pub awaiting: Option<(String, PendingApproval)>,
    /// Lines scrolled up from the end (0 follows the output).
    pub scroll_up: u16,
}

/// What the dashboard asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Quit,
    Reload,
    /// Open (and load) a thread.
    OpenThread(String),
    CloseThread,
    /// Create a thread in `env` and send it `message`.
    NewThread {
        env: String,
        message: String,
    },
    Send {
        thread: String,
        message: String,
    },
    Answer {
        task: String,
        approval: String,
        approve: bool,
    },
    /// Leave the screen for a terminal in the thread's environment.
    Terminal {
        env: String,
        thread: String,
    },
}

#[derive(Default)]
pub struct App {
    pub gateway: String,
    pub live: bool,
    pub envs: Vec<EnvironmentView>,
    pub threads: Vec<ThreadView>,
    pub nodes: Vec<NodeView>,
    /// Tasks known (from events and loads) to wait for an approval.
    pub awaiting_tasks: BTreeSet<String>,
    pub pane: Option<Pane>,
    pub env_sel: usize,
    pub thread_sel: usize,
    pub node_sel: usize,
    pub thread: Option<ThreadScreen>,
    pub input: Option<Input>,
    pub status: String,
}

impl App {
    pub fn new(gateway: &str) -> App {
        App {
            gateway: gateway.to_string(),
            pane: Some(Pane::Environments),
            status: "loading…".into(),
            ..App::default()
        }
    }

    pub fn pane(&self) -> Pane {
        self.pane.unwrap_or(Pane::Environments)
    }

    pub fn selected_env(&self) -> Option<&EnvironmentView> {
        self.envs.get(self.env_sel)
    }

    /// The selected environment's threads, newest first.
    pub fn env_threads(&self) -> Vec<&ThreadView> {
        let Some(env) = self.selected_env() else {
            return Vec::new();
        };
        let mut t: Vec<&ThreadView> = self
            .threads
            .iter()
            .filter(|t| t.environment_id == env.id)
            .collect();
        t.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
        t
    }

    /// Whether the thread's latest task waits for an approval.
    pub fn thread_awaits(&self, t: &ThreadView) -> bool {
        t.last_task_id
            .as_ref()
            .is_some_and(|id| self.awaiting_tasks.contains(id))
    }

    pub fn apply_snapshot(
        &mut self,
        envs: Vec<EnvironmentView>,
        threads: Vec<ThreadView>,
        nodes: Vec<NodeView>,
    ) {
        self.envs = envs;
        self.threads = threads;
        self.nodes = nodes;
        self.env_sel = self.env_sel.min(self.envs.len().saturating_sub(1));
        self.thread_sel = self
            .thread_sel
            .min(self.env_threads().len().saturating_sub(1));
        self.node_sel = self.node_sel.min(self.nodes.len().saturating_sub(1));
        if self.status == "loading…" {
            self.status.clear();
        }
    }

    /// A loaded thread: its conversation and what its running task waits for.
    pub fn apply_thread(
        &mut self,
        id: &str,
        messages: Vec<ThreadMessageView>,
        awaiting: Option<(String, PendingApproval)>,
    ) {
        let Some(t) = self.thread.as_mut().filter(|t| t.id == id) else {
            return;
        };
        // A finished task's output now comes with the conversation.
        if let Some(live) = &t.live_task {
            let ended = messages.iter().any(|m| {
                &m.task_id == live
                    && m.task.as_ref().is_some_and(|k| {
                        !matches!(k.state, TaskState::Pending | TaskState::Running)
                    })
            });
            if ended {
                t.live_task = None;
                t.live.clear();
            }
        }
        t.messages = messages;
        if let Some((task, _)) = &awaiting {
            self.awaiting_tasks.insert(task.clone());
        }
        t.awaiting = awaiting;
    }

    /// The running task of the open thread that is not followed yet, if any.
    pub fn task_to_follow(&self) -> Option<String> {
        let t = self.thread.as_ref()?;
        let last = t.messages.last()?;
        let running = last
            .task
            .as_ref()
            .is_some_and(|k| matches!(k.state, TaskState::Pending | TaskState::Running));
        (running && t.live_task.as_deref() != Some(&last.task_id)).then(|| last.task_id.clone())
    }

    pub fn start_following(&mut self, task: &str) {
        if let Some(t) = self.thread.as_mut() {
            t.live_task = Some(task.to_string());
            t.live.clear();
        }
    }

    pub fn apply_chunk(&mut self, task: &str, shown: Shown) {
        let Some(t) = self
            .thread
            .as_mut()
            .filter(|t| t.live_task.as_deref() == Some(task))
        else {
            return;
        };
        if t.live.len() > LIVE_KEPT {
            // Keep the end: what a person reads, and what redraws must wrap.
            let mut cut = t.live.len() - LIVE_KEPT / 2;
            while !t.live.is_char_boundary(cut) {
                cut += 1;
            }
            t.live.drain(..cut);
        }
        match shown {
            Shown::Text(s) => t.live.push_str(&s),
            Shown::Note(n) => {
                if !t.live.is_empty() && !t.live.ends_with('\n') {
                    t.live.push('\n');
                }
                t.live.push_str(&n);
                t.live.push('\n');
            }
        }
    }

    /// A key; returns what to do (if anything) and whether the screen changed.
    pub fn key(&mut self, k: KeyEvent) -> (Option<Action>, bool) {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return (Some(Action::Quit), false);
        }
        if self.input.is_some() {
            return (self.input_key(k), true);
        }
        if self.thread.is_some() {
            return self.thread_key(k);
        }
        self.main_key(k)
    }

    fn input_key(&mut self, k: KeyEvent) -> Option<Action> {
        let input = self.input.as_mut()?;
        match k.code {
            KeyCode::Esc => self.input = None,
            KeyCode::Backspace => {
                input.text.pop();
            }
            KeyCode::Enter => {
                let input = self.input.take()?;
                let message = input.text.trim().to_string();
                if message.is_empty() {
                    return None;
                }
                return Some(match input.purpose {
                    Purpose::NewThread { env } => Action::NewThread { env, message },
                    Purpose::Message { thread } => Action::Send { thread, message },
                });
            }
            KeyCode::Char(c) => input.text.push(c),
            _ => {}
        }
        None
    }

    fn thread_key(&mut self, k: KeyEvent) -> (Option<Action>, bool) {
        let t = self.thread.as_mut().expect("a thread is open");
        let action = match k.code {
            KeyCode::Esc | KeyCode::Char('q') | KeyCode::Left => Some(Action::CloseThread),
            KeyCode::Char('m') | KeyCode::Char('i') => {
                self.input = Some(Input {
                    purpose: Purpose::Message {
                        thread: t.id.clone(),
                    },
                    text: String::new(),
                });
                None
            }
            KeyCode::Char(c @ ('a' | 'd')) => match &t.awaiting {
                Some((task, p)) => Some(Action::Answer {
                    task: task.clone(),
                    approval: p.approval_id.clone(),
                    approve: c == 'a',
                }),
                None => {
                    self.status = "nothing waits for an approval here".into();
                    None
                }
            },
            KeyCode::Char('t') => {
                let env = self
                    .threads
                    .iter()
                    .find(|x| x.id == t.id)
                    .map(|x| x.environment_id.clone());
                env.map(|env| Action::Terminal {
                    env,
                    thread: t.id.clone(),
                })
            }
            KeyCode::Up | KeyCode::Char('k') => {
                t.scroll_up = t.scroll_up.saturating_add(1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                t.scroll_up = t.scroll_up.saturating_sub(1);
                None
            }
            KeyCode::PageUp => {
                t.scroll_up = t.scroll_up.saturating_add(10);
                None
            }
            KeyCode::PageDown | KeyCode::End => {
                t.scroll_up = if k.code == KeyCode::End {
                    0
                } else {
                    t.scroll_up.saturating_sub(10)
                };
                None
            }
            KeyCode::Char('r') => Some(Action::Reload),
            _ => return (None, false),
        };
        (action, true)
    }

    fn main_key(&mut self, k: KeyEvent) -> (Option<Action>, bool) {
        let pane = self.pane();
        let action = match k.code {
            KeyCode::Char('q') | KeyCode::Esc => Some(Action::Quit),
            KeyCode::Tab | KeyCode::Right => {
                self.pane = Some(match pane {
                    Pane::Environments => Pane::Threads,
                    Pane::Threads => Pane::Nodes,
                    Pane::Nodes => Pane::Environments,
                });
                None
            }
            KeyCode::BackTab | KeyCode::Left => {
                self.pane = Some(match pane {
                    Pane::Environments => Pane::Nodes,
                    Pane::Threads => Pane::Environments,
                    Pane::Nodes => Pane::Threads,
                });
                None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.move_selection(-1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                self.move_selection(1);
                None
            }
            KeyCode::Enter => match pane {
                Pane::Environments => {
                    self.pane = Some(Pane::Threads);
                    None
                }
                Pane::Threads => self
                    .env_threads()
                    .get(self.thread_sel)
                    .map(|t| Action::OpenThread(t.id.clone())),
                Pane::Nodes => None,
            },
            KeyCode::Char('n') => {
                match self.selected_env() {
                    Some(env) => {
                        self.input = Some(Input {
                            purpose: Purpose::NewThread {
                                env: env.id.clone(),
                            },
                            text: String::new(),
                        })
                    }
                    None => self.status = "no environment to start a thread in".into(),
                }
                None
            }
            KeyCode::Char('r') => Some(Action::Reload),
            _ => return (None, false),
        };
        (action, true)
    }

    fn move_selection(&mut self, by: isize) {
        let step = |sel: &mut usize, len: usize| {
            if len > 0 {
                *sel = (*sel as isize + by).clamp(0, len as isize - 1) as usize;
            }
        };
        match self.pane() {
            Pane::Environments => {
                let before = self.env_sel;
                step(&mut self.env_sel, self.envs.len());
                if before != self.env_sel {
                    self.thread_sel = 0;
                }
            }
            Pane::Threads => {
                let n = self.env_threads().len();
                step(&mut self.thread_sel, n);
            }
            Pane::Nodes => step(&mut self.node_sel, self.nodes.len()),
        }
    }
}
