//! What the gateway asks of a task after submitting it: stop, follow-up messages, approvals.
//!
//! Owns: routing `task:stop`, `task:message` and `task:approval` to the running task they
//! name ([`Runtime::stop_task`], [`Runtime::route_message`], [`Runtime::route_approval`]),
//! applying each command id once and acknowledging it ([`Runtime::command`]),
//! and a task's [`Inbox`]: the inputs still to run, in the order the injection modes ask
//! (steer first, follow-ups in order, collected messages joined into one).
//!
//! Must not touch: running an executor or ending a task (`task.rs`), frames of the task's
//! output (`emitter.rs`).

use std::collections::{HashMap, VecDeque};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{lock, Runtime, STOPPED_BY_SHUTDOWN};
use crate::protocol::{ErrorCode, Frame, InjectionMode};

pub(super) const STOPPED_BY_OPERATOR: &str = "stopped by operator";
/// Command ids remembered after they were applied. The gateway resends a command only
/// until it sees the ack, so only the latest few can come back.
const APPLIED_COMMANDS_CAP: usize = 4096;

/// The outcome of the commands applied lately, by id, oldest evicted first.
#[derive(Default)]
pub(super) struct AppliedCommands {
    order: VecDeque<String>,
    outcome: HashMap<String, Option<String>>,
}

impl AppliedCommands {
    fn record(&mut self, id: String, outcome: Option<String>) {
        if self.order.len() >= APPLIED_COMMANDS_CAP {
            if let Some(old) = self.order.pop_front() {
                self.outcome.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.outcome.insert(id, outcome);
    }
}

/// What the gateway asks of a running task.
#[derive(Debug)]
pub(super) enum Control {
    /// Stop the task; the reason ends up in its error.
    Stop(&'static str),
    Message(String, InjectionMode),
}

impl Runtime {
    /// Applies a gateway command once: `apply` runs the first time `id` arrives, and every
    /// arrival is acknowledged with the outcome (the error of a refusal). A frame without
    /// an id (an older gateway) is applied and answered as before.
    pub(super) fn command(
        &self,
        id: Option<String>,
        apply: impl FnOnce() -> Option<Frame>,
    ) -> Option<Frame> {
        let Some(command_id) = id else {
            return apply();
        };
        let mut applied = lock(&self.inner.commands);
        let error = match applied.outcome.get(&command_id) {
            Some(outcome) => outcome.clone(),
            None => {
                let error = match apply() {
                    Some(Frame::Error(e)) => Some(e.message),
                    _ => None,
                };
                applied.record(command_id.clone(), error.clone());
                error
            }
        };
        Some(Frame::CommandAck { command_id, error })
    }

    /// Asks a running task to stop; nothing when it is not running.
    pub(super) fn stop_task(&self, task_id: &str, why: &'static str) {
        if let Some(tx) = self.running().get(task_id) {
            let _ = tx.send(Control::Stop(why));
        }
    }

    /// Hands a message to a running task; an error frame when it is not running here.
    pub(super) fn route_message(
        &self,
        task_id: String,
        message: String,
        mode: InjectionMode,
    ) -> Option<Frame> {
        match self.running().get(&task_id) {
            Some(tx) => {
                let _ = tx.send(Control::Message(message, mode));
                None
            }
            None => Some(Frame::error(
                ErrorCode::UnknownTask,
                format!("task {task_id} is not running on this node"),
            )),
        }
    }

    /// Hands an operator's answer to the tool call waiting for it; an error frame when no
    /// call waits for it (it timed out, or the task ended).
    pub(super) fn route_approval(
        &self,
        task_id: String,
        approval_id: String,
        approved: bool,
        reason: Option<String>,
    ) -> Option<Frame> {
        match lock(&self.inner.approvals).remove(&approval_id) {
            Some(tx) => {
                let _ = tx.send((approved, reason));
                None
            }
            None => Some(Frame::error(
                ErrorCode::UnknownTask,
                format!("no pending approval {approval_id} for task {task_id}"),
            )),
        }
    }

    /// Stops every running task and prepare (node shutdown) and waits up to `limit` for
    /// them, and for validations and config checks in flight, to end.
    pub async fn stop_all(&self, limit: std::time::Duration) {
        self.inner.stopping.cancel();
        for tx in self.running().values() {
            let _ = tx.send(Control::Stop(STOPPED_BY_SHUTDOWN));
        }
        self.inner.tracker.close();
        let _ = tokio::time::timeout(limit, self.inner.tracker.wait()).await;
    }
}

/// A task's control messages and the inputs it still has to run.
pub(super) struct Inbox {
    rx: mpsc::UnboundedReceiver<Control>,
    queue: VecDeque<String>,
    /// `collect` messages, run together as one input when the current run ends.
    collected: Vec<String>,
    stopped: Option<&'static str>,
    /// The latest steer of the current run: it runs next.
    steer: Option<String>,
}

impl Inbox {
    pub fn new(rx: mpsc::UnboundedReceiver<Control>, goal: String) -> Inbox {
        Inbox {
            rx,
            queue: VecDeque::from([goal]),
            collected: Vec::new(),
            stopped: None,
            steer: None,
        }
    }

    /// Why the task was stopped, if it was.
    pub fn stopped(&self) -> Option<&'static str> {
        self.stopped
    }

    /// The next input to run, after taking the messages that arrived while no run was
    /// active. None when the task was stopped or has nothing left to run.
    pub fn next_input(&mut self) -> Option<String> {
        self.take_arrived();
        if self.stopped.is_some() {
            return None;
        }
        if self.queue.is_empty() {
            self.flush_collected();
        }
        self.queue.pop_front()
    }

    /// Waits for a control message while a run is active (never, once the channel closed).
    pub async fn recv(&mut self) -> Control {
        match self.rx.recv().await {
            Some(ctrl) => ctrl,
            None => std::future::pending().await,
        }
    }

    /// Applies a control message that arrived during a run: a stop or a steer aborts it.
    pub fn during_run(&mut self, ctrl: Control, abort: &CancellationToken) {
        match ctrl {
            Control::Stop(why) => {
                self.stopped = Some(why);
                abort.cancel();
            }
            Control::Message(m, InjectionMode::Steer) => {
                // Several steers before the run yields: the latest wins, the others
                // still run after it.
                if let Some(prev) = self.steer.replace(m) {
                    self.queue.push_front(prev);
                }
                abort.cancel();
            }
            Control::Message(m, InjectionMode::Followup) => self.queue.push_back(m),
            Control::Message(m, InjectionMode::Collect) => self.collected.push(m),
        }
    }

    /// After a run: its steer runs next (unless the task was stopped), then what was
    /// collected during it.
    pub fn run_ended(&mut self) {
        // Messages that arrived as the run ended belong with those that arrived during it:
        // collected ones merge into one input, however the race with the run's exit went.
        self.take_arrived();
        if let Some(m) = self.steer.take() {
            if self.stopped.is_none() {
                self.queue.push_front(m);
            }
        }
        self.flush_collected();
    }

    /// Takes the control messages that arrived while no run was watching for them.
    fn take_arrived(&mut self) {
        while let Ok(ctrl) = self.rx.try_recv() {
            match ctrl {
                Control::Stop(why) => self.stopped = Some(why),
                Control::Message(m, InjectionMode::Collect) => self.collected.push(m),
                Control::Message(m, InjectionMode::Steer) => self.queue.push_front(m),
                Control::Message(m, InjectionMode::Followup) => self.queue.push_back(m),
            }
        }
    }

    fn flush_collected(&mut self) {
        if !self.collected.is_empty() {
            self.queue.push_back(self.collected.join("\n"));
            self.collected.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_messages_arriving_as_the_run_ends_merge_into_one_input() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inbox = Inbox::new(rx, "goal".into());
        assert_eq!(inbox.next_input().as_deref(), Some("goal"));
        let abort = CancellationToken::new();
        // c1 is seen during the run; c2 is still in the channel when the run exits.
        tx.send(Control::Message("c1".into(), InjectionMode::Collect))
            .unwrap();
        let ctrl = inbox.rx.try_recv().unwrap();
        inbox.during_run(ctrl, &abort);
        tx.send(Control::Message("c2".into(), InjectionMode::Collect))
            .unwrap();
        inbox.run_ended();
        assert_eq!(inbox.next_input().as_deref(), Some("c1\nc2"));
        assert_eq!(inbox.next_input(), None);
        assert!(!abort.is_cancelled());
    }

    #[test]
    fn a_command_is_applied_once_and_every_arrival_is_acknowledged() {
        let dir = std::env::temp_dir().join(format!("viber-cmd-{}", crate::crypto::random_u64()));
        let rt = Runtime::new(
            "n1".into(),
            &dir,
            "http://127.0.0.1:1",
            crate::node::runtime::SandboxSpec::off(),
        )
        .unwrap();
        let mut applied = 0;
        for _ in 0..3 {
            let ack = rt.command(Some("cmd-1".into()), || {
                applied += 1;
                rt.route_message("t-gone".into(), "hi".into(), InjectionMode::Followup)
            });
            match ack {
                Some(Frame::CommandAck { command_id, error }) => {
                    assert_eq!(command_id, "cmd-1");
                    assert!(error.unwrap().contains("not running"));
                }
                other => panic!("expected an ack, got {other:?}"),
            }
        }
        assert_eq!(applied, 1);
        // Without an id (an older gateway), the refusal is an error frame, as before.
        let answer = rt.command(None, || {
            rt.route_message("t-gone".into(), "hi".into(), InjectionMode::Followup)
        });
        assert!(matches!(answer, Some(Frame::Error(_))));
        let _ = std::fs::remove_dir_all(dir);
    }
}
