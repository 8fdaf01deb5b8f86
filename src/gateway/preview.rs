//! Port previews: `/preview/:binding/:port/...` proxies HTTP and WebSocket requests to a
//! port that a terminal of the binding listens on, through a tunnel over the node's
//! connection (no port is opened on the node).
//!
//! Previews are served on an address of their own (`--preview-listen`, a free port by
//! default): a previewed page runs code an agent wrote, and on the board's origin it could
//! read the operator's CSRF token and act as them. On its own origin it cannot read the API's
//! answers, and a write needs that token. The gateway's `/preview/...` redirects there. The
//! board's session cookie is sent to it (cookies do not tell ports apart); it authenticates
//! previews without a CSRF token, which `SameSite=Strict` makes unnecessary: another site
//! cannot send it.
//!
//! The dev server sees requests for its own paths (`/preview/b/p/x` arrives as `/x`, with
//! `Host: 127.0.0.1:p`), without the operator's token or session cookie. Its redirects to an
//! absolute path come back under the prefix, and a page's requests for absolute paths
//! (`/assets/app.js` from a previewed page) are redirected under the prefix by the page's
//! `Referer` (see [`from_preview_page`]).
//!
//! Must not touch: the tunnel's frames (`terminals.rs`), the node.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use hyper_util::rt::TokioIo;
use std::ops::Not;

use super::error::{ApiError, ApiResult};
use super::App;

pub const PREFIX: &str = "/preview/";

/// Where previews are served.
#[derive(Debug, Clone)]
pub struct Origin {
    pub port: u16,
    /// `--preview-public-url`.
    pub public_url: Option<String>,
}

impl Origin {
    /// The previews' base URL for a browser that reached the gateway with `headers`: the
    /// public URL, else the same host on the previews' port (so the session cookie goes
    /// with it).
    pub fn base(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.public_url {
            return u.clone();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .map(|a| a.host().to_string())
            .unwrap_or_else(|| "127.0.0.1".into());
        format!("http://{host}:{}", self.port)
    }
}

/// Serves previews on their own listener until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use axum::handler::Handler;
    let service = site.with_state(app).into_make_service();
    let server = axum::serve(listener, service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "preview server");
    }
}

/// Everything on the previews' origin: a preview, or an absolute path a previewed page asked
/// for (redirected under its preview).
async fn site(axum::extract::State(app): axum::extract::State<App>, req: Request) -> Response {
    if req.uri().path().starts_with(PREFIX) {
        return proxy(app, req).await;
    }
    match from_preview_page(req.headers(), req.uri()) {
        Some(to) => Redirect::temporary(&to).into_response(),
        None => ApiError::not_found("previews are /preview/BINDING/PORT/").into_response(),
    }
}

/// On the gateway's own origin: the same path on the previews' origin.
pub fn redirect(app: &App, req: &Request) -> Response {
    let to = format!(
        "{}{}",
        app.previews.base(req.headers()),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    Redirect::temporary(&to).into_response()
}

/// Headers that belong to one hop, not passed on (Connection and Upgrade are set again for
/// a WebSocket).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `(binding, port, rest)` of a preview path; rest starts with `/` (None: no slash after
/// the port).
fn parse(path: &str) -> Option<(&str, u16, Option<&str>)> {
    let rest = path.strip_prefix(PREFIX)?;
    let (binding, rest) = rest.split_once('/')?;
    let (port, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    Some((binding, port.parse().ok()?, tail))
}

/// A request for an absolute path made by a previewed page: where it belongs under the
/// page's preview.
pub fn from_preview_page(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if uri.path().starts_with(PREFIX) || uri.path().starts_with("/api/") {
        return None;
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let path = referer.split("://").nth(1)?.split_once('/')?.1;
    let page = format!("/{path}");
    let (binding, port, _) = parse(&page)?;
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{PREFIX}{binding}/{port}{}{query}", uri.path()))
}

/// The root of a preview (deeper paths are served by the board's fallback route, which
/// calls [`proxy`] for everything under `/preview/`).
#[utoipa::path(
    get,
    path = "/preview/{binding}/{port}/",
    operation_id = "preview",
    tag = "terminals",
    description = "Redirects to the previews' own origin, which proxies HTTP and WebSocket \
        requests for `/preview/{binding}/{port}/...` to `port` on the binding's node, where a \
        terminal's processes listen (see a terminal's `ports` and `previewUrl`), without the \
        operator's credentials. Any method and path below the prefix.",
    params(
        ("binding" = String, Path, description = "Binding id"),
        ("port" = u16, Path, description = "A port a terminal of the binding listens on"),
    ),
    responses(
        (status = 307, description = "The same path on the previews' own origin (`--preview-listen`), which answers with what the previewed server answered",
            headers(("Location" = String, description = "The preview on its origin"))),
        super::http::Errors,
    )
)]
pub async fn root(axum::extract::State(app): axum::extract::State<App>, req: Request) -> Response {
    redirect(&app, &req)
}

/// Serves one preview request.
pub async fn proxy(app: App, req: Request) -> Response {
    match forward(app, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn forward(app: App, mut req: Request) -> ApiResult<Response> {
    let path = req.uri().path().to_string();
    let (binding_id, port, tail) =
        parse(&path).ok_or_else(|| ApiError::not_found("previews are /preview/BINDING/PORT/"))?;
    super::auth::authenticated(&app, req.headers())?;
    let Some(tail) = tail else {
        return Ok(Redirect::permanent(&format!("{path}/")).into_response());
    };
    let binding = app
        .store
        .binding(binding_id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no binding {binding_id:?}")))?;
    let served = app
        .store
        .list_terminals(Some(binding.id.clone()), None, false)
        .await?
        .iter()
        .any(|t| app.terminals.ports(&t.id).contains(&port));
    if !served {
        return Err(ApiError::not_found(format!(
            "nothing in the terminals of binding {binding_id} listens on port {port}"
        )));
    }
    let io = super::terminals::open_tunnel(&app, &binding.node_id, &binding.id, port)
        .await
        .ok_or_else(|| ApiError::unavailable(format!("node {} is offline", binding.node_id)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(bad_gateway)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let target = format!(
        "{tail}{}",
        parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    let mut out = hyper::Request::builder()
        .method(parts.method)
        .uri(target)
        .body(body)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    copy_headers(&parts.headers, out.headers_mut(), upgrade);
    strip_credentials(out.headers_mut());
    out.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&format!("127.0.0.1:{port}")).expect("valid host"),
    );
    let mut res = sender.send_request(out).await.map_err(bad_gateway)?;
    let prefix = format!("{PREFIX}{binding_id}/{port}");
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(bad_gateway("the server switched protocols unasked"));
        };
        let server_upgrade = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            if let (Ok(client), Ok(server)) = tokio::join!(client_upgrade, server_upgrade) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(server),
                )
                .await;
            }
        });
        let mut back = Response::new(Body::empty());
        *back.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        copy_headers(res.headers(), back.headers_mut(), true);
        return Ok(back);
    }
    let (parts, body) = res.into_parts();
    let mut back = Response::new(Body::new(body));
    *back.status_mut() = parts.status;
    copy_headers(&parts.headers, back.headers_mut(), false);
    keep_to_itself(back.headers_mut());
    if let Some(loc) = back
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|l| l.starts_with('/') && !l.starts_with("//"))
    {
        if let Ok(v) = HeaderValue::from_str(&format!("{prefix}{loc}")) {
            back.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(back)
}

fn bad_gateway(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        format!("the previewed server did not answer: {e}"),
    )
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap, upgrade: bool) {
    for (name, value) in from {
        if HOP_BY_HOP.contains(&name.as_str()) || name == header::HOST {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
    if upgrade {
        to.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        to.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
}

/// What a previewed server may not do to the gateway's site: set or clear its session
/// cookie (cookies are shared by every port of a host), clear the site's data, or widen a
/// service worker's scope.
fn keep_to_itself(headers: &mut HeaderMap) {
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            v.to_str()
                .map_or(true, |c| {
                    c.split('=').next().map(str::trim) == Some(super::auth::SESSION_COOKIE)
                })
                .not()
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
    headers.remove("clear-site-data");
    headers.remove("service-worker-allowed");
}

/// The operator's credentials stay with the gateway: no token, no board session cookie, no
/// CSRF token reach the previewed server.
fn strip_credentials(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(super::auth::CSRF_HEADER);
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split('=').next() != Some(super::auth::SESSION_COOKIE)
        })
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_paths_and_pages_absolute_requests() {
        assert_eq!(
            parse("/preview/b1/8000/x/y"),
            Some(("b1", 8000, Some("/x/y")))
        );
        assert_eq!(parse("/preview/b1/8000"), Some(("b1", 8000, None)));
        assert_eq!(parse("/preview/b1/notaport/"), None);
        let mut h = HeaderMap::new();
        h.insert(
            header::REFERER,
            HeaderValue::from_static("http://gw:7391/preview/b1/8000/index.html"),
        );
        let uri: Uri = "/assets/app.js?v=1".parse().unwrap();
        assert_eq!(
            from_preview_page(&h, &uri).as_deref(),
            Some("/preview/b1/8000/assets/app.js?v=1")
        );
        let api: Uri = "/api/nodes".parse().unwrap();
        assert_eq!(from_preview_page(&h, &api), None);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; viber_session=secret; b=2"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        strip_credentials(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert!(h.get(header::AUTHORIZATION).is_none());
        // A previewed server keeps its own cookies but cannot touch the gateway's.
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("app=1; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("viber_session=x; Path=/"),
        );
        h.insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
        keep_to_itself(&mut h);
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, vec!["app=1; Path=/"]);
        assert!(h.get("clear-site-data").is_none());
    }
}
