//! JSON-RPC over an agent CLI's stdio, one message per line (Codex's app-server and the Agent
//! Client Protocol that OpenCode speaks): requests with ids we number, the CLI's responses,
//! its notifications, and its own requests to us (permission prompts), which we answer.

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::agent_process::AgentProcess;

/// One message from the CLI.
#[derive(Debug)]
pub enum Incoming {
    /// The answer to one of our requests: its result, or the error's message.
    Response {
        id: u64,
        result: Result<Value, String>,
    },
    /// The CLI asks us something; it waits for our answer with this id.
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
}

impl Incoming {
    fn from(mut v: Value) -> Option<Incoming> {
        let params = v["params"].take();
        match (v.get("id").cloned(), v["method"].as_str()) {
            (Some(id), Some(method)) => Some(Incoming::Request {
                id,
                method: method.to_string(),
                params,
            }),
            (None, Some(method)) => Some(Incoming::Notification {
                method: method.to_string(),
                params,
            }),
            (Some(id), None) => Some(Incoming::Response {
                id: id.as_u64()?,
                result: match v.get("error") {
                    Some(e) if !e.is_null() => Err(error_text(e)),
                    _ => Ok(v["result"].take()),
                },
            }),
            (None, None) => None,
        }
    }
}

/// A JSON-RPC error's text: its message, and its data when that says more.
fn error_text(e: &Value) -> String {
    let message = e["message"].as_str().unwrap_or("error").to_string();
    match &e["data"] {
        Value::Null => message,
        Value::String(s) => format!("{message}: {s}"),
        data => format!("{message}: {data}"),
    }
}

/// A JSON-RPC peer on an agent process.
pub struct Rpc {
    pub process: AgentProcess,
    next_id: u64,
    /// Messages that arrived while [`Rpc::call`] waited for its response.
    held: VecDeque<Incoming>,
}

impl Rpc {
    pub fn new(process: AgentProcess) -> Rpc {
        Rpc {
            process,
            next_id: 1,
            held: VecDeque::new(),
        }
    }

    /// Sends a request; returns its id (its response comes through [`Rpc::next`]).
    pub async fn request(&mut self, method: &str, params: Value) -> Option<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.process.send(&msg).await.then_some(id)
    }

    pub async fn notify(&mut self, method: &str, params: Value) -> bool {
        let msg = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.process.send(&msg).await
    }

    /// Sends a request and waits for its response; what arrives meanwhile is kept for
    /// [`Rpc::next`]. Err when the CLI answers with an error or stops answering.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.request(method, params).await.ok_or(CallError::Gone)?;
        loop {
            match self.read().await.ok_or(CallError::Gone)? {
                Incoming::Response { id: got, result } if got == id => {
                    return result.map_err(CallError::Refused)
                }
                other => self.held.push_back(other),
            }
        }
    }

    /// The next message: first those kept while a call waited.
    pub async fn next(&mut self) -> Option<Incoming> {
        match self.held.pop_front() {
            Some(m) => Some(m),
            None => self.read().await,
        }
    }

    async fn read(&mut self) -> Option<Incoming> {
        loop {
            if let Some(m) = Incoming::from(self.process.next().await?) {
                return Some(m);
            }
        }
    }

    /// Answers one of the CLI's requests.
    pub async fn respond(&mut self, id: Value, result: Value) {
        let msg = json!({"jsonrpc": "2.0", "id": id, "result": result});
        self.process.send(&msg).await;
    }

    /// Ends the CLI after a turn: the turn's outcome, or why there was none.
    pub async fn close(
        self,
        run: &super::Run<'_>,
        turn: Result<super::RunOutcome, CallError>,
    ) -> super::RunOutcome {
        use super::RunOutcome;
        match turn {
            Ok(outcome) => {
                self.process.finish().await;
                outcome
            }
            Err(CallError::Gone) => RunOutcome::Failed(self.process.ended_early().await),
            Err(CallError::Refused(e)) => {
                let title = self.process.title();
                let (_, tail) = self.process.finish().await;
                RunOutcome::Failed(
                    run.emit
                        .redact(&format!("{title} refused the run: {e}{tail}")),
                )
            }
        }
    }

    /// Refuses one of the CLI's requests (one this client does not offer).
    pub async fn refuse(&mut self, id: Value, method: &str) {
        let msg = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601,
            "message": format!("{method} is not supported by viber")}});
        self.process.send(&msg).await;
    }
}

/// Why a call got no result.
#[derive(Debug)]
pub enum CallError {
    /// The CLI answered with this error.
    Refused(String),
    /// The CLI's output ended.
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart_by_id_and_method() {
        let m = |v: Value| Incoming::from(v).unwrap();
        assert!(matches!(
            m(json!({"id": 3, "result": {"a": 1}})),
            Incoming::Response {
                id: 3,
                result: Ok(_)
            }
        ));
        match m(json!({"id": 4, "error": {"code": -32600, "message": "no", "data": "why"}})) {
            Incoming::Response { result: Err(e), .. } => assert_eq!(e, "no: why"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            m(json!({"id": 0, "method": "item/commandExecution/requestApproval", "params": {}})),
            Incoming::Request { .. }
        ));
        assert!(matches!(
            m(json!({"method": "turn/started", "params": {}})),
            Incoming::Notification { .. }
        ));
        assert!(Incoming::from(json!({"hello": 1})).is_none());
        // A response whose id we never sent (not a number) is dropped.
        assert!(Incoming::from(json!({"id": "x", "result": 1})).is_none());
    }
}
