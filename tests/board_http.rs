//! The board over plain HTTP: session cookies, CSRF, and how the SPA is served.

mod common;

use common::*;
use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Sends a request with the given cookie and optional CSRF header (no bearer token).
async fn with_cookie(
    gw: &Gateway,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = gw
        .http
        .request(method, format!("{}{path}", gw.url))
        .header(COOKIE, cookie);
    if let Some(c) = csrf {
        req = req.header("X-CSRF-Token", c);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let v = res.json().await.unwrap_or(Value::Null);
    (status, v)
}

async fn login(gw: &Gateway, token: &str) -> (StatusCode, Option<String>, Value) {
    let res = gw
        .http
        .post(format!("{}/api/session", gw.url))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let cookie = res
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_string());
    (status, cookie, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_token_becomes_an_http_only_strict_cookie_and_writes_need_the_csrf_token() {
    let dir = TempDir::new("session");
    let mut gw = Gateway::start(dir.path(), 0, &[]);

    // A wrong token gets no cookie.
    let (status, cookie, body) = login(&gw, "vbr_adm_wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(cookie.is_none());
    // Malformed bodies are refused clearly.
    let res = gw
        .http
        .post(format!("{}/api/session", gw.url))
        .header(CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let (status, cookie, body) = login(&gw, &gw.token).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let set_cookie = cookie.expect("Set-Cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(&gw.token),
        "the cookie is not the token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let csrf = body["csrfToken"].as_str().unwrap().to_string();

    // Reads work with the cookie alone; the session reports its CSRF token.
    let (status, nodes) = with_cookie(&gw, Method::GET, "/api/nodes", &cookie, None, None).await;
    assert_eq!(status, StatusCode::OK, "{nodes}");
    let (_, s) = with_cookie(&gw, Method::GET, "/api/session", &cookie, None, None).await;
    assert_eq!(s["csrfToken"], csrf);

    // Writes need the CSRF header, and only the right one.
    let enroll = json!({"name": "n1"});
    for bad in [None, Some("wrong"), Some("")] {
        let (status, body) = with_cookie(
            &gw,
            Method::POST,
            "/api/nodes/enroll",
            &cookie,
            bad,
            Some(enroll.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad:?}: {body}");
        assert_eq!(body["error"]["code"], "csrf");
    }
    let (status, body) = with_cookie(
        &gw,
        Method::POST,
        "/api/nodes/enroll",
        &cookie,
        Some(&csrf),
        Some(enroll.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A made-up cookie is refused; bearer clients need no CSRF header.
    let (status, _) = with_cookie(
        &gw,
        Method::GET,
        "/api/nodes",
        "viber_session=vbr_ses_forged",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = gw.post("/api/nodes/enroll", json!({"name": "n2"})).await;
    assert_eq!(status, 201);

    // The session survives a gateway restart (only its hash is stored) ...
    assert!(gw.proc.terminate().success());
    let port = gw.port;
    drop(gw);
    let gw = Gateway::start(dir.path(), port, &[]);
    let (status, _) = with_cookie(&gw, Method::GET, "/api/nodes", &cookie, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let db = std::fs::read(dir.join("viber.db")).unwrap();
    let id = cookie.trim_start_matches("viber_session=");
    assert!(
        !db.windows(id.len()).any(|w| w == id.as_bytes()),
        "the session id is stored in clear"
    );

    // ... and ends with logout (which is a write: CSRF-checked).
    let (status, _) = with_cookie(&gw, Method::DELETE, "/api/session", &cookie, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let res = gw
        .http
        .delete(format!("{}/api/session", gw.url))
        .header(COOKIE, &cookie)
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _) = with_cookie(&gw, Method::GET, "/api/nodes", &cookie, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_board_is_served_with_types_cache_headers_and_spa_fallback() {
    let dir = TempDir::new("board-http");
    let gw = Gateway::start(dir.path(), 0, &[]);
    let get = |path: &str| {
        let url = format!("{}{path}", gw.url);
        async move { reqwest::get(url).await.unwrap() }
    };

    let index = get("/").await;
    assert_eq!(index.status(), 200);
    let h = index.headers().clone();
    assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let html = index.text().await.unwrap();

    // Client-side routes get the same page.
    for route in ["/threads/thr_x", "/environments/new", "/nodes"] {
        let res = get(route).await;
        assert_eq!(res.status(), 200, "{route}");
        assert_eq!(res.text().await.unwrap(), html, "{route}");
    }
    // A missing file is a 404, not the page.
    assert_eq!(get("/assets/missing-abc123.js").await.status(), 404);
    // API paths, even unknown ones, need credentials first.
    assert_eq!(get("/api/nope").await.status(), 401);

    if std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/dist/index.html"
    ))
    .exists()
    {
        // The built board: its hashed script is served as JavaScript, cached for good.
        let script = html
            .split("src=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("index.html loads a script");
        let res = get(script).await;
        assert_eq!(res.status(), 200, "{script}");
        assert!(res.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript"));
        assert_eq!(
            res.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
    } else {
        assert!(html.contains("built without the board"), "{html}");
    }
}
