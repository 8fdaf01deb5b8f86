//! Routing a parsed client subcommand ([`super::args`]) to the function that carries it out
//! (`cli::{nodes,tasks,envs,threads}`), and the exit code it ends with.
//!
//! Owns: the mapping from subcommand to call, and exit codes (a task's outcome for `task run` and
//! `thread new/send`, failure when `env validate` finds a problem). Must not touch: what a command
//! sends or prints (that is in the command modules), flag definitions, or the long-running roles
//! (those are in [`super::roles`]).

use std::process::ExitCode;

use clap::CommandFactory;

use super::args::{
    Cli, ConfigAction, EnvAction, JobAction, NodeAction, SecretAction, ServiceAction, ShellArgs,
    TaskAction, TerminalAction, ThreadAction,
};
use super::service::{self, Role};
use super::{
    audit, changes, config, envs, jobs, nodes, tasks, terminals, threads, Client, ClientArgs,
};
use crate::protocol::api::{ApprovalAnswer, PullRequestRequest};

/// `viber nodes`.
pub async fn list_nodes(json: bool, client: &ClientArgs) -> anyhow::Result<ExitCode> {
    nodes::list(&Client::new(client)?, json).await?;
    Ok(ExitCode::SUCCESS)
}

/// `viber gateway|all-in-one install|uninstall`.
pub fn service(role: Role, action: ServiceAction) -> anyhow::Result<ExitCode> {
    match action {
        ServiceAction::Install(a) => service::install(role, &a, Vec::new()),
        ServiceAction::Uninstall(a) => service::uninstall(role, &a),
    }
}

/// `viber audit`.
pub async fn audit(
    limit: u32,
    before: Option<i64>,
    json: bool,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    audit::list(&Client::new(client)?, limit, before, json).await?;
    Ok(ExitCode::SUCCESS)
}

/// `viber node add|rm|ls|check-config|pending|approve|reject|install|uninstall`.
pub async fn node(action: NodeAction) -> anyhow::Result<ExitCode> {
    match action {
        NodeAction::Add {
            name,
            expires_in_secs,
            uses,
            client,
        } => nodes::add(&Client::new(&client)?, &name, expires_in_secs, uses).await?,
        NodeAction::Rm { id, client } => nodes::remove(&Client::new(&client)?, &id).await?,
        NodeAction::Ls { json, client } => nodes::list(&Client::new(&client)?, json).await?,
        NodeAction::Pending { json, client } => {
            nodes::pending(&Client::new(&client)?, json).await?
        }
        NodeAction::Approve {
            fingerprint,
            name,
            client,
        } => nodes::approve(&Client::new(&client)?, &fingerprint, name).await?,
        NodeAction::Reject {
            fingerprint,
            client,
        } => nodes::reject(&Client::new(&client)?, &fingerprint).await?,
        NodeAction::CheckConfig { id, client } => {
            return nodes::check_config(&Client::new(&client)?, &id).await
        }
        NodeAction::Install {
            gateway,
            token,
            name,
            service,
        } => {
            let mut settings = vec![("VIBER_GATEWAY", gateway)];
            settings.extend(token.map(|t| ("VIBER_NODE_TOKEN", t)));
            let mut service = service;
            if let Some(n) = name {
                service.args.splice(0..0, ["--name".to_string(), n]);
            }
            return service::install(Role::Node, &service, settings);
        }
        NodeAction::Uninstall(a) => return service::uninstall(Role::Node, &a),
    }
    Ok(ExitCode::SUCCESS)
}

/// `viber task ...`; `task run` exits with the task's outcome.
pub async fn task(action: TaskAction) -> anyhow::Result<ExitCode> {
    match action {
        TaskAction::Run {
            node,
            executor,
            cwd,
            detach,
            goal,
            client,
        } => {
            let args = tasks::RunArgs {
                node,
                executor,
                cwd,
                detach,
                goal: goal.join(" "),
            };
            let code = tasks::run(&Client::new(&client)?, args).await?;
            return Ok(ExitCode::from(code));
        }
        TaskAction::List {
            node,
            state,
            json,
            client,
        } => tasks::list(&Client::new(&client)?, node, state, json).await?,
        TaskAction::Show { id, client } => tasks::show(&Client::new(&client)?, &id).await?,
        TaskAction::Logs { id, follow, client } => {
            tasks::follow_stream(&Client::new(&client)?, &id, follow).await?
        }
        TaskAction::Stop { id, client } => tasks::stop(&Client::new(&client)?, &id).await?,
        TaskAction::Approve {
            id,
            approval,
            deny,
            reason,
            scope,
            client,
        } => {
            let answer = ApprovalAnswer {
                approve: !deny,
                reason,
                scope: scope.as_deref().map(str::parse).transpose()?,
            };
            tasks::approve(&Client::new(&client)?, &id, approval, answer).await?
        }
        TaskAction::Send {
            id,
            mode,
            message,
            client,
        } => tasks::send(&Client::new(&client)?, &id, &mode, message.join(" ")).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `viber env ...`; `env validate` fails when the environment does not validate.
pub async fn env(action: EnvAction) -> anyhow::Result<ExitCode> {
    let client = |c: &ClientArgs| Client::new(c);
    match action {
        EnvAction::Create {
            name,
            fields,
            client: c,
        } => envs::create(&client(&c)?, &name, &fields).await?,
        EnvAction::List { json, client: c } => envs::list(&client(&c)?, json).await?,
        EnvAction::Show { env, client: c } => envs::show(&client(&c)?, &env).await?,
        EnvAction::Update {
            env,
            name,
            fields,
            client: c,
        } => envs::update(&client(&c)?, &env, &fields, name).await?,
        EnvAction::Rm { env, client: c } => envs::remove(&client(&c)?, &env).await?,
        EnvAction::Validate { env, client: c } => {
            if !envs::validate(&client(&c)?, &env).await? {
                return Ok(ExitCode::FAILURE);
            }
        }
        EnvAction::Bind {
            env,
            node,
            existing_path,
            client: c,
        } => envs::bind(&client(&c)?, &env, &node, existing_path).await?,
        EnvAction::Prepare {
            env,
            node,
            force,
            client: c,
        } => envs::prepare(&client(&c)?, &env, node, force).await?,
        EnvAction::Secret { action } => return secret(action).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `viber env secret set|rm`.
async fn secret(action: SecretAction) -> anyhow::Result<ExitCode> {
    match action {
        SecretAction::Set {
            env,
            name,
            scope,
            file,
            client,
        } => envs::secret_set(&Client::new(&client)?, &env, &name, &scope, file).await?,
        SecretAction::Rm { env, name, client } => {
            envs::secret_rm(&Client::new(&client)?, &env, &name).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `viber tui`.
pub async fn tui(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    super::tui::run(client).await?;
    Ok(ExitCode::SUCCESS)
}

/// `viber usage`.
pub async fn usage(
    from: Option<String>,
    to: Option<String>,
    by: &str,
    json: bool,
    client: &ClientArgs,
) -> anyhow::Result<ExitCode> {
    super::usage::show(&Client::new(client)?, from, to, by, json).await?;
    Ok(ExitCode::SUCCESS)
}

/// `viber config ...`.
pub async fn config(action: ConfigAction) -> anyhow::Result<ExitCode> {
    match action {
        ConfigAction::Set {
            key,
            value,
            scope,
            client,
        } => config::set(&Client::new(&client)?, &key, value, scope).await?,
        ConfigAction::List { json, client } => config::list(&Client::new(&client)?, json).await?,
        ConfigAction::Rm { key, client } => config::remove(&Client::new(&client)?, &key).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `viber job ...`.
pub async fn job(action: JobAction) -> anyhow::Result<ExitCode> {
    match action {
        JobAction::Add {
            env,
            schedule,
            timezone,
            name,
            executor,
            reuse_thread,
            disabled,
            goal,
            client,
        } => {
            let job = jobs::NewJob {
                env,
                schedule,
                timezone,
                name,
                executor,
                reuse_thread,
                disabled,
                goal,
            };
            jobs::add(&Client::new(&client)?, job).await?
        }
        JobAction::List { env, json, client } => {
            jobs::list(&Client::new(&client)?, env.as_deref(), json).await?
        }
        JobAction::Rm { id, client } => jobs::remove(&Client::new(&client)?, &id).await?,
        JobAction::RunNow { id, client } => jobs::run_now(&Client::new(&client)?, &id).await?,
        JobAction::Enable { id, client } => {
            jobs::set_enabled(&Client::new(&client)?, &id, true).await?
        }
        JobAction::Disable { id, client } => {
            jobs::set_enabled(&Client::new(&client)?, &id, false).await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `viber thread ...`; `thread new` and `thread send` exit with the task's outcome.
pub async fn thread(action: ThreadAction) -> anyhow::Result<ExitCode> {
    let code = match action {
        ThreadAction::New {
            env,
            title,
            executor,
            message,
            client,
        } => {
            let client = Client::new(&client)?;
            threads::new(&client, &env, title, executor, message.join(" ")).await?
        }
        ThreadAction::List { env, json, client } => {
            threads::list(&Client::new(&client)?, env, json).await?;
            0
        }
        ThreadAction::Show { id, client } => {
            threads::show(&Client::new(&client)?, &id).await?;
            0
        }
        ThreadAction::Send {
            id,
            mode,
            executor,
            message,
            client,
        } => {
            let client = Client::new(&client)?;
            threads::send(&client, &id, mode, executor, message.join(" ")).await?
        }
        ThreadAction::Diff {
            id,
            stat,
            patch,
            client,
        } => {
            let format = match (stat, patch) {
                (true, _) => changes::DiffFormat::Stat,
                (_, true) => changes::DiffFormat::Patch,
                _ => changes::DiffFormat::Both,
            };
            changes::diff(&Client::new(&client)?, &id, format).await?;
            0
        }
        ThreadAction::Commit {
            id,
            message,
            client,
        } => {
            changes::commit(&Client::new(&client)?, &id, message).await?;
            0
        }
        ThreadAction::Push { id, client } => {
            changes::push(&Client::new(&client)?, &id).await?;
            0
        }
        ThreadAction::Pr {
            id,
            title,
            body,
            draft,
            client,
        } => {
            let req = PullRequestRequest { title, body, draft };
            changes::pull_request(&Client::new(&client)?, &id, req).await?;
            0
        }
        ThreadAction::Sync { id, rebase, client } => {
            changes::sync(&Client::new(&client)?, &id, rebase).await?
        }
        ThreadAction::Archive {
            id,
            delete_branch,
            client,
        } => {
            changes::archive(&Client::new(&client)?, &id, delete_branch).await?;
            0
        }
    };
    Ok(ExitCode::from(code))
}

/// `viber metrics`: the scrape, as Prometheus would read it.
pub async fn metrics(client: &ClientArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(client)?;
    let res = client
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .await?;
    let status = res.status();
    let body = res.bytes().await?;
    if !status.is_success() {
        anyhow::bail!("{}", super::api_error_message(status, &body));
    }
    print!("{}", String::from_utf8_lossy(&body));
    Ok(ExitCode::SUCCESS)
}

/// `viber completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(shell, &mut Cli::command(), "viber", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `viber shell`: exits with the command's code.
pub async fn shell(args: ShellArgs) -> anyhow::Result<ExitCode> {
    let code = terminals::shell(&Client::new(&args.client)?, &args).await?;
    // A read of stdin may still be blocked on its thread; the runtime would wait for it
    // on the way out, so leave at once.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(code.into())
}

/// `viber terminal list|kill`.
pub async fn terminal(action: TerminalAction) -> anyhow::Result<ExitCode> {
    match action {
        TerminalAction::List {
            thread,
            all,
            json,
            client,
        } => terminals::list(&Client::new(&client)?, thread, all, json).await?,
        TerminalAction::Kill { id, client } => terminals::kill(&Client::new(&client)?, &id).await?,
    }
    Ok(ExitCode::SUCCESS)
}
