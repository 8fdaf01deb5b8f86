//! Environments, their vars and sealed secrets, bindings, setup logs, and threads.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Row};

use super::Store;
use crate::secrets::Sealed;

#[derive(Debug, Clone, Default)]
pub struct EnvironmentRecord {
    pub id: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub repo_url: Option<String>,
    pub repo_org: Option<String>,
    pub repo_name: Option<String>,
    pub repo_branch: Option<String>,
    pub local_path: Option<String>,
    pub container_image: Option<String>,
    pub working_dir: String,
    pub setup_script: String,
    pub network_access: bool,
    pub persist_volume: bool,
    pub default_executor: Option<String>,
    /// JSON object.
    pub metadata: String,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const ENV_COLUMNS: &str =
    "id, name, description, type, repo_url, repo_org, repo_name, repo_branch, \
     local_path, container_image, working_dir, setup_script, network_access, persist_volume, \
     default_executor, metadata, version, created_at, updated_at";

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
    pub scope: String,
    pub sealed: Sealed,
    pub updated_at: i64,
}

/// A change to one secret.
#[derive(Debug, Clone)]
pub enum SecretChange {
    Set { scope: String, sealed: Sealed },
    Remove,
}

#[derive(Debug, Clone)]
pub struct BindingRecord {
    pub id: String,
    pub environment_id: String,
    pub node_id: String,
    pub strategy: String,
    pub path: Option<String>,
    pub resolved_working_dir: Option<String>,
    pub status: String,
    pub step: Option<String>,
    pub last_error: Option<String>,
    pub commit_sha: Option<String>,
    pub prepared_version: Option<i64>,
    pub last_prepare_at: Option<i64>,
    pub created_at: i64,
}

const BINDING_COLUMNS: &str = "id, environment_id, node_id, strategy, path, resolved_working_dir, \
     status, step, last_error, commit_sha, prepared_version, last_prepare_at, created_at";

fn binding_from_row(r: &Row) -> rusqlite::Result<BindingRecord> {
    Ok(BindingRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        node_id: r.get(2)?,
        strategy: r.get(3)?,
        path: r.get(4)?,
        resolved_working_dir: r.get(5)?,
        status: r.get(6)?,
        step: r.get(7)?,
        last_error: r.get(8)?,
        commit_sha: r.get(9)?,
        prepared_version: r.get(10)?,
        last_prepare_at: r.get(11)?,
        created_at: r.get(12)?,
    })
}

/// A binding's new state as reported by its node.
#[derive(Debug, Clone)]
pub struct BindingUpdate {
    pub status: String,
    pub step: Option<String>,
    pub error: Option<String>,
    pub working_dir: Option<String>,
    pub commit: Option<String>,
    pub prepared_version: Option<i64>,
    pub at: i64,
}

#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub id: String,
    pub environment_id: String,
    pub title: String,
    pub active_node_id: Option<String>,
    pub status: String,
    pub last_message_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// The thread's latest task and its state (read-only; filled by SELECTs).
    pub last_task: Option<(String, String)>,
}

/// The read-side extra of a thread: its latest task's id and state.
const THREAD_LAST_TASK: &str = "(SELECT id || ' ' || state FROM tasks
     WHERE tasks.thread_id = threads.id ORDER BY created_at DESC, id DESC LIMIT 1)";

const THREAD_COLUMNS: &str =
    "id, environment_id, title, active_node_id, status, last_message_at, created_at, updated_at";

fn thread_from_row(r: &Row) -> rusqlite::Result<ThreadRecord> {
    Ok(ThreadRecord {
        id: r.get(0)?,
        environment_id: r.get(1)?,
        title: r.get(2)?,
        active_node_id: r.get(3)?,
        status: r.get(4)?,
        last_message_at: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        last_task: r
            .get::<_, Option<String>>(8)?
            .and_then(|s| s.split_once(' ').map(|(a, b)| (a.into(), b.into()))),
    })
}

#[derive(Debug, Clone)]
pub struct ThreadMessage {
    pub id: i64,
    pub message: String,
    pub task_id: String,
    pub injection_mode: Option<String>,
    pub created_at: i64,
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn write_vars(
    c: &rusqlite::Connection,
    env_id: &str,
    vars: &BTreeMap<String, String>,
) -> rusqlite::Result<()> {
    c.execute(
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

fn write_secrets(
    c: &rusqlite::Connection,
    env_id: &str,
    changes: &BTreeMap<String, SecretChange>,
    now: i64,
) -> rusqlite::Result<()> {
    for (key, change) in changes {
        match change {
            SecretChange::Remove => {
                c.execute(
                    "DELETE FROM environment_secrets WHERE environment_id = ?1 AND key = ?2",
                    params![env_id, key],
                )?;
            }
            SecretChange::Set { scope, sealed } => {
                c.execute(
                    "INSERT INTO environment_secrets
                        (environment_id, key, scope, key_id, nonce, encrypted_value, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                     ON CONFLICT (environment_id, key) DO UPDATE SET
                        scope = excluded.scope, key_id = excluded.key_id, nonce = excluded.nonce,
                        encrypted_value = excluded.encrypted_value, updated_at = excluded.updated_at",
                    params![env_id, key, scope, sealed.key_id, sealed.nonce, sealed.ciphertext, now],
                )?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// Inserts an environment; `Ok(false)` when the name is taken.
    pub async fn insert_environment(
        &self,
        env: EnvironmentRecord,
        vars: BTreeMap<String, String>,
        secrets: BTreeMap<String, SecretChange>,
    ) -> anyhow::Result<bool> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let r = tx.execute(
                &format!("INSERT INTO environments ({ENV_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"),
                params![
                    env.id, env.name, env.description, env.kind, env.repo_url, env.repo_org,
                    env.repo_name, env.repo_branch, env.local_path, env.container_image,
                    env.working_dir, env.setup_script, env.network_access, env.persist_volume,
                    env.default_executor, env.metadata, env.version, env.created_at, env.updated_at
                ],
            );
            match r {
                Err(e) if is_unique_violation(&e) => return Ok(false),
                r => {
                    r?;
                }
            }
            write_vars(&tx, &env.id, &vars)?;
            write_secrets(&tx, &env.id, &secrets, env.created_at)?;
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
            let r = tx.execute(
                "UPDATE environments SET name = ?2, description = ?3, type = ?4, repo_url = ?5,
                    repo_org = ?6, repo_name = ?7, repo_branch = ?8, local_path = ?9,
                    container_image = ?10, working_dir = ?11, setup_script = ?12,
                    network_access = ?13, persist_volume = ?14, default_executor = ?15,
                    metadata = ?16, version = version + 1, updated_at = ?17
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
                    env.updated_at
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
            write_secrets(&tx, &env.id, &secrets, env.updated_at)?;
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
            c.query_row(
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
            let mut st = c.prepare(&format!(
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
            tx.execute(
                "DELETE FROM binding_logs WHERE binding_id IN
                    (SELECT id FROM environment_bindings WHERE environment_id = ?1)",
                params![id],
            )?;
            tx.execute("DELETE FROM thread_messages WHERE thread_id IN (SELECT id FROM threads WHERE environment_id = ?1)", params![id])?;
            tx.execute("DELETE FROM threads WHERE environment_id = ?1", params![id])?;
            let n = tx.execute("DELETE FROM environments WHERE id = ?1", params![id])?;
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

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

    pub async fn environment_secrets(&self, env_id: String) -> anyhow::Result<Vec<SecretRecord>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT key, scope, key_id, nonce, encrypted_value, updated_at
                 FROM environment_secrets WHERE environment_id = ?1 ORDER BY key",
            )?;
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
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// Threads of an environment that have a pending or running task.
    pub async fn busy_threads(&self, env_id: String) -> anyhow::Result<Vec<String>> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT DISTINCT thread_id FROM tasks
                 WHERE environment_id = ?1 AND thread_id IS NOT NULL AND state IN ('pending', 'running')",
            )?;
            let rows = st.query_map(params![env_id], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    // ---- bindings ----

    /// Creates a binding, or resets the strategy of the existing one for (environment, node).
    pub async fn upsert_binding(&self, b: BindingRecord) -> anyhow::Result<BindingRecord> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO environment_bindings
                    (id, environment_id, node_id, strategy, path, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)
                 ON CONFLICT (environment_id, node_id) DO UPDATE SET
                    strategy = excluded.strategy, path = excluded.path, status = 'pending',
                    step = NULL, last_error = NULL",
                params![b.id, b.environment_id, b.node_id, b.strategy, b.path, b.created_at],
            )?;
            c.query_row(
                &format!("SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE environment_id = ?1 AND node_id = ?2"),
                params![b.environment_id, b.node_id],
                binding_from_row,
            )
        })
        .await
    }

    pub async fn binding(&self, id: String) -> anyhow::Result<Option<BindingRecord>> {
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE id = ?1"),
                params![id],
                binding_from_row,
            )
            .optional()
        })
        .await
    }

    pub async fn bindings_of_environment(
        &self,
        env_id: String,
    ) -> anyhow::Result<Vec<BindingRecord>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE environment_id = ?1 ORDER BY created_at"
            ))?;
            let rows = st.query_map(params![env_id], binding_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn bindings_of_node(&self, node_id: String) -> anyhow::Result<Vec<BindingRecord>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {BINDING_COLUMNS} FROM environment_bindings WHERE node_id = ?1 ORDER BY created_at"
            ))?;
            let rows = st.query_map(params![node_id], binding_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn update_binding(&self, id: String, u: BindingUpdate) -> anyhow::Result<()> {
        self.write(move |c| {
            c.execute(
                "UPDATE environment_bindings SET status = ?2, step = ?3, last_error = ?4,
                    resolved_working_dir = coalesce(?5, resolved_working_dir),
                    commit_sha = coalesce(?6, commit_sha),
                    prepared_version = coalesce(?7, prepared_version),
                    last_prepare_at = ?8
                 WHERE id = ?1",
                params![
                    id,
                    u.status,
                    u.step,
                    u.error,
                    u.working_dir,
                    u.commit,
                    u.prepared_version,
                    u.at
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn append_binding_log(
        &self,
        binding_id: String,
        text: String,
        at: i64,
    ) -> anyhow::Result<i64> {
        self.write(move |c| {
            c.query_row(
                "INSERT INTO binding_logs (binding_id, seq, line, at)
                 VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM binding_logs WHERE binding_id = ?1), ?2, ?3)
                 RETURNING seq",
                params![binding_id, text, at],
                |r| r.get(0),
            )
        })
        .await
    }

    pub async fn binding_logs(
        &self,
        binding_id: String,
        after: i64,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT seq, line FROM binding_logs WHERE binding_id = ?1 AND seq > ?2 ORDER BY seq LIMIT 5000",
            )?;
            let rows = st.query_map(params![binding_id, after], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    // ---- threads ----

    pub async fn insert_thread(&self, t: ThreadRecord) -> anyhow::Result<()> {
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO threads ({THREAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![t.id, t.environment_id, t.title, t.active_node_id, t.status, t.last_message_at, t.created_at, t.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn thread(&self, id: String) -> anyhow::Result<Option<ThreadRecord>> {
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {THREAD_COLUMNS}, {THREAD_LAST_TASK} FROM threads WHERE id = ?1"),
                params![id],
                thread_from_row,
            )
            .optional()
        })
        .await
    }

    pub async fn list_threads(&self, env_id: Option<String>) -> anyhow::Result<Vec<ThreadRecord>> {
        self.read(move |c| {
            let mut st = c.prepare(&format!(
                "SELECT {THREAD_COLUMNS}, {THREAD_LAST_TASK} FROM threads
                 WHERE (?1 IS NULL OR environment_id = ?1)
                 ORDER BY coalesce(last_message_at, created_at) DESC, id DESC LIMIT 500"
            ))?;
            let rows = st.query_map(params![env_id], thread_from_row)?;
            rows.collect()
        })
        .await
    }

    pub async fn update_thread(&self, t: ThreadRecord) -> anyhow::Result<()> {
        self.write(move |c| {
            c.execute(
                "UPDATE threads SET title = ?2, status = ?3, active_node_id = ?4,
                    last_message_at = ?5, updated_at = ?6 WHERE id = ?1",
                params![
                    t.id,
                    t.title,
                    t.status,
                    t.active_node_id,
                    t.last_message_at,
                    t.updated_at
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn insert_thread_message(
        &self,
        thread_id: String,
        message: String,
        task_id: String,
        mode: Option<String>,
        at: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.execute(
                "INSERT INTO thread_messages (thread_id, message, task_id, injection_mode, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![thread_id, message, task_id, mode, at],
            )?;
            c.execute(
                "UPDATE threads SET last_message_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![thread_id, at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn thread_messages(&self, thread_id: String) -> anyhow::Result<Vec<ThreadMessage>> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT id, message, task_id, injection_mode, created_at FROM thread_messages
                 WHERE thread_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map(params![thread_id], |r| {
                Ok(ThreadMessage {
                    id: r.get(0)?,
                    message: r.get(1)?,
                    task_id: r.get(2)?,
                    injection_mode: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The text a task produced (its text deltas, in order), at most `limit` bytes from the end.
    pub async fn task_text(&self, task_id: String, limit: usize) -> anyhow::Result<String> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT json_extract(chunk, '$.delta') FROM task_chunks
                 WHERE task_id = ?1 AND json_extract(chunk, '$.type') = 'text-delta' ORDER BY seq",
            )?;
            let mut out = String::new();
            let rows = st.query_map(params![task_id], |r| r.get::<_, Option<String>>(0))?;
            for d in rows {
                out.push_str(&d?.unwrap_or_default());
            }
            if out.len() > limit {
                let mut cut = out.len() - limit;
                while !out.is_char_boundary(cut) {
                    cut += 1;
                }
                out = out[cut..].to_string();
            }
            Ok(out)
        })
        .await
    }

    /// Pending tasks waiting for a binding to become ready.
    pub async fn pending_tasks_of_binding(
        &self,
        binding_id: String,
    ) -> anyhow::Result<Vec<String>> {
        self.read(move |c| {
            let mut st = c.prepare(
                "SELECT id FROM tasks WHERE binding_id = ?1 AND state = 'pending' ORDER BY created_at",
            )?;
            let rows = st.query_map(params![binding_id], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    pub async fn set_node_config_state(
        &self,
        node_id: String,
        state: String,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.execute(
                "UPDATE nodes SET config_state = ?2 WHERE id = ?1",
                params![node_id, state],
            )?;
            Ok(())
        })
        .await
    }
}
