//! Operator authentication: bearer tokens whose SHA-256 is in the database, and board
//! sessions (an HttpOnly, SameSite=Strict cookie the browser gets in exchange for a token).
//! Cookie-authenticated writes must echo the session's CSRF token in `X-CSRF-Token`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::RwLock;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ApiResult, Body};
use super::http::Errors;
use super::App;
use crate::clock::{iso8601, now_ms};
use crate::crypto;
use crate::protocol::api::{CredentialKind, ErrorBody, LoginRequest, SessionInfo, SessionOpened};
use crate::store::Store;

pub const ADMIN_TOKEN_FILE: &str = "admin-token";
pub const ADMIN_TOKEN_PREFIX: &str = "vbr_adm_";
pub const SESSION_COOKIE: &str = "viber_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const SESSION_PREFIX: &str = "vbr_ses_";
const SESSION_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

struct Session {
    csrf: String,
    expires_at: i64,
}

pub struct OperatorAuth {
    hashes: RwLock<HashSet<String>>,
    /// Live sessions by the SHA-256 of their id (mirrors the `sessions` table).
    sessions: RwLock<HashMap<String, Session>>,
    /// Whether the gateway is reached over https (the cookie then gets `Secure`).
    secure_cookie: bool,
}

impl OperatorAuth {
    /// Loads the admin token from `<data-dir>/admin-token`, creating it (mode 0600) on first
    /// start, and makes sure the database holds its hash (and only its hash).
    pub async fn init(
        store: &Store,
        data_dir: &Path,
        secure_cookie: bool,
    ) -> anyhow::Result<(OperatorAuth, String)> {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            Ok(_) | Err(_) => {
                let t = crypto::new_token(ADMIN_TOKEN_PREFIX);
                crypto::write_private_file(&path, format!("{t}\n").as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                tracing::info!(path = %path.display(), "created admin token");
                t
            }
        };
        store
            .set_admin_token_hash(crypto::sha256_hex(token.as_bytes()), crate::clock::now_ms())
            .await?;
        let hashes = store.operator_token_hashes().await?.into_iter().collect();
        let sessions = store
            .sessions(now_ms())
            .await?
            .into_iter()
            .map(|(hash, csrf, expires_at)| (hash, Session { csrf, expires_at }))
            .collect();
        Ok((
            OperatorAuth {
                hashes: RwLock::new(hashes),
                sessions: RwLock::new(sessions),
                secure_cookie,
            },
            token,
        ))
    }

    pub fn is_valid(&self, token: &str) -> bool {
        let h = crypto::sha256_hex(token.as_bytes());
        self.hashes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&h)
    }

    /// The CSRF token of a live session, by the session id from the cookie.
    fn session_csrf(&self, session_id: &str) -> Option<String> {
        let h = crypto::sha256_hex(session_id.as_bytes());
        let sessions = self.sessions.read().unwrap_or_else(|p| p.into_inner());
        sessions
            .get(&h)
            .filter(|s| s.expires_at > now_ms())
            .map(|s| s.csrf.clone())
    }

    fn cookie(&self, value: &str, max_age_secs: i64) -> HeaderValue {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        let c = format!(
            "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
        );
        HeaderValue::from_str(&c).expect("cookie is ASCII")
    }
}

/// How a request proved it is the operator.
enum Credential {
    Bearer,
    /// A session cookie, with that session's CSRF token.
    Session(String),
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    Some(
        header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or(""),
    )
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == SESSION_COOKIE).then_some(value.trim())
        })
}

fn credential(app: &App, headers: &HeaderMap) -> ApiResult<Credential> {
    if let Some(token) = bearer(headers) {
        return if !token.is_empty() && app.auth.is_valid(token) {
            Ok(Credential::Bearer)
        } else {
            Err(ApiError::unauthorized("invalid operator token"))
        };
    }
    match session_cookie(headers) {
        Some(id) => app
            .auth
            .session_csrf(id)
            .map(Credential::Session)
            .ok_or_else(|| ApiError::unauthorized("session expired: log in again")),
        None => Err(ApiError::unauthorized(
            "missing operator token: send `Authorization: Bearer <token>` (see <data-dir>/admin-token)",
        )),
    }
}

/// Compares digests rather than the secrets, so the CSRF check's timing says nothing about
/// how much of the token matched.
fn same_secret(a: &str, b: &str) -> bool {
    crypto::sha256_hex(a.as_bytes()) == crypto::sha256_hex(b.as_bytes())
}

fn check_csrf(headers: &HeaderMap, expected: &str) -> ApiResult<()> {
    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match sent {
        Some(sent) if same_secret(sent, expected) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "cookie-authenticated writes need the session's X-CSRF-Token header",
        )),
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A WebSocket is a conversation that writes, opened with a GET that any page can start: a
/// browser cannot add a header to it, so the token rides in the query.
fn check_csrf_query(uri: &axum::http::Uri, expected: &str) -> ApiResult<()> {
    let sent = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("csrf="));
    match sent {
        Some(sent) if same_secret(sent, expected) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "a cookie-authenticated WebSocket needs the session's CSRF token in `csrf=`",
        )),
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Who makes a request, for the audit log: `operator-token`, `session:<8 hex>` (a digest of
/// the board session's id, as it is stored), or `anonymous`.
pub fn actor(app: &App, headers: &HeaderMap) -> String {
    if let Some(token) = bearer(headers) {
        return if !token.is_empty() && app.auth.is_valid(token) {
            "operator-token".into()
        } else {
            "anonymous".into()
        };
    }
    match session_cookie(headers) {
        Some(id) if app.auth.session_csrf(id).is_some() => {
            format!("session:{}", &crypto::sha256_hex(id.as_bytes())[..8])
        }
        _ => "anonymous".into(),
    }
}

/// An operator's bearer token or board session, without the CSRF check (for the previews'
/// origin, where `SameSite=Strict` keeps other sites' requests from carrying the cookie).
pub fn authenticated(app: &App, headers: &HeaderMap) -> ApiResult<()> {
    credential(app, headers).map(drop)
}

/// The rules of [`require_operator`] for a route outside `/api`: a bearer token,
/// or a session cookie with the CSRF token on writes (in the header, or for a WebSocket in
/// the query).
pub fn check_operator(
    app: &App,
    headers: &HeaderMap,
    method: &Method,
    uri: &axum::http::Uri,
) -> ApiResult<()> {
    if let Credential::Session(csrf) = credential(app, headers)? {
        if !is_safe(method) {
            check_csrf(headers, &csrf)?;
        } else if is_websocket(headers) {
            check_csrf_query(uri, &csrf)?;
        }
    }
    Ok(())
}

/// Middleware on every `/api/*` route: requires `Authorization: Bearer <operator token>` or a
/// session cookie (plus the CSRF header on writes).
pub async fn require_operator(
    State(app): State<App>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_operator(&app, req.headers(), req.method(), req.uri())?;
    Ok(next.run(req).await)
}

/// `POST /api/session {token}`: exchanges an operator token for a session cookie.
/// An address with too many recent failures is refused (429) before its token is checked.
#[utoipa::path(
    post,
    path = "/api/session",
    operation_id = "login",
    tag = "session",
    security(()),
    request_body = LoginRequest,
    responses(
        (status = 201, description = "Session opened; the `viber_session` cookie is set", body = SessionOpened,
            headers(("Set-Cookie" = String, description = "The session cookie (HttpOnly, SameSite=Strict)"))),
        (status = 401, description = "Invalid operator token", body = ErrorBody),
        (status = 429, description = "Too many failed attempts from this address", body = ErrorBody),
        Errors,
    )
)]
pub async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Body(req): Body<LoginRequest>,
) -> ApiResult<Response> {
    app.limits.login_attempt(peer.ip())?;
    let token = req.token.trim();
    if token.is_empty() || !app.auth.is_valid(token) {
        tracing::warn!(%peer, "failed sign-in");
        return Err(ApiError::unauthorized("invalid operator token"));
    }
    app.limits.login_succeeded(peer.ip());
    let id = crypto::new_token(SESSION_PREFIX);
    let csrf = crypto::new_token("");
    let now = now_ms();
    let expires_at = now + SESSION_TTL_MS;
    let hash = crypto::sha256_hex(id.as_bytes());
    app.store
        .insert_session(
            hash.clone(),
            csrf.clone(),
            crypto::sha256_hex(token.as_bytes()),
            now,
            expires_at,
        )
        .await?;
    {
        let mut sessions = app.auth.sessions.write().unwrap_or_else(|p| p.into_inner());
        // The store drops expired rows on insert; drop them here too.
        sessions.retain(|_, s| s.expires_at > now);
        sessions.insert(
            hash,
            Session {
                csrf: csrf.clone(),
                expires_at,
            },
        );
    }
    tracing::info!("board session opened");
    let cookie = app.auth.cookie(&id, SESSION_TTL_MS / 1000);
    let body = SessionOpened {
        csrf_token: csrf,
        expires_at: iso8601(expires_at),
    };
    Ok((StatusCode::CREATED, [(SET_COOKIE, cookie)], Json(body)).into_response())
}

/// `GET /api/session`: whether the request is authenticated, and the CSRF token of its session.
#[utoipa::path(
    get,
    path = "/api/session",
    operation_id = "session",
    tag = "session",
    security(("operatorToken" = []), ("session" = [])),
    responses(
        (status = 200, description = "Authenticated", body = SessionInfo),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        Errors,
    )
)]
pub async fn session(State(app): State<App>, headers: HeaderMap) -> ApiResult<Json<SessionInfo>> {
    let (via, csrf_token) = match credential(&app, &headers)? {
        Credential::Bearer => (CredentialKind::Bearer, None),
        Credential::Session(csrf) => (CredentialKind::Cookie, Some(csrf)),
    };
    Ok(Json(SessionInfo {
        authenticated: true,
        via,
        csrf_token,
    }))
}

/// `DELETE /api/session`: ends the cookie's session (CSRF-checked like every write).
#[utoipa::path(
    delete,
    path = "/api/session",
    operation_id = "logout",
    tag = "session",
    security(("operatorToken" = []), ("session" = [], "csrf" = [])),
    responses(
        (status = 204, description = "Session ended; the cookie is cleared",
            headers(("Set-Cookie" = String, description = "Clears the session cookie"))),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Cookie without the session's X-CSRF-Token", body = ErrorBody),
        Errors,
    )
)]
pub async fn logout(State(app): State<App>, headers: HeaderMap) -> ApiResult<Response> {
    if let Credential::Session(csrf) = credential(&app, &headers)? {
        check_csrf(&headers, &csrf)?;
        let id = session_cookie(&headers).unwrap_or_default();
        let hash = crypto::sha256_hex(id.as_bytes());
        app.auth
            .sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash);
        app.store.delete_session(hash).await?;
    }
    let cookie = app.auth.cookie("", 0);
    Ok((StatusCode::NO_CONTENT, [(SET_COOKIE, cookie)]).into_response())
}
