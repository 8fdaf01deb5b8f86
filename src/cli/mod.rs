//! The command line: `args` (every clap type), `roles` (starting a gateway, a node or both),
//! `dispatch` (routing client commands), and the client subcommands (`envs`, `nodes`,
//! `tasks`, `threads`) that talk to a gateway over the same REST API the board uses, typed
//! with `protocol::api` views. Client code never reaches into the gateway's or node's
//! internals; `roles` only calls their public `start`/`run` entry points.

pub mod args;
pub mod audit;
pub mod changes;
pub mod config;
pub mod dispatch;
pub mod envs;
pub mod jobs;
pub mod nodes;
pub mod roles;
pub mod service;
pub mod tasks;
pub mod terminals;
pub mod threads;
pub mod tui;
pub mod usage;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use crate::protocol::api::ErrorBody;

pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:7391";

/// Options every client subcommand takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Gateway URL.
    #[arg(long, env = "VIBER_GATEWAY", default_value = DEFAULT_GATEWAY)]
    pub gateway: String,
    /// Operator token (default: the local gateway's <data-dir>/admin-token).
    #[arg(long, env = "VIBER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory holding the admin token file.
    #[arg(long, env = "VIBER_HOME")]
    pub data_dir: Option<PathBuf>,
}

/// The default data directory: `$VIBER_HOME`, else `~/.openviber`.
pub fn default_data_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("VIBER_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".openviber")
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        crate::tls::init();
        let token = match &args.token {
            Some(t) => t.clone(),
            None => read_admin_token(&args.data_dir.clone().unwrap_or_else(default_data_dir))?,
        };
        Ok(Client {
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?,
            base: args.gateway.trim_end_matches('/').to_string(),
            token,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The operator token, for requests not made through [`Self::request`] (WebSockets).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
    }

    /// Sends a request and deserializes its JSON body (an empty body reads as `null`),
    /// turning API errors into readable errors.
    pub async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if !status.is_success() {
            bail!("{}", api_error_message(status, &bytes));
        }
        let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(body).context("gateway sent invalid JSON")
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// A POST whose handler reads no body (`stop`, `validate`).
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path)).await
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    /// A DELETE; whatever the gateway answers on success is ignored.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let _: IgnoredAny = self.send(self.request(Method::DELETE, path)).await?;
        Ok(())
    }
}

/// `message (HTTP 404 not_found)` from an [`ErrorBody`].
pub fn api_error_message(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => format!(
            "{} (HTTP {} {})",
            error.message,
            status.as_u16(),
            error.code
        ),
        Err(_) => format!("gateway answered HTTP {status}"),
    }
}

fn read_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-token");
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_string())
        .with_context(|| {
            format!(
                "no operator token: pass --token or VIBER_TOKEN, or run on the gateway's machine ({} not readable)",
                path.display()
            )
        })
}

/// Prints rows as aligned columns.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// Percent-encodes one URL path segment (names may contain spaces).
pub fn seg(s: &str) -> String {
    crate::secrets::redact::url_encode(s)
}

/// An optional value as a table cell: the value, or `-`.
pub fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_message_status_and_code() {
        let body = br#"{"error":{"code":"not_found","message":"no task \"x\""}}"#;
        assert_eq!(
            api_error_message(StatusCode::NOT_FOUND, body),
            "no task \"x\" (HTTP 404 not_found)"
        );
        assert_eq!(
            api_error_message(StatusCode::BAD_GATEWAY, b"<html>"),
            "gateway answered HTTP 502 Bad Gateway"
        );
    }
}
