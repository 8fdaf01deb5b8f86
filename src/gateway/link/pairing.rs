//! Device pairing, the gateway's side: a node that connected without a token and proved
//! its key is recorded as a pairing request and waits on its connection until an operator
//! approves it (it gets `hello-ok` with its node token, without a restart), rejects it (the
//! key is refused from now on), or the request lapses.
//!
//! Owns: the in-memory list of waiting connections ([`Pairings`]) through which the API's
//! decision reaches them, and the wait itself. Requests are limited per address
//! (`limits::PAIRING_REQUESTS`), in connections waiting at once, and in rows (see
//! `store::pairing`). Loopback connections are approved without asking only when the
//! gateway runs as `all-in-one` (`GatewayConfig::approve_loopback`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::handshake::{internal, new_node, Granted, Refusal, NODE_TOKEN_PREFIX};
use super::session::{Sink, Stream};
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::gateway::App;
use crate::protocol::api::PairingStatus;
use crate::protocol::codec::{self, CodecError};
use crate::protocol::events::Event;
use crate::protocol::{close, Connect, ErrorCode, Frame, PairingPending};
use crate::store::PairingRecord;

/// Connections waiting for a decision, in all and from one address.
const WAITING_TOTAL: usize = 1000;
const WAITING_PER_ADDRESS: usize = 64;

/// An operator's answer, handed to the waiting connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
}

/// The connections waiting for a pairing decision, by node id.
#[derive(Default)]
pub struct Pairings {
    waiting: Arc<Mutex<HashMap<String, Waiter>>>,
    next_id: AtomicU64,
}

struct Waiter {
    id: u64,
    address: IpAddr,
    tx: oneshot::Sender<Decision>,
}

/// One connection's place in [`Pairings`]; dropping it (the connection ended) leaves.
struct Waiting {
    waiting: Arc<Mutex<HashMap<String, Waiter>>>,
    node_id: String,
    id: u64,
    rx: oneshot::Receiver<Decision>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut map = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.node_id).is_some_and(|w| w.id == self.id) {
            map.remove(&self.node_id);
        }
    }
}

impl Pairings {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `decision` to the connection of `node_id` if one waits; true when it did.
    pub fn decide(&self, node_id: &str, decision: Decision) -> bool {
        match self.lock().remove(node_id) {
            Some(w) => w.tx.send(decision).is_ok(),
            None => false,
        }
    }

    /// Whether a connection of `node_id` waits now.
    pub fn is_waiting(&self, node_id: &str) -> bool {
        self.lock().contains_key(node_id)
    }

    /// A place for a connection of `node_id` from `address`; an earlier connection of the
    /// same node is replaced (its wait ends). Refused when too many wait.
    fn wait(&self, node_id: &str, address: IpAddr) -> Result<Waiting, String> {
        let mut map = self.lock();
        let replacing = map.contains_key(node_id);
        if !replacing && map.len() >= WAITING_TOTAL {
            return Err(format!(
                "{WAITING_TOTAL} devices already wait for approval; retry later"
            ));
        }
        if !replacing
            && map.values().filter(|w| w.address == address).count() >= WAITING_PER_ADDRESS
        {
            return Err(format!(
                "{WAITING_PER_ADDRESS} devices from this address already wait for approval"
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        map.insert(node_id.to_string(), Waiter { id, address, tx });
        Ok(Waiting {
            waiting: self.waiting.clone(),
            node_id: node_id.to_string(),
            id,
            rx,
        })
    }
}

/// How a pairing ended: admitted with a node token, refused, or the connection is gone
/// (None: nothing more to send).
pub(super) type Paired = Option<Result<Granted, Refusal>>;

/// The pairing path of the handshake, for a `connect` without a token whose signature
/// checked out.
pub(super) async fn pair(
    app: &App,
    sink: &mut Sink,
    stream: &mut Stream,
    c: &Connect,
    peer: IpAddr,
) -> Paired {
    if let Err(wait) = app.limits.pairing_attempt(peer) {
        return Some(Err((
            ErrorCode::RateLimited,
            format!(
                "too many pairing requests from this address; retry in {} s",
                wait.as_secs() + 1
            ),
        )));
    }
    match app.store.node(c.node_id.clone()).await {
        Ok(Some(n)) if n.revoked_at.is_some() => {
            return Some(Err((
                ErrorCode::Revoked,
                "this node was revoked by an operator".into(),
            )))
        }
        Ok(_) => {}
        Err(e) => return Some(Err(internal(e))),
    }
    let now = now_ms();
    let request = PairingRecord {
        node_id: c.node_id.clone(),
        public_key: c.public_key.clone(),
        name: requested_name(c),
        hostname: clean(c.hostname.as_deref().unwrap_or(""), 253),
        platform: clean(&c.platform, 64),
        version: clean(&c.version, 64),
        address: peer.to_string(),
        requested_at: now,
        expires_at: now + app.config.pairing_ttl.as_millis() as i64,
        status: PairingStatus::Pending,
        decided_at: None,
        approved_name: None,
    };
    let request = match app.store.request_pairing(request).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Some(Err((
                ErrorCode::RateLimited,
                "too many pairing requests are pending; retry later".into(),
            )))
        }
        Err(e) => return Some(Err(internal(e))),
    };
    match request.status {
        PairingStatus::Rejected => return Some(Err(rejected())),
        PairingStatus::Approved => return Some(complete(app, c).await),
        PairingStatus::Pending
            if app.config.approve_loopback && peer.to_canonical().is_loopback() =>
        {
            tracing::info!(node = %c.node_id, "pairing from loopback approved (all-in-one)");
            return Some(approve_now(app, c, now).await);
        }
        PairingStatus::Pending => {}
    }
    let waiting = match app.pairings.wait(&c.node_id, peer) {
        Ok(w) => w,
        Err(message) => return Some(Err((ErrorCode::RateLimited, message))),
    };
    // A decision made between the request and the registration above reached nobody.
    match app.store.pairing_request(c.node_id.clone()).await {
        Ok(Some(r)) if r.status == PairingStatus::Approved => return Some(complete(app, c).await),
        Ok(Some(r)) if r.status == PairingStatus::Rejected => return Some(Err(rejected())),
        Ok(_) => {}
        Err(e) => return Some(Err(internal(e))),
    }
    let outcome = wait(app, sink, stream, c, &request, waiting).await;
    if outcome.is_none() || matches!(outcome, Some(Err(_))) {
        let status = match &outcome {
            Some(Err((ErrorCode::PairingExpired, _))) => "expired",
            Some(Err((ErrorCode::PairingRejected, _))) => "rejected",
            _ => "withdrawn",
        };
        app.events.publish(Event::PairingChanged {
            fingerprint: c.node_id.clone(),
            status: status.into(),
        });
    }
    outcome
}

/// Tells the node it waits, then holds its connection (pinging it) until an operator
/// decides, the request lapses, the node leaves or the gateway shuts down.
async fn wait(
    app: &App,
    sink: &mut Sink,
    stream: &mut Stream,
    c: &Connect,
    request: &PairingRecord,
    mut waiting: Waiting,
) -> Paired {
    let ping_every = app.config.heartbeat_interval * 2;
    let pending = Frame::PairingPending(PairingPending {
        fingerprint: c.node_id.clone(),
        expires_at: iso8601(request.expires_at),
        ping_interval_ms: ping_every.as_millis() as u64,
    });
    codec::write(sink, &pending).await.ok()?;
    tracing::info!(node = %c.node_id, name = %request.name, "waiting for pairing approval");
    app.events.publish(Event::PairingRequested {
        fingerprint: c.node_id.clone(),
        name: request.name.clone(),
        hostname: request.hostname.clone(),
        address: request.address.clone(),
    });
    let left = request.expires_at.saturating_sub(now_ms()).max(0) as u64;
    let lapses = tokio::time::Instant::now() + Duration::from_millis(left);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    loop {
        tokio::select! {
            decision = &mut waiting.rx => break match decision {
                Ok(Decision::Approved) => Some(complete(app, c).await),
                Ok(Decision::Rejected) => Some(Err(rejected())),
                Err(_) => {
                    codec::close(sink, close::REPLACED, "replaced by a newer connection").await;
                    None
                }
            },
            _ = tokio::time::sleep_until(lapses) => break Some(Err((
                ErrorCode::PairingExpired,
                "nobody approved this node in time; it asks again".into(),
            ))),
            _ = ping.tick() => {
                if codec::write(sink, &Frame::Ping {}).await.is_err() {
                    break None;
                }
            }
            read = codec::read(stream) => match read {
                // The node has nothing to say while it waits; what it says is ignored.
                Ok(_) | Err(CodecError::Binary | CodecError::Decode(_)) => {}
                Err(CodecError::TooBig) => {
                    codec::close_too_big(sink).await;
                    break None;
                }
                Err(CodecError::Closed(_) | CodecError::Transport(_)) => break None,
            },
            _ = app.shutdown.cancelled() => {
                codec::close(sink, close::GOING_AWAY, "gateway shutting down").await;
                break None;
            }
        }
    }
}

fn rejected() -> Refusal {
    (
        ErrorCode::PairingRejected,
        "an operator rejected this node's pairing request".into(),
    )
}

/// The approval `all-in-one` gives its own machine.
async fn approve_now(app: &App, c: &Connect, now: i64) -> Result<Granted, Refusal> {
    app.store
        .decide_pairing(
            c.node_id.clone(),
            PairingStatus::Approved,
            None,
            now,
            now + app.config.pairing_ttl.as_millis() as i64,
        )
        .await
        .map_err(internal)?;
    complete(app, c).await
}

/// Creates the node of an approved request with a new node token.
async fn complete(app: &App, c: &Connect) -> Result<Granted, Refusal> {
    let token = crypto::new_token(NODE_TOKEN_PREFIX);
    let record = new_node(c, &token);
    match app
        .store
        .complete_pairing(record, now_ms())
        .await
        .map_err(internal)?
    {
        Some(node) => {
            tracing::info!(node = %node.id, name = %node.name, "node paired");
            Ok((node, Some(token)))
        }
        None => Err((
            ErrorCode::PairingExpired,
            "the approval lapsed before this node collected it; it asks again".into(),
        )),
    }
}

/// The name a device asks for, made safe to show: its `--name` or host name, else a name
/// from its fingerprint.
fn requested_name(c: &Connect) -> String {
    let name = clean(&c.name, 64);
    if crate::protocol::names::valid_node_name(&name) {
        name
    } else {
        format!("node-{}", crate::protocol::worktree::id_tail(&c.node_id, 8))
    }
}

/// `s` without control characters, at most `max` characters.
fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}
