//! `POST /api/environments/:id/validate`, answered by a node: the gateway never runs a setup
//! script or opens a repository URL itself. It sends `environment:validate` to a node that
//! has the environment bound (else the least busy online node) and waits for the matching
//! `environment:validated`.

use std::time::Duration;

use crate::crypto;
use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::link::Outgoing;
use crate::gateway::waiters::{Unanswered, Waiters};
use crate::gateway::App;
use crate::protocol::api::ValidationResult;
use crate::protocol::{BindingStatus, ErrorCode, Frame, ValidateEnvironment, ValidationReport};
use crate::store::EnvironmentRecord;

/// How long a node has to answer (its repository check gives up after 20 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Validation requests waiting for their node's answer, by request id.
pub type Validations = Waiters<ValidationReport>;

/// A node's `environment:validated`: hands it to the waiting request, or says why not.
pub fn complete(app: &App, node_id: &str, report: ValidationReport) -> Option<Frame> {
    let id = report.request_id.clone();
    match app.validations.answer(node_id, &id, report) {
        Ok(()) => None,
        Err(Unanswered::OtherNode) => Some(Frame::error(
            ErrorCode::NotOwner,
            format!("validation {id} was not asked of this node"),
        )),
        Err(Unanswered::Unknown) => Some(Frame::error(
            ErrorCode::InvalidFrame,
            format!("no validation {id} is waiting"),
        )),
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
    let mut waiting = app.validations.wait(request_id.clone(), &node_id);
    let frame = Frame::EnvironmentValidate(ValidateEnvironment {
        request_id,
        setup_script: env.setup_script.clone(),
        repo_url: env.repo_url.clone().filter(|_| env.kind.is_git()),
        branch: env.repo_branch.clone(),
    });
    if tx.send(Outgoing::frame(frame)).await.is_err() {
        return Err(ApiError::unavailable(format!(
            "node {node_id} went offline"
        )));
    }
    let report = match tokio::time::timeout(ANSWER_TIMEOUT, &mut waiting.answer).await {
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
