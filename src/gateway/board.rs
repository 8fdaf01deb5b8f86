//! Serves the board: the built single-page app embedded from `assets/dist`, or a placeholder
//! page that says how to build it when the binary was compiled without it.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use rust_embed::RustEmbed;

use super::App;

#[derive(RustEmbed)]
#[folder = "assets/dist/"]
#[allow_missing = true]
struct Dist;

const PLACEHOLDER: &str = include_str!("../../assets/placeholder.html");

/// Headers on every board response: no framing, no MIME sniffing, no referrer (the login URL
/// carries a token once), and scripts only from the gateway itself.
const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'self'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

pub fn router() -> Router<App> {
    Router::new().fallback(serve)
}

/// Everything no other route takes: the board's files, and previews (redirected to their
/// own origin).
async fn serve(State(app): State<App>, req: Request) -> Response {
    if req.uri().path().starts_with(super::preview::PREFIX) {
        return super::preview::redirect(&app, &req);
    }
    let mut res = file_or_index(req.uri());
    let headers = res.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    res
}

fn file_or_index(uri: &Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if let Some(file) = Dist::get(path).filter(|_| !path.is_empty()) {
        let mime = file.metadata.mimetype().to_string();
        // Hashed build outputs can be cached forever; everything else is revalidated.
        let cache = if path.starts_with("assets/") {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        return (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, cache.to_string()),
            ],
            file.data,
        )
            .into_response();
    }
    // A path with an extension that is not in the bundle is a missing file, not a route.
    if path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
    {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    match Dist::get("index.html") {
        Some(index) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            index.data,
        )
            .into_response(),
        None => Html(PLACEHOLDER).into_response(),
    }
}
