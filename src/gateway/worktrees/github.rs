//! Opening a pull request for a thread's branch through GitHub's REST API
//! (`POST /repos/{owner}/{repo}/pulls`).
//!
//! The repository is the environment's (`github` environments), or `metadata.githubRepo`
//! (`owner/name`) for a git environment hosted on GitHub Enterprise or mirrored there. The
//! API is `metadata.githubApiUrl`, else the gateway's `--github-api-url`. The token is the
//! environment's `GITHUB_TOKEN` secret, else its `GIT_TOKEN`. GitHub's answer to a refusal
//! is shown as it came, with the token redacted.

use std::time::Duration;

use serde::Deserialize;

use crate::gateway::error::{ApiError, ApiResult};
use crate::gateway::App;
use crate::protocol::api::{PullRequestRequest, PullRequestView};
use crate::secrets::Redactor;
use crate::store::{EnvironmentRecord, ThreadRecord, WorktreeRecord};

const TIMEOUT: Duration = Duration::from_secs(30);
/// The most of GitHub's error body shown.
const ERROR_SHOWN: usize = 2000;

/// Where the environment's pull requests go: the API base and `owner/name`.
fn repository(app: &App, env: &EnvironmentRecord) -> ApiResult<(String, String)> {
    let meta: serde_json::Value = serde_json::from_str(&env.metadata).unwrap_or_default();
    let api = meta["githubApiUrl"]
        .as_str()
        .unwrap_or(&app.config.github_api_url)
        .trim_end_matches('/')
        .to_string();
    let repo = match (meta["githubRepo"].as_str(), &env.repo_org, &env.repo_name) {
        (Some(r), _, _) => r.to_string(),
        (None, Some(org), Some(name)) => format!("{org}/{name}"),
        _ => {
            return Err(ApiError::conflict(
                "pull requests need a github environment, or metadata.githubRepo (owner/name)",
            ))
        }
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((o, n)) if valid(o) && valid(n) => Ok((api, repo)),
        _ => Err(ApiError::validation(format!(
            "githubRepo {repo:?} must be owner/name"
        ))),
    }
}

#[derive(Deserialize)]
struct Created {
    number: u64,
    html_url: String,
    #[serde(default)]
    draft: bool,
}

#[derive(Deserialize)]
struct Repo {
    default_branch: String,
}

/// Opens the pull request of the thread's branch (already pushed) into the environment's
/// branch (its repository's default branch when it names none).
pub async fn pull_request(
    app: &App,
    env: &EnvironmentRecord,
    thread: &ThreadRecord,
    wt: &WorktreeRecord,
    req: PullRequestRequest,
) -> ApiResult<PullRequestView> {
    let (api, repo) = repository(app, env)?;
    let secrets = crate::gateway::envs::unseal_secrets(app, &env.id, true).await?;
    let find = |n: &str| secrets.iter().find(|s| s.name == n && s.file.is_none());
    let token = find("GITHUB_TOKEN")
        .or_else(|| find("GIT_TOKEN"))
        .map(|s| s.value.clone())
        .ok_or_else(|| {
            ApiError::conflict("the environment has no GITHUB_TOKEN or GIT_TOKEN secret")
        })?;
    let redactor = Redactor::new(&[token.as_str()]);
    crate::tls::init();
    let http = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("viber/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(anyhow::Error::from)?;
    let call = |method: reqwest::Method, url: String| {
        http.request(method, url)
            .bearer_auth(&token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
    };
    let base = match &env.repo_branch {
        Some(b) if !b.is_empty() => b.clone(),
        _ => {
            let res = call(reqwest::Method::GET, format!("{api}/repos/{repo}")).send();
            let r: Repo = answer(res.await, &redactor).await?;
            r.default_branch
        }
    };
    let link = format!("{}/threads/{}", app.base_url, thread.id);
    let body = match req.body {
        Some(b) => format!("{b}\n\n---\nFrom viber thread: {link}"),
        None => format!(
            "{}\n\nOpened from viber thread [{}]({link}).",
            thread.title, thread.id
        ),
    };
    let payload = serde_json::json!({
        "title": req.title.unwrap_or_else(|| thread.title.clone()),
        "head": wt.branch,
        "base": base,
        "body": body,
        "draft": req.draft,
    });
    let res = call(reqwest::Method::POST, format!("{api}/repos/{repo}/pulls"))
        .json(&payload)
        .send();
    let created: Created = answer(res.await, &redactor).await?;
    app.store
        .set_worktree_pr(
            thread.id.clone(),
            created.html_url.clone(),
            created.number as i64,
        )
        .await?;
    Ok(PullRequestView {
        number: created.number,
        url: created.html_url,
        head: wt.branch.clone(),
        base,
        draft: created.draft,
    })
}

/// GitHub's answer as `T`, or its refusal as a 502 in its own words.
async fn answer<T: serde::de::DeserializeOwned>(
    res: reqwest::Result<reqwest::Response>,
    redactor: &Redactor,
) -> ApiResult<T> {
    let gateway_error = |m: String| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "github_failed",
            redactor.redact_str(&m),
        )
    };
    let res = res.map_err(|e| gateway_error(format!("GitHub's API: {e}")))?;
    let status = res.status();
    let text = res
        .text()
        .await
        .map_err(|e| gateway_error(format!("GitHub's API: {e}")))?;
    if !status.is_success() {
        let shown: String = text.chars().take(ERROR_SHOWN).collect();
        return Err(gateway_error(format!("GitHub answered {status}: {shown}")));
    }
    serde_json::from_str(&text)
        .map_err(|e| gateway_error(format!("GitHub's answer is not what was expected: {e}")))
}
