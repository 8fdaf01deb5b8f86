//! `viber env ...`: environments, their secrets, bindings and preparation.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context};
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::{or_dash, print_table, seg, Client};
use crate::protocol::api::{
    BindRequest, BindingList, BindingPhase, BindingView, EnvironmentInput, EnvironmentList,
    EnvironmentView, LogList, NetworkAccessInput, PrepareRequest, SecretInput, ValidationResult,
};
use crate::protocol::{BindingStrategy, EnvKind, SecretScope};

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
    /// Outbound network for the environment's tasks: on, off (loopback only) or allowlist.
    #[arg(long, value_parser = ["on", "off", "allowlist"])]
    pub network: Option<String>,
    /// A host tasks may reach under `--network allowlist` (example.com, *.example.com,
    /// with an optional :port; repeatable). Replaces the whole list when given.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// Run setup and tasks in containers of this image (podman or docker on the node);
    /// an empty value goes back to the node's own system.
    #[arg(long)]
    pub image: Option<String>,
    /// Keep a volume for the container's home directory between runs (true or false).
    #[arg(long)]
    pub persist_volume: Option<bool>,
}

impl EnvFields {
    /// The fields given, as a partial environment (absent ones keep their value).
    fn to_input(&self) -> anyhow::Result<EnvironmentInput> {
        let mut input = EnvironmentInput {
            kind: self.kind.clone(),
            repo_url: self.repo.clone(),
            repo_branch: self.branch.clone(),
            local_path: self.path.clone(),
            working_dir: self.workdir.clone(),
            setup_script: self.setup.clone(),
            description: self.description.clone(),
            default_executor: self.executor.clone(),
            network_access: self
                .network
                .as_deref()
                .map(|m| m.parse().map(NetworkAccessInput::Mode))
                .transpose()?,
            network_allowlist: (!self.allow_hosts.is_empty()).then(|| self.allow_hosts.clone()),
            container_image: self.image.clone(),
            persist_volume: self.persist_volume,
            ..EnvironmentInput::default()
        };
        if let Some(f) = &self.setup_file {
            let script =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            input.setup_script = Some(script);
        }
        if let Some(mode) = &self.working_mode {
            let mut metadata = Map::new();
            metadata.insert("workingMode".into(), Value::String(mode.clone()));
            input.metadata = Some(Value::Object(metadata));
        }
        if !self.vars.is_empty() {
            let mut vars = BTreeMap::new();
            for kv in &self.vars {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--var {kv:?} is not NAME=VALUE"))?;
                vars.insert(k.to_string(), v.to_string());
            }
            input.vars = Some(vars);
        }
        Ok(input)
    }
}

/// `PUT /api/environments/:env` with a partial update.
async fn put(
    client: &Client,
    env: &str,
    body: &EnvironmentInput,
) -> anyhow::Result<EnvironmentView> {
    client
        .put(&format!("/api/environments/{}", seg(env)), body)
        .await
}

fn summary(env: &EnvironmentView) -> Vec<String> {
    let state = if env.bindings.is_empty() {
        "unmapped".to_string()
    } else {
        env.bindings
            .iter()
            .map(|b| format!("{}:{}", b.node_id, b.status))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let source = match env.kind {
        EnvKind::Local => or_dash(env.local_path.as_deref()),
        EnvKind::Manual => "-".into(),
        _ => or_dash(env.repo_url.as_deref()),
    };
    vec![
        env.id.clone(),
        env.name.clone(),
        env.kind.to_string(),
        source,
        state,
    ]
}

pub async fn create(client: &Client, name: &str, fields: &EnvFields) -> anyhow::Result<()> {
    let mut body = fields.to_input()?;
    body.name = Some(name.to_string());
    body.kind.get_or_insert_with(|| "manual".into());
    let env: EnvironmentView = client.post("/api/environments", &body).await?;
    println!("created environment {} ({})", env.name, env.id);
    Ok(())
}

pub async fn list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let v: EnvironmentList = client.get("/api/environments").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v.environments.iter().map(summary).collect();
    if rows.is_empty() {
        println!("no environments; create one with `viber env create NAME --type git --repo URL`");
    } else {
        print_table(&["ID", "NAME", "TYPE", "SOURCE", "BINDINGS"], &rows);
    }
    Ok(())
}

pub async fn show(client: &Client, env: &str) -> anyhow::Result<()> {
    let v: EnvironmentView = client
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
    let mut body = fields.to_input()?;
    if name.is_some() {
        body.name = name;
    }
    if body == EnvironmentInput::default() {
        bail!("nothing to update: give at least one option");
    }
    let v = put(client, env, &body).await?;
    println!("updated {} (version {})", v.name, v.version);
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
    let v: ValidationResult = client
        .post_empty(&format!("/api/environments/{}/validate", seg(env)))
        .await?;
    for c in &v.checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", c.name, c.message);
    }
    Ok(v.ok)
}

/// A secret's value from standard input (never argv). A variable loses one trailing
/// newline (`echo x |`); a file keeps its bytes as they are (a key file needs its last
/// newline).
pub fn secret_from_stdin(name: &str, as_file: bool) -> anyhow::Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("enter the value of {name}, then Ctrl-D:");
    }
    let mut value = String::new();
    std::io::stdin().read_to_string(&mut value)?;
    if !as_file {
        value.truncate(value.strip_suffix('\n').unwrap_or(&value).len());
    }
    if value.is_empty() {
        bail!("empty value on stdin");
    }
    Ok(value)
}

pub async fn secret_set(
    client: &Client,
    env: &str,
    name: &str,
    scope: &str,
    file: Option<String>,
) -> anyhow::Result<()> {
    let scope: SecretScope = scope.parse()?;
    let value = secret_from_stdin(name, file.is_some())?;
    let secret = SecretInput::Scoped {
        value,
        scope: Some(scope),
        file,
    };
    let body = EnvironmentInput {
        secrets: Some(BTreeMap::from([(name.to_string(), Some(secret))])),
        ..EnvironmentInput::default()
    };
    let v = put(client, env, &body).await?;
    println!("secret {name} set on {} ({scope})", v.name);
    Ok(())
}

pub async fn secret_rm(client: &Client, env: &str, name: &str) -> anyhow::Result<()> {
    let body = EnvironmentInput {
        secrets: Some(BTreeMap::from([(name.to_string(), None)])),
        ..EnvironmentInput::default()
    };
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
    let body = BindRequest {
        node_id: node.to_string(),
        strategy: existing_path
            .as_ref()
            .map(|_| BindingStrategy::ExistingPath),
        path: existing_path,
    };
    let b: BindingView = client
        .post(&format!("/api/environments/{}/bindings", seg(env)), &body)
        .await?;
    println!("bound to {} ({}); status {}", b.node_id, b.id, b.status);
    wait_prepared(client, env, &b.id).await
}

pub async fn prepare(
    client: &Client,
    env: &str,
    node: Option<String>,
    force: bool,
) -> anyhow::Result<()> {
    let v: BindingList = client
        .get(&format!("/api/environments/{}/bindings", seg(env)))
        .await?;
    let bindings = v.bindings;
    let b = match &node {
        Some(n) => bindings.iter().find(|b| &b.node_id == n),
        None if bindings.len() == 1 => bindings.first(),
        None => bail!(
            "the environment has {} bindings; pick one with --node",
            bindings.len()
        ),
    }
    .with_context(|| format!("no binding of {env} on that node; bind it with `viber env bind`"))?;
    let id = &b.id;
    let _: IgnoredAny = client
        .post(
            &format!("/api/environments/{}/bindings/{id}/prepare", seg(env)),
            &PrepareRequest { force },
        )
        .await?;
    wait_prepared(client, env, id).await
}

/// Prints setup output until the binding is ready or failed.
async fn wait_prepared(client: &Client, env: &str, binding: &str) -> anyhow::Result<()> {
    let mut after = 0i64;
    loop {
        // The status first, then the logs: a node's setup lines are stored before the state
        // that ends its prepare, so once the status says so, the logs read next are complete.
        let v: BindingList = client
            .get(&format!("/api/environments/{}/bindings", seg(env)))
            .await?;
        let logs: LogList = client
            .get(&format!(
                "/api/environments/{}/bindings/{binding}/logs?after={after}",
                seg(env)
            ))
            .await?;
        let printed = !logs.logs.is_empty();
        for l in logs.logs {
            print!("{}", l.text);
            after = l.seq;
        }
        let b = v.bindings.into_iter().find(|b| b.id == binding);
        let ended = b.as_ref().is_some_and(|b| {
            matches!(
                b.status,
                BindingPhase::Ready | BindingPhase::Stale | BindingPhase::Error
            )
        });
        if ended && printed {
            // Logs come in pages: read until there are no more before saying it ended.
            continue;
        }
        match b {
            Some(b) if matches!(b.status, BindingPhase::Ready | BindingPhase::Stale) => {
                println!("ready: {}", or_dash(b.resolved_working_dir));
                return Ok(());
            }
            Some(b) if b.status == BindingPhase::Error => bail!(
                "prepare failed at step {}: {}",
                or_dash(b.step),
                or_dash(b.last_error)
            ),
            Some(b) if b.status == BindingPhase::Pending && !b.node_online => {
                println!("the node is offline; the binding prepares when it connects");
                return Ok(());
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(300)).await,
        }
    }
}
