//! Requests waiting for one node's answer, by id: environment validations wait for
//! `environment:validated`, commands for `command:ack`. An entry lives only while its request
//! does (answered, timed out, or dropped by a client that went away), so the map holds at
//! most one entry per request in flight.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// Requests waiting for an answer of type `T`.
pub struct Waiters<T> {
    map: Mutex<HashMap<String, (String, oneshot::Sender<T>)>>,
}

impl<T> Default for Waiters<T> {
    fn default() -> Self {
        Waiters {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// Why an answer found no request to take it.
#[derive(Debug, PartialEq, Eq)]
pub enum Unanswered {
    /// The request was asked of another node.
    OtherNode,
    /// No request waits under this id (never asked, or already gone).
    Unknown,
}

/// One waiting request; dropping it forgets the request.
pub struct Waiting<'a, T> {
    waiters: &'a Waiters<T>,
    id: String,
    /// Resolves with the node's answer.
    pub answer: oneshot::Receiver<T>,
}

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.id);
    }
}

impl<T> Waiters<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, oneshot::Sender<T>)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers request `id`, asked of `node_id`.
    pub fn wait(&self, id: String, node_id: &str) -> Waiting<'_, T> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id.clone(), (node_id.to_string(), tx));
        Waiting {
            waiters: self,
            id,
            answer: rx,
        }
    }

    /// Hands `answer` from `node_id` to request `id`, if that node was asked.
    pub fn answer(&self, node_id: &str, id: &str, answer: T) -> Result<(), Unanswered> {
        let mut map = self.lock();
        match map.get(id) {
            Some((asked, _)) if asked == node_id => {
                if let Some((_, tx)) = map.remove(id) {
                    let _ = tx.send(answer);
                }
                Ok(())
            }
            Some(_) => Err(Unanswered::OtherNode),
            None => Err(Unanswered::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_asked_node_answers_and_dropped_requests_are_forgotten() {
        let w: Waiters<u32> = Waiters::default();
        let mut waiting = w.wait("r1".into(), "n1");
        assert_eq!(w.answer("n2", "r1", 1), Err(Unanswered::OtherNode));
        assert_eq!(w.answer("n1", "r2", 1), Err(Unanswered::Unknown));
        assert_eq!(w.answer("n1", "r1", 7), Ok(()));
        assert_eq!(waiting.answer.try_recv().unwrap(), 7);
        assert_eq!(w.answer("n1", "r1", 8), Err(Unanswered::Unknown));
        drop(waiting);
        let again = w.wait("r3".into(), "n1");
        drop(again);
        assert!(w.lock().is_empty());
    }
}
