//! `/api/nodes/pending*`: devices that asked to join without a token (device pairing), and
//! the operator's answer. The waiting connection gets the answer at once (see
//! `link::pairing`); a device that is away gets it when it next connects.

use axum::extract::State;
use axum::Json;

use super::nodes::validate_node_name;
use super::openapi::Errors;
use crate::clock::{iso8601, now_ms};
use crate::gateway::error::{ApiError, ApiResult, Body, Path};
use crate::gateway::link::Decision;
use crate::gateway::App;
use crate::protocol::api::{
    ApproveRequest, ErrorBody, PairingDecided, PairingList, PairingRequestView, PairingStatus,
};
use crate::protocol::events::Event;
use crate::store::PairingRecord;

/// The shortest fingerprint prefix accepted for a request.
const MIN_PREFIX: usize = 6;

fn view(app: &App, r: &PairingRecord) -> PairingRequestView {
    PairingRequestView {
        fingerprint: r.node_id.clone(),
        name: r.approved_name.clone().unwrap_or_else(|| r.name.clone()),
        hostname: r.hostname.clone(),
        platform: r.platform.clone(),
        version: r.version.clone(),
        address: r.address.clone(),
        status: r.status,
        waiting: app.pairings.is_waiting(&r.node_id),
        requested_at: iso8601(r.requested_at),
        expires_at: iso8601(r.expires_at),
    }
}

#[utoipa::path(
    get,
    path = "/nodes/pending",
    operation_id = "listPairingRequests",
    tag = "nodes",
    responses(
        (status = 200, description = "Pairing requests: pending, approved but not yet collected, and rejected keys; newest first", body = PairingList),
        Errors,
    )
)]
pub async fn list(State(app): State<App>) -> ApiResult<Json<PairingList>> {
    let requests = app.store.list_pairing_requests(now_ms()).await?;
    Ok(Json(PairingList {
        requests: requests.iter().map(|r| view(&app, r)).collect(),
    }))
}

/// The request whose fingerprint is `fp`, or the only one starting with it (with or without
/// the `node_` prefix, at least [`MIN_PREFIX`] characters).
async fn find(app: &App, fp: &str) -> ApiResult<PairingRecord> {
    let fp = fp.trim();
    let now = now_ms();
    // The whole fingerprint finds its request however many others there are.
    if let Some(r) = app.store.pairing_request(fp.to_string()).await? {
        if r.status == PairingStatus::Rejected || r.expires_at > now {
            return Ok(r);
        }
    }
    let requests = app.store.list_pairing_requests(now).await?;
    let bare = fp.strip_prefix("node_").unwrap_or(fp);
    if bare.len() < MIN_PREFIX {
        return Err(ApiError::not_found(format!(
            "no pairing request {fp:?} (give the whole fingerprint or at least {MIN_PREFIX} of its characters)"
        )));
    }
    let mut matching = requests.iter().filter(|r| {
        r.node_id
            .strip_prefix("node_")
            .unwrap_or(&r.node_id)
            .starts_with(bare)
    });
    match (matching.next(), matching.next()) {
        (Some(r), None) => Ok(r.clone()),
        (None, _) => Err(ApiError::not_found(format!("no pairing request {fp:?}"))),
        (Some(_), Some(_)) => Err(ApiError::conflict(format!(
            "{fp:?} matches several pairing requests; give more of the fingerprint"
        ))),
    }
}

#[utoipa::path(
    post,
    path = "/nodes/pending/{fingerprint}/approve",
    operation_id = "approvePairing",
    tag = "nodes",
    params(("fingerprint" = String, Path, description = "The device's key fingerprint (or a unique prefix of at least 6 characters)")),
    request_body = ApproveRequest,
    responses(
        (status = 200, description = "Approved: the device gets its node token now, or when it next connects", body = PairingDecided),
        (status = 404, description = "No such pairing request (or it lapsed)", body = ErrorBody),
        (status = 409, description = "The prefix matches several requests", body = ErrorBody),
        (status = 422, description = "Bad name", body = ErrorBody),
        Errors,
    )
)]
pub async fn approve(
    State(app): State<App>,
    Path(fingerprint): Path<String>,
    Body(req): Body<ApproveRequest>,
) -> ApiResult<Json<PairingDecided>> {
    let name = req.name.map(|n| n.trim().to_string());
    if let Some(name) = &name {
        validate_node_name(name)?;
    }
    let request = find(&app, &fingerprint).await?;
    let now = now_ms();
    // Long enough for a device that is away (or backing off) to come and collect it.
    let collect_by = now + app.config.enrollment_ttl.as_millis() as i64;
    decide(
        &app,
        request,
        PairingStatus::Approved,
        name,
        now,
        collect_by,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/nodes/pending/{fingerprint}/reject",
    operation_id = "rejectPairing",
    tag = "nodes",
    params(("fingerprint" = String, Path, description = "The device's key fingerprint (or a unique prefix of at least 6 characters)")),
    responses(
        (status = 200, description = "Rejected: the key is refused from now on", body = PairingDecided),
        (status = 404, description = "No such pairing request (or it lapsed)", body = ErrorBody),
        (status = 409, description = "The prefix matches several requests", body = ErrorBody),
        Errors,
    )
)]
pub async fn reject(
    State(app): State<App>,
    Path(fingerprint): Path<String>,
) -> ApiResult<Json<PairingDecided>> {
    let request = find(&app, &fingerprint).await?;
    let now = now_ms();
    decide(&app, request, PairingStatus::Rejected, None, now, now).await
}

async fn decide(
    app: &App,
    request: PairingRecord,
    status: PairingStatus,
    name: Option<String>,
    now: i64,
    expires_at: i64,
) -> ApiResult<Json<PairingDecided>> {
    let Some(stored) = app
        .store
        .decide_pairing(request.node_id.clone(), status, name, now, expires_at)
        .await?
    else {
        return Err(ApiError::not_found(format!(
            "the pairing request {} lapsed",
            request.node_id
        )));
    };
    let decision = match status {
        PairingStatus::Rejected => Decision::Rejected,
        _ => Decision::Approved,
    };
    let delivered = app.pairings.decide(&stored.node_id, decision);
    tracing::info!(node = %stored.node_id, status = %status.as_str(), delivered, "pairing decided");
    app.events.publish(Event::PairingChanged {
        fingerprint: stored.node_id.clone(),
        status: status.as_str().into(),
    });
    Ok(Json(PairingDecided {
        fingerprint: stored.node_id,
        name: stored.approved_name.unwrap_or(stored.name),
        status,
        delivered,
    }))
}
