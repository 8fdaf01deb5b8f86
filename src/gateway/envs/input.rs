//! Checking an environment request: applies an [`EnvironmentInput`] over a new or stored
//! environment and validates the result (names, kinds, repository URLs, paths, sizes).
//! Pure: no I/O, no SQL, and never opens a repository (nodes do that, see `validate.rs`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::gateway::error::{ApiError, ApiResult};
use crate::protocol::api::EnvironmentInput;
use crate::protocol::{
    absolute_clean, allowlist_entry, relative_inside, ContainerSpec, EnvKind, ExecutorKind,
    NetworkAccess, WorkingMode,
};
use crate::store::EnvironmentRecord;

pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

/// A variable or secret name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters.
pub fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && k.len() <= 128
}

fn opt_trim(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A new environment with `id`, before its input is applied.
pub fn new_record(id: String, kind: EnvKind, now: i64) -> EnvironmentRecord {
    EnvironmentRecord {
        id,
        name: String::new(),
        description: String::new(),
        kind,
        repo_url: None,
        repo_org: None,
        repo_name: None,
        repo_branch: None,
        local_path: None,
        container_image: None,
        working_dir: String::new(),
        setup_script: String::new(),
        network_access: NetworkAccess::On,
        network_allowlist: "[]".into(),
        persist_volume: false,
        default_executor: None,
        metadata: "{}".into(),
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

/// The kind named in a request.
pub fn parse_kind(kind: &str) -> ApiResult<EnvKind> {
    Ok(kind.parse()?)
}

/// Applies `input` over `env` (a new one or the stored one) and checks the result.
pub fn apply(env: &mut EnvironmentRecord, input: &mut EnvironmentInput) -> ApiResult<()> {
    apply_fields(env, input)?;
    check_name(&env.name)?;
    check_source(env)?;
    relative_inside(&env.working_dir)
        .map_err(|e| ApiError::validation(format!("workingDir {e}")))?;
    if let Some(image) = &env.container_image {
        crate::protocol::image_reference(image)
            .map_err(|e| ApiError::validation(format!("containerImage {e}")))?;
    }
    if env.setup_script.len() > MAX_SCRIPT_BYTES {
        return Err(ApiError::too_large(format!(
            "setupScript is over {MAX_SCRIPT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Copies every field the request sets; absent fields keep their value.
fn apply_fields(env: &mut EnvironmentRecord, input: &mut EnvironmentInput) -> ApiResult<()> {
    if let Some(n) = input.name.take() {
        env.name = n.trim().to_string();
    }
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = input.$field.take() {
                env.$field = opt_trim(Some(v));
            }
        };
    }
    if let Some(d) = input.description.take() {
        env.description = d;
    }
    if let Some(k) = input.kind.take() {
        env.kind = parse_kind(&k)?;
    }
    set!(repo_url);
    set!(repo_org);
    set!(repo_name);
    set!(repo_branch);
    set!(local_path);
    set!(container_image);
    if let Some(e) = input.default_executor.take() {
        env.default_executor = match opt_trim(Some(e)) {
            None => None,
            Some(e) => Some(
                e.parse::<ExecutorKind>()
                    .map_err(|_| ApiError::validation(format!("unknown defaultExecutor {e:?}")))?,
            ),
        };
    }
    if let Some(w) = input.working_dir.take() {
        env.working_dir = w.trim().to_string();
    }
    if let Some(s) = input.setup_script.take() {
        env.setup_script = s;
    }
    if let Some(b) = input.network_access.take() {
        env.network_access = b.mode();
    }
    if let Some(list) = input.network_allowlist.take() {
        env.network_allowlist =
            serde_json::to_string(&check_allowlist(&list)?).map_err(anyhow::Error::from)?;
    }
    if let Some(b) = input.persist_volume.take() {
        env.persist_volume = b;
    }
    if let Some(m) = input.metadata.take() {
        env.metadata = merge_metadata(&env.metadata, m)?;
    }
    Ok(())
}

/// Most entries an environment's `networkAllowlist` may hold.
const MAX_ALLOWLIST: usize = 256;

/// Each entry checked and lowercased, duplicates dropped, order kept.
pub fn check_allowlist(list: &[String]) -> ApiResult<Vec<String>> {
    if list.len() > MAX_ALLOWLIST {
        return Err(ApiError::validation(format!(
            "networkAllowlist has more than {MAX_ALLOWLIST} entries"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for e in list {
        let e = allowlist_entry(e)
            .map_err(|m| ApiError::validation(format!("networkAllowlist: {m}")))?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// The container a binding's processes run in: the environment's image, with a home volume
/// of the binding's own when it asks for one.
pub fn container_of(env: &EnvironmentRecord, binding_id: &str) -> Option<ContainerSpec> {
    env.container_image.as_ref().map(|image| ContainerSpec {
        image: image.clone(),
        home_volume: env
            .persist_volume
            .then(|| format!("viber-home-{binding_id}")),
    })
}

/// The stored allowlist (a JSON array).
pub fn allowlist_of(env: &EnvironmentRecord) -> Vec<String> {
    serde_json::from_str(&env.network_allowlist).unwrap_or_default()
}

fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > 64 {
        return Err(ApiError::validation("name must be 1 to 64 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " -_.".contains(c))
    {
        return Err(ApiError::validation(
            "name may contain letters, digits, spaces, '-', '_' and '.'",
        ));
    }
    Ok(())
}

/// Merges metadata changes key by key (like the other fields); a null removes a key.
fn merge_metadata(old: &str, changes: Value) -> ApiResult<String> {
    let Value::Object(changes) = changes else {
        return Err(ApiError::validation("metadata must be an object"));
    };
    let mut merged = match serde_json::from_str::<Value>(old) {
        Ok(Value::Object(old)) => old,
        _ => serde_json::Map::new(),
    };
    for (k, v) in changes {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    if let Some(mode) = merged.get("workingMode") {
        if serde_json::from_value::<WorkingMode>(mode.clone()).is_err() {
            return Err(ApiError::validation(
                "metadata.workingMode must be always-ask, agent-decides or always-execute",
            ));
        }
    }
    Ok(Value::Object(merged).to_string())
}

/// Refuses a repository URL that carries credentials (`https://user:token@host/...`): it
/// would be stored, shown by the API and the board, and written into the clone's config.
/// A user name alone is fine where it is not a secret (`ssh://git@host/...`).
fn check_no_credentials(url: &str) -> ApiResult<()> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _host)) = authority.rsplit_once('@') else {
        return Ok(());
    };
    let web = matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https");
    if userinfo.contains(':') || web {
        return Err(ApiError::validation(
            "repoUrl must not contain credentials (user:token@): they would be stored and shown \
             in plain text. Use the plain URL and put the token in a secret named GIT_TOKEN \
             (and the user in GIT_USERNAME if the host needs one), or give the node access \
             (an ssh:// URL with its key, or a git credential helper on the node)",
        ));
    }
    Ok(())
}

/// The source fields each kind needs, normalized (a GitHub URL fills org and name).
fn check_source(env: &mut EnvironmentRecord) -> ApiResult<()> {
    if let Some(url) = &env.repo_url {
        check_no_credentials(url)?;
    }
    match env.kind {
        EnvKind::Github => match (&env.repo_url, &env.repo_org, &env.repo_name) {
            (Some(url), _, _) => {
                let (org, name) = parse_github(url).ok_or_else(|| {
                    ApiError::validation("repoUrl must look like https://github.com/ORG/NAME")
                })?;
                env.repo_org = Some(org);
                env.repo_name = Some(name);
            }
            (None, Some(org), Some(name)) => {
                env.repo_url = Some(format!("https://github.com/{org}/{name}.git"));
            }
            _ => {
                return Err(ApiError::validation(
                    "a github environment needs repoUrl, or repoOrg and repoName",
                ))
            }
        },
        EnvKind::Git => {
            let url = env
                .repo_url
                .as_deref()
                .ok_or_else(|| ApiError::validation("a git environment needs repoUrl"))?;
            if !(url.contains("://") || url.contains('@') || url.starts_with('/')) {
                return Err(ApiError::validation(
                    "repoUrl must be a git URL (https://, ssh://, git://, file://)",
                ));
            }
        }
        EnvKind::Local => {
            let p = env
                .local_path
                .as_deref()
                .ok_or_else(|| ApiError::validation("a local environment needs localPath"))?;
            absolute_clean(p).map_err(|e| ApiError::validation(format!("localPath {e}")))?;
        }
        EnvKind::Manual => {}
    }
    Ok(())
}

fn parse_github(url: &str) -> Option<(String, String)> {
    let rest = url
        .trim_end_matches('/')
        .strip_prefix("https://github.com/")
        .or_else(|| url.strip_prefix("git@github.com:"))?;
    let mut parts = rest.trim_end_matches(".git").split('/');
    let (org, name) = (parts.next()?, parts.next()?);
    (parts.next().is_none() && !org.is_empty() && !name.is_empty())
        .then(|| (org.to_string(), name.to_string()))
}

pub fn check_vars(vars: &BTreeMap<String, String>) -> ApiResult<()> {
    for (k, v) in vars {
        if !valid_key(k) {
            return Err(ApiError::validation(format!(
                "variable name {k:?} must match [A-Za-z_][A-Za-z0-9_]*"
            )));
        }
        if v.len() > MAX_VALUE_BYTES {
            return Err(ApiError::too_large(format!(
                "variable {k} is over {MAX_VALUE_BYTES} bytes"
            )));
        }
    }
    Ok(())
}
