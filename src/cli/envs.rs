//! `viber env ...`: environments, their secrets, bindings and preparation.

use std::io::Read;

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::{field, print_table, seg, Client};

/// Fields of an environment given on the command line.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct EnvFields {
    /// github, git, local or manual.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Repository URL (github and git types).
    #[arg(long)]
    pub repo: Option<String>,
    #[arg(long)]
    pub branch: Option<String>,
    /// Directory on the node (local type).
    #[arg(long)]
    pub path: Option<String>,
    /// Working directory inside the repository.
    #[arg(long)]
    pub workdir: Option<String>,
    /// Setup script text.
    #[arg(long, conflicts_with = "setup_file")]
    pub setup: Option<String>,
    /// Read the setup script from a file.
    #[arg(long)]
    pub setup_file: Option<std::path::PathBuf>,
    #[arg(long)]
    pub description: Option<String>,
    /// Plain variable, NAME=VALUE (repeatable). Replaces all variables when given.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Default executor for threads.
    #[arg(long)]
    pub executor: Option<String>,
    /// How much the agent may do without asking: always-ask, agent-decides or always-execute.
    #[arg(long, value_parser = ["always-ask", "agent-decides", "always-execute"])]
    pub working_mode: Option<String>,
}

impl EnvFields {
    fn to_json(&self) -> anyhow::Result<Map<String, Value>> {
        let mut m = Map::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        put("type", &self.kind);
        put("repoUrl", &self.repo);
        put("repoBranch", &self.branch);
        put("localPath", &self.path);
        put("workingDir", &self.workdir);
        put("setupScript", &self.setup);
        put("description", &self.description);
        put("defaultExecutor", &self.executor);
        if let Some(f) = &self.setup_file {
            let script =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            m.insert("setupScript".into(), json!(script));
        }
        if let Some(mode) = &self.working_mode {
            m.insert("metadata".into(), json!({ "workingMode": mode }));
        }
        if !self.vars.is_empty() {
            let mut vars = Map::new();
            for kv in &self.vars {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--var {kv:?} is not NAME=VALUE"))?;
                vars.insert(k.into(), json!(v));
            }
            m.insert("vars".into(), Value::Object(vars));
        }
        Ok(m)
    }
}

/// `PUT /api/environments/:env` with a partial update.
async fn put(client: &Client, env: &str, body: &Value) -> anyhow::Result<Value> {
    client
        .send(
            client
                .request(Method::PUT, &format!("/api/environments/{}", seg(env)))
                .json(body),
        )
        .await
}

fn summary(env: &Value) -> Vec<String> {
    let bindings = env["bindings"].as_array().cloned().unwrap_or_default();
    let state = if bindings.is_empty() {
        "unmapped".to_string()
    } else {
        bindings
            .iter()
            .map(|b| format!("{}:{}", field(b, "nodeId"), field(b, "status")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let source = match env["type"].as_str() {
        Some("local") => field(env, "localPath"),
        Some("manual") => "-".into(),
        _ => field(env, "repoUrl"),
    };
    vec![
        field(env, "id"),
        field(env, "name"),
        field(env, "type"),
        source,
        state,
    ]
}

pub async fn create(client: &Client, name: &str, fields: &EnvFields) -> anyhow::Result<()> {
    let mut body = fields.to_json()?;
    body.insert("name".into(), json!(name));
    body.entry("type").or_insert(json!("manual"));
    let env = client
        .post("/api/environments", &Value::Object(body))
        .await?;
    print_warnings(&env);
    println!(
        "created environment {} ({})",
        field(&env, "name"),
        field(&env, "id")
    );
    Ok(())
}

fn print_warnings(env: &Value) {
    for w in env["warnings"].as_array().into_iter().flatten() {
        eprintln!("warning: {}", w.as_str().unwrap_or(""));
    }
}

pub async fn list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let v = client.get("/api/environments").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["environments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(summary)
        .collect();
    if rows.is_empty() {
        println!("no environments; create one with `viber env create NAME --type git --repo URL`");
    } else {
        print_table(&["ID", "NAME", "TYPE", "SOURCE", "BINDINGS"], &rows);
    }
    Ok(())
}

pub async fn show(client: &Client, env: &str) -> anyhow::Result<()> {
    let v = client
        .get(&format!("/api/environments/{}", seg(env)))
        .await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

pub async fn update(
    client: &Client,
    env: &str,
    fields: &EnvFields,
    name: Option<String>,
) -> anyhow::Result<()> {
    let mut body = fields.to_json()?;
    if let Some(n) = name {
        body.insert("name".into(), json!(n));
    }
    if body.is_empty() {
        bail!("nothing to update: give at least one option");
    }
    let v = put(client, env, &Value::Object(body)).await?;
    print_warnings(&v);
    println!(
        "updated {} (version {})",
        field(&v, "name"),
        field(&v, "version")
    );
    Ok(())
}

pub async fn remove(client: &Client, env: &str) -> anyhow::Result<()> {
    client
        .delete(&format!("/api/environments/{}", seg(env)))
        .await?;
    println!("deleted {env}");
    Ok(())
}

pub async fn validate(client: &Client, env: &str) -> anyhow::Result<bool> {
    let v = client
        .post(
            &format!("/api/environments/{}/validate", seg(env)),
            &json!({}),
        )
        .await?;
    for c in v["checks"].as_array().into_iter().flatten() {
        let mark = if c["ok"] == true { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", field(c, "name"), field(c, "message"));
    }
    Ok(v["ok"] == true)
}

pub async fn secret_set(client: &Client, env: &str, name: &str, scope: &str) -> anyhow::Result<()> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("enter the value of {name}, then Ctrl-D:");
    }
    let mut value = String::new();
    std::io::stdin().read_to_string(&mut value)?;
    let value = value.strip_suffix('\n').unwrap_or(&value).to_string();
    if value.is_empty() {
        bail!("empty value on stdin");
    }
    let body = json!({ "secrets": { name: { "value": value, "scope": scope } } });
    let v = put(client, env, &body).await?;
    print_warnings(&v);
    println!("secret {name} set on {} ({scope})", field(&v, "name"));
    Ok(())
}

pub async fn secret_rm(client: &Client, env: &str, name: &str) -> anyhow::Result<()> {
    let body = json!({ "secrets": { name: null } });
    put(client, env, &body).await?;
    println!("secret {name} removed");
    Ok(())
}

pub async fn bind(
    client: &Client,
    env: &str,
    node: &str,
    existing_path: Option<String>,
) -> anyhow::Result<()> {
    let mut body = json!({ "nodeId": node });
    if let Some(p) = existing_path {
        body["strategy"] = json!("existing-path");
        body["path"] = json!(p);
    }
    let b = client
        .post(&format!("/api/environments/{}/bindings", seg(env)), &body)
        .await?;
    println!(
        "bound to {} ({}); status {}",
        field(&b, "nodeId"),
        field(&b, "id"),
        field(&b, "status")
    );
    wait_prepared(client, env, &field(&b, "id")).await
}

pub async fn prepare(
    client: &Client,
    env: &str,
    node: Option<String>,
    force: bool,
) -> anyhow::Result<()> {
    let v = client
        .get(&format!("/api/environments/{}/bindings", seg(env)))
        .await?;
    let bindings = v["bindings"].as_array().cloned().unwrap_or_default();
    let b = match &node {
        Some(n) => bindings.iter().find(|b| b["nodeId"] == n.as_str()),
        None if bindings.len() == 1 => bindings.first(),
        None => bail!(
            "the environment has {} bindings; pick one with --node",
            bindings.len()
        ),
    }
    .with_context(|| format!("no binding of {env} on that node; bind it with `viber env bind`"))?;
    let id = field(b, "id");
    client
        .post(
            &format!("/api/environments/{}/bindings/{id}/prepare", seg(env)),
            &json!({ "force": force }),
        )
        .await?;
    wait_prepared(client, env, &id).await
}

/// Prints setup output until the binding is ready or failed.
async fn wait_prepared(client: &Client, env: &str, binding: &str) -> anyhow::Result<()> {
    let mut after = 0i64;
    loop {
        let logs = client
            .get(&format!(
                "/api/environments/{}/bindings/{binding}/logs?after={after}",
                seg(env)
            ))
            .await?;
        for l in logs["logs"].as_array().into_iter().flatten() {
            print!("{}", l["text"].as_str().unwrap_or(""));
            after = l["seq"].as_i64().unwrap_or(after);
        }
        let v = client
            .get(&format!("/api/environments/{}/bindings", seg(env)))
            .await?;
        let b = v["bindings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["id"] == binding)
            .cloned()
            .unwrap_or(Value::Null);
        match b["status"].as_str() {
            Some("ready") | Some("stale") => {
                println!("ready: {}", field(&b, "resolvedWorkingDir"));
                return Ok(());
            }
            Some("error") => bail!(
                "prepare failed at step {}: {}",
                field(&b, "step"),
                field(&b, "lastError")
            ),
            Some("pending") if b["nodeOnline"] == false => {
                println!("the node is offline; the binding prepares when it connects");
                return Ok(());
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
        }
    }
}
