//! Sending one model call: retries and backoff.
//!
//! Owns: the HTTP request of one model call, retried on network errors, 429 and 5xx with
//! exponential backoff (honouring `retry-after`, capped), and the messages that end a run
//! when the provider refuses the key or answers with another error.
//!
//! Must not touch: what the request says (the wire API writes the body, URL and headers), the
//! response stream (`stream.rs`). Error bodies are redacted before they become a message.

use std::time::Duration;

use serde_json::Value;

use super::provider::Provider;
use crate::node::executor::Run;

/// Attempts per model call on 429 and 5xx.
const MAX_ATTEMPTS: u32 = 5;
/// The longest wait between two attempts, whatever `retry-after` says.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Sends one model request, retrying 429 and 5xx with backoff (honouring `retry-after`).
/// Auth failures end the run with a message naming the provider.
pub(super) async fn request(
    http: &reqwest::Client,
    p: &Provider,
    body: &Value,
    run: &Run<'_>,
) -> Result<reqwest::Response, String> {
    let wire = p.api.wire();
    let url = wire.url(&p.base_url);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let req = wire.authorize(http.post(&url).json(body), p.api_key.as_deref());
        let res = match req.send().await {
            Ok(r) => r,
            Err(e) if attempt < MAX_ATTEMPTS => {
                tracing::warn!(provider = %p.base_url, error = %e, "model request failed; retrying");
                tokio::time::sleep(backoff(attempt, None)).await;
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "cannot reach the model provider at {}: {e}",
                    p.base_url
                ))
            }
        };
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let retry_after = retry_after(&res);
        let text = res.text().await.unwrap_or_default();
        let snippet: String = run.emit.redact(&text).chars().take(300).collect();
        match status.as_u16() {
            401 | 403 => {
                return Err(format!(
                    "the model provider at {} refused the API key (HTTP {}): {snippet}",
                    p.base_url,
                    status.as_u16()
                ))
            }
            429 | 500..=599 if attempt < MAX_ATTEMPTS => {
                let wait = backoff(attempt, retry_after);
                tracing::warn!(provider = %p.base_url, status = status.as_u16(), wait_ms = wait.as_millis() as u64, "model provider busy; retrying");
                tokio::time::sleep(wait).await;
            }
            _ => {
                return Err(format!(
                    "the model provider at {} answered HTTP {}: {snippet}",
                    p.base_url,
                    status.as_u16()
                ))
            }
        }
    }
}

/// The `retry-after` header, in seconds.
fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// A `retry-after` value in seconds, at most [`MAX_WAIT`]. None for anything else
/// (negative, not a number, an HTTP date): then the backoff decides.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs = v.trim().parse::<f64>().ok()?;
    // Duration::from_secs_f64 panics on a negative, NaN or overflowing value.
    (secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}

fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| Duration::from_millis(500 * (1 << attempt.min(5))))
        .min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_retry_after_value_is_a_bounded_wait() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("1e30"), Some(MAX_WAIT));
        assert_eq!(parse_retry_after("inf"), Some(MAX_WAIT));
        for bad in ["-1", "NaN", "-inf", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad), None, "{bad}");
        }
        assert_eq!(backoff(1, parse_retry_after("-1")), Duration::from_secs(1));
    }
}
