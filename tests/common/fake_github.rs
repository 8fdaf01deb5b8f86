//! A scripted stand-in for GitHub's REST API (`POST /repos/{owner}/{repo}/pulls`, `GET
//! /repos/{owner}/{repo}`), answering like GitHub: it checks the method, the path, the
//! `Authorization: Bearer` token, the API version headers and the body, and records every
//! request.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

#[derive(Default)]
struct Inner {
    token: String,
    repo: String,
    requests: Mutex<Vec<(String, HeaderMap, Value)>>,
}

pub struct FakeGitHub {
    inner: Arc<Inner>,
    pub base_url: String,
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest"})),
    )
        .into_response()
}

/// Why GitHub would refuse the request, if it would.
fn refusal(inner: &Inner, h: &HeaderMap) -> Option<Response> {
    let auth = h.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {}", inner.token)) {
        return Some(refuse(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if h.get("accept").and_then(|v| v.to_str().ok()) != Some("application/vnd.github+json")
        || h.get("x-github-api-version").is_none()
        || h.get("user-agent").is_none()
    {
        return Some(refuse(
            StatusCode::BAD_REQUEST,
            "missing GitHub API headers",
        ));
    }
    None
}

async fn repo_info(
    State(inner): State<Arc<Inner>>,
    Path((owner, name)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    inner.requests.lock().unwrap().push((
        format!("GET /repos/{owner}/{name}"),
        h.clone(),
        Value::Null,
    ));
    if let Some(r) = refusal(&inner, &h) {
        return r;
    }
    if format!("{owner}/{name}") != inner.repo {
        return refuse(StatusCode::NOT_FOUND, "Not Found");
    }
    Json(json!({"full_name": inner.repo, "default_branch": "main"})).into_response()
}

async fn pulls(
    State(inner): State<Arc<Inner>>,
    Path((owner, name)): Path<(String, String)>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    inner.requests.lock().unwrap().push((
        format!("POST /repos/{owner}/{name}/pulls"),
        h.clone(),
        body.clone(),
    ));
    if let Some(r) = refusal(&inner, &h) {
        return r;
    }
    if format!("{owner}/{name}") != inner.repo {
        return refuse(StatusCode::NOT_FOUND, "Not Found");
    }
    let (Some(title), Some(head), Some(base)) = (
        body["title"].as_str(),
        body["head"].as_str(),
        body["base"].as_str(),
    ) else {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    };
    let number = inner.requests.lock().unwrap().len() as u64;
    (
        StatusCode::CREATED,
        Json(json!({
            "number": number,
            "html_url": format!("https://github.example/{}/pull/{number}", inner.repo),
            "state": "open",
            "title": title,
            "body": body["body"],
            "draft": body["draft"].as_bool().unwrap_or(false),
            "head": {"ref": head},
            "base": {"ref": base},
        })),
    )
        .into_response()
}

impl FakeGitHub {
    /// Serves repository `owner/name` to `token`.
    pub async fn start(repo: &str, token: &str) -> FakeGitHub {
        let inner = Arc::new(Inner {
            token: token.to_string(),
            repo: repo.to_string(),
            ..Default::default()
        });
        let app = Router::new()
            .route("/repos/{owner}/{name}", get(repo_info))
            .route("/repos/{owner}/{name}/pulls", post(pulls))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeGitHub {
            inner,
            base_url: format!("http://{addr}"),
        }
    }

    /// (method and path, body) of every request, in order.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.inner
            .requests
            .lock()
            .unwrap()
            .iter()
            .map(|(p, _, b)| (p.clone(), b.clone()))
            .collect()
    }
}
