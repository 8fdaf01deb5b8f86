//! Environments with their vars and sealed secrets.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use super::{Cached, Store};
use crate::protocol::{EnvKind, ExecutorKind, NetworkAccess, SecretScope};
use crate::secrets::Sealed;

#[derive(Debug, Clone)]
pub struct EnvironmentRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: EnvKind,
    pub repo_url: Option<String>,
    pub repo_org: Option<String>,
    pub repo_name: Option<String>,
    pub repo_branch: Option<String>,
    pub local_path: Option<String>,
    pub container_image: Option<String>,
    pub working_dir: String,
    pub setup_script: String,
    pub network_access: NetworkAccess,
    /// JSON array of host patterns.
    pub network_allowlist: String,
    pub persist_volume: bool,
    pub default_executor: Option<ExecutorKind>,
    /// JSON object.
    pub metadata: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const ENV_COLUMNS: &str =
    "id, name, description, type, repo_url, repo_org, repo_name, repo_branch, \
     local_path, container_image, working_dir, setup_script, network_mode, persist_volume, \
     default_executor, metadata, version, created_at, updated_at, network_allowlist";

fn env_from_row(r: &Row) -> rusqlite::Result<EnvironmentRecord> {
    Ok(EnvironmentRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        kind: r.get(3)?,
        repo_url: r.get(4)?,
        repo_org: r.get(5)?,
        repo_name: r.get(6)?,
        repo_branch: r.get(7)?,
        local_path: r.get(8)?,
        container_image: r.get(9)?,
        working_dir: r.get(10)?,
        setup_script: r.get(11)?,
        network_access: r.get(12)?,
        network_allowlist: r.get(19)?,
        persist_volume: r.get(13)?,
        default_executor: r.get(14)?,
        metadata: r.get(15)?,
        version: r.get(16)?,
        created_at: r.get(17)?,
        updated_at: r.get(18)?,
    })
}

/// A secret as stored: sealed, with its scope.
#[derive(Debug, Clone)]
pub struct SecretRecord {
    pub key: String,
    pub scope: SecretScope,
    pub sealed: Sealed,
    pub updated_at: i64,
    /// Delivered as this file in the agent home instead of as a variable.
    pub file: Option<String>,
}

/// A change to one secret.
#[derive(Debug, Clone)]
pub enum SecretChange {
    Set {
        scope: SecretScope,
        sealed: Sealed,
        file: Option<String>,
    },
    Remove,
}

pub(super) fn read_secrets(
    c: &rusqlite::Connection,
    table: SecretTable,
    env_id: &str,
) -> rusqlite::Result<Vec<SecretRecord>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT key, scope, key_id, nonce, encrypted_value, updated_at, file
         FROM {} WHERE environment_id = ?1 ORDER BY key",
        table.name()
    ))?;
    let rows = st.query_map(params![env_id], |r| {
        Ok(SecretRecord {
            key: r.get(0)?,
            scope: r.get(1)?,
            sealed: Sealed {
                key_id: r.get(2)?,
                nonce: r.get(3)?,
                ciphertext: r.get(4)?,
            },
            updated_at: r.get(5)?,
            file: r.get(6)?,
        })
    })?;
    rows.collect()
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn write_vars(
    c: &rusqlite::Connection,
    env_id: &str,
    vars: &BTreeMap<String, String>,
) -> rusqlite::Result<()> {
    c.exec(
        "DELETE FROM environment_vars WHERE environment_id = ?1",
        params![env_id],
    )?;
    let mut st = c.prepare_cached(
        "INSERT INTO environment_vars (environment_id, key, value) VALUES (?1, ?2, ?3)",
    )?;
    for (k, v) in vars {
        st.execute(params![env_id, k, v])?;
    }
    Ok(())
}

/// Where secrets are kept: an environment's (`environment_secrets`), or the gateway-wide
/// ones every environment inherits (`shared_secrets`, whose `environment_id` is '').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretTable {
    Environment,
    Shared,
}

impl SecretTable {
    fn name(self) -> &'static str {
        match self {
            SecretTable::Environment => "environment_secrets",
            SecretTable::Shared => "shared_secrets",
        }
    }
}

pub(super) fn write_secrets(
    c: &rusqlite::Connection,
    table: SecretTable,
    env_id: &str,
    changes: &BTreeMap<String, SecretChange>,
    now: i64,
) -> rusqlite::Result<()> {
    let table = table.name();
    for (key, change) in changes {
        match change {
            SecretChange::Remove => {
                c.exec(
                    &format!("DELETE FROM {table} WHERE environment_id = ?1 AND key = ?2"),
                    params![env_id, key],
                )?;
            }
            SecretChange::Set {
                scope,
                sealed,
                file,
            } => {
                c.exec(
                    &format!(
                        "INSERT INTO {table}
                            (environment_id, key, scope, key_id, nonce, encrypted_value, created_at, updated_at, file)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)
                         ON CONFLICT (environment_id, key) DO UPDATE SET
                            scope = excluded.scope, key_id = excluded.key_id, nonce = excluded.nonce,
                            encrypted_value = excluded.encrypted_value, updated_at = excluded.updated_at,
                            file = excluded.file"
                    ),
                    params![env_id, key, scope, sealed.key_id, sealed.nonce, sealed.ciphertext, now, file],
                )?;
            }
        }
    }
    Ok(())
}

/// Where an operator's "allow this host from now on" is kept.
#[derive(Debug, Clone, Copy)]
pub enum AllowedHosts {
    /// Every task of the environment (its `networkAllowlist`).
    Environment,
    /// Every task of one thread.
    Thread,
}

impl AllowedHosts {
    fn table(self) -> &'static str {
        match self {
            AllowedHosts::Environment => "environments",
            AllowedHosts::Thread => "threads",
        }
    }
}

/// The stored allowlist of an environment or thread; None when there is no such row.
fn allowed_hosts(
    c: &rusqlite::Connection,
    list: AllowedHosts,
    id: &str,
) -> rusqlite::Result<Option<Vec<String>>> {
    let stored: Option<String> = c
        .row(
            &format!(
                "SELECT network_allowlist FROM {} WHERE id = ?1",
                list.table()
            ),
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(stored.map(|s| serde_json::from_str(&s).unwrap_or_default()))
}

impl Store {
    /// Adds `host` to the environment's or thread's network allowlist (once), without
    /// bumping the environment's version (the allowlist does not change what is prepared).
    /// `Ok(false)` when there is no such row.
    pub async fn allow_host(
        &self,
        list: AllowedHosts,
        id: String,
        host: String,
    ) -> anyhow::Result<bool> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let Some(mut hosts) = allowed_hosts(&tx, list, &id)? else {
                return Ok(false);
            };
            if !hosts.contains(&host) {
                hosts.push(host);
                tx.exec(
                    &format!(
                        "UPDATE {} SET network_allowlist = ?2 WHERE id = ?1",
                        list.table()
                    ),
                    params![id, serde_json::Value::from(hosts).to_string()],
                )?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// The hosts an operator allowed for a thread's tasks.
    pub async fn thread_allowed_hosts(&self, thread_id: String) -> anyhow::Result<Vec<String>> {
        self.read(move |c| {
            Ok(allowed_hosts(c, AllowedHosts::Thread, &thread_id)?.unwrap_or_default())
        })
        .await
    }

    /// Inserts an environment; `Ok(false)` when the name is taken.
    pub async fn insert_environment(
        &self,
        env: EnvironmentRecord,
        vars: BTreeMap<String, String>,
        secrets: BTreeMap<String, SecretChange>,
    ) -> anyhow::Result<bool> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let r = tx.exec(
                &format!("INSERT INTO environments ({ENV_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
                params![
                    env.id, env.name, env.description, env.kind, env.repo_url, env.repo_org,
                    env.repo_name, env.repo_branch, env.local_path, env.container_image,
                    env.working_dir, env.setup_script, env.network_access, env.persist_volume,
                    env.default_executor, env.metadata, env.version, env.created_at, env.updated_at,
                    env.network_allowlist
                ],
            );
            match r {
                Err(e) if is_unique_violation(&e) => return Ok(false),
                r => {
                    r?;
                }
            }
            write_vars(&tx, &env.id, &vars)?;
            write_secrets(&tx, SecretTable::Environment, &env.id, &secrets, env.created_at)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// Replaces an environment's fields (bumping its version), its vars when given, and
    /// applies secret changes. `Ok(false)` when the new name is taken.
    pub async fn update_environment(
        &self,
        env: EnvironmentRecord,
        vars: Option<BTreeMap<String, String>>,
        secrets: BTreeMap<String, SecretChange>,
    ) -> anyhow::Result<bool> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let r = tx.exec(
                "UPDATE environments SET name = ?2, description = ?3, type = ?4, repo_url = ?5,
                    repo_org = ?6, repo_name = ?7, repo_branch = ?8, local_path = ?9,
                    container_image = ?10, working_dir = ?11, setup_script = ?12,
                    network_mode = ?13, persist_volume = ?14, default_executor = ?15,
                    metadata = ?16, version = version + 1, updated_at = ?17,
                    network_allowlist = ?18
                 WHERE id = ?1",
                params![
                    env.id,
                    env.name,
                    env.description,
                    env.kind,
                    env.repo_url,
                    env.repo_org,
                    env.repo_name,
                    env.repo_branch,
                    env.local_path,
                    env.container_image,
                    env.working_dir,
                    env.setup_script,
                    env.network_access,
                    env.persist_volume,
                    env.default_executor,
                    env.metadata,
                    env.updated_at,
                    env.network_allowlist
                ],
            );
            match r {
                Err(e) if is_unique_violation(&e) => return Ok(false),
                r => {
                    r?;
                }
            }
            if let Some(vars) = &vars {
                write_vars(&tx, &env.id, vars)?;
            }
            write_secrets(
                &tx,
                SecretTable::Environment,
                &env.id,
                &secrets,
                env.updated_at,
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub async fn environment(
        &self,
        id_or_name: String,
    ) -> anyhow::Result<Option<EnvironmentRecord>> {
        self.read(move |c| {
            c.row(
                &format!("SELECT {ENV_COLUMNS} FROM environments WHERE id = ?1 OR name = ?1"),
                params![id_or_name],
                env_from_row,
            )
            .optional()
        })
        .await
    }

    pub async fn list_environments(&self) -> anyhow::Result<Vec<EnvironmentRecord>> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENV_COLUMNS} FROM environments ORDER BY name"
            ))?;
            let rows = st.query_map([], env_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn delete_environment(&self, id: String) -> anyhow::Result<bool> {
        self.write(move |c| {
            let tx = c.transaction()?;
            tx.exec(
                "DELETE FROM binding_logs WHERE binding_id IN
                    (SELECT id FROM environment_bindings WHERE environment_id = ?1)",
                params![id],
            )?;
            tx.exec("DELETE FROM thread_messages WHERE thread_id IN (SELECT id FROM threads WHERE environment_id = ?1)", params![id])?;
            tx.exec("DELETE FROM threads WHERE environment_id = ?1", params![id])?;
            let n = tx.exec("DELETE FROM environments WHERE id = ?1", params![id])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    /// An environment's own variables (see [`Store::effective_vars`] for what it runs with).
    pub async fn environment_vars(
        &self,
        env_id: String,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT key, value FROM environment_vars WHERE environment_id = ?1",
            )?;
            let rows = st.query_map(params![env_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    /// An environment's own secrets (see [`Store::effective_secrets`] for what it runs with).
    pub async fn environment_secrets(&self, env_id: String) -> anyhow::Result<Vec<SecretRecord>> {
        self.read(move |c| read_secrets(c, SecretTable::Environment, &env_id))
            .await
    }

    /// Threads of an environment that have a pending or running task.
    pub async fn busy_threads(&self, env_id: String) -> anyhow::Result<Vec<String>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT thread_id FROM tasks
                 WHERE environment_id = ?1 AND thread_id IS NOT NULL AND state IN ('pending', 'running')",
            )?;
            let rows = st.query_map(params![env_id], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    // ---- bindings ----
}
