//! `POST /api/environments/:id/validate`, answered by a node: the gateway never runs a setup
//! script or opens a repository URL itself. It sends `environment:validate` to a node that
//! has the environment bound (else the least busy online node) and waits for the matching
//! `environment:validated`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::crypto;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::link::Outgoing;
use crate::gateway::App;
use crate::protocol::api::ValidationResult;
use crate::protocol::{BindingStatus, ErrorCode, Frame, ValidateEnvironment, ValidationReport};
use crate::store::EnvironmentRecord;

/// How long a node has to answer (its repository check gives up after 20 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Validation requests waiting for their node's answer, by request id.
#[derive(Default)]
pub struct Validations {
    waiting: Mutex<HashMap<String, Waiting>>,
}

struct Waiting {
    node_id: String,
    tx: oneshot::Sender<ValidationReport>,
}

/// Removes a request from the waiting map when its handler returns (answered, timed out or
/// dropped by a client that went away).
struct Forget<'a> {
    validations: &'a Validations,
    id: String,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.validations.lock().remove(&self.id);
    }
}

impl Validations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node's answer: hands it to the waiting request, or says why it is refused.
    pub fn complete(&self, node_id: &str, report: ValidationReport) -> Option<Frame> {
        let mut waiting = self.lock();
        match waiting.get(&report.request_id) {
            Some(w) if w.node_id == node_id => {
                let w = waiting.remove(&report.request_id).expect("present");
                let _ = w.tx.send(report);
                None
            }
            Some(_) => Some(Frame::error(
                ErrorCode::NotOwner,
                format!(
                    "validation {} was not asked of this node",
                    report.request_id
                ),
            )),
            None => Some(Frame::error(
                ErrorCode::InvalidFrame,
                format!("no validation {} is waiting", report.request_id),
            )),
        }
    }
}

/// Asks a node to check `env` and waits for its answer.
pub async fn validate(app: &App, env: &EnvironmentRecord) -> ApiResult<ValidationResult> {
    let node_id = pick_node(app, env).await?;
    let tx = app
        .registry
        .sender(&node_id)
        .ok_or_else(|| ApiError::unavailable(format!("node {node_id} went offline")))?;
    let request_id = crypto::new_id("val");
    let (answer_tx, answer_rx) = oneshot::channel();
    app.validations.lock().insert(
        request_id.clone(),
        Waiting {
            node_id: node_id.clone(),
            tx: answer_tx,
        },
    );
    let _forget = Forget {
        validations: &app.validations,
        id: request_id.clone(),
    };
    let frame = Frame::EnvironmentValidate(ValidateEnvironment {
        request_id,
        setup_script: env.setup_script.clone(),
        repo_url: env.repo_url.clone().filter(|_| env.kind.is_git()),
        branch: env.repo_branch.clone(),
    });
    if tx.send(Outgoing::Frame(frame)).await.is_err() {
        return Err(ApiError::unavailable(format!(
            "node {node_id} went offline"
        )));
    }
    let report = match tokio::time::timeout(ANSWER_TIMEOUT, answer_rx).await {
        Ok(Ok(report)) => report,
        Ok(Err(_)) | Err(_) => {
            return Err(ApiError::unavailable(format!(
                "node {node_id} did not answer the validation within {} s",
                ANSWER_TIMEOUT.as_secs()
            )))
        }
    };
    Ok(ValidationResult {
        ok: report.checks.iter().all(|c| c.ok),
        checks: report.checks,
    })
}

/// An online node with the environment bound (a ready binding first), else the online node
/// with the fewest running tasks.
async fn pick_node(app: &App, env: &EnvironmentRecord) -> ApiResult<String> {
    let mut bound = app.store.bindings_of_environment(env.id.clone()).await?;
    bound.sort_by_key(|b| b.status != BindingStatus::Ready);
    if let Some(b) = bound
        .iter()
        .find(|b| app.registry.presence(&b.node_id).is_some())
    {
        return Ok(b.node_id.clone());
    }
    app.registry.least_busy(|_| true).ok_or_else(|| {
        ApiError::unavailable(
            "no online node to validate on; start one with `viber node` (nodes run the checks)",
        )
    })
}
