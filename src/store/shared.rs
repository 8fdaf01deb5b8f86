//! Shared credentials: gateway-wide variables and secrets that every environment inherits
//! unless it sets the same name itself, and what an environment runs with once both are
//! put together.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::params;

use super::environments::{read_secrets, write_secrets, SecretTable};
use super::{SecretChange, SecretRecord, Store};

/// Where a secret an environment runs with comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    Environment,
    Shared,
}

impl Store {
    pub async fn shared_vars(&self) -> anyhow::Result<BTreeMap<String, String>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT key, value FROM shared_vars ORDER BY key")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    pub async fn shared_secrets(&self) -> anyhow::Result<Vec<SecretRecord>> {
        self.read(|c| read_secrets(c, SecretTable::Shared, ""))
            .await
    }

    /// Sets (or with None removes) a shared variable; a secret of the same name is removed,
    /// so a name is one or the other. Returns whether something was there before.
    pub async fn set_shared_var(&self, key: String, value: Option<String>) -> anyhow::Result<bool> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let had = tx.execute("DELETE FROM shared_vars WHERE key = ?1", [&key])?
                + tx.execute("DELETE FROM shared_secrets WHERE key = ?1", [&key])?;
            if let Some(v) = value {
                tx.execute(
                    "INSERT INTO shared_vars (key, value) VALUES (?1, ?2)",
                    params![key, v],
                )?;
            }
            tx.commit()?;
            Ok(had > 0)
        })
        .await
    }

    /// Sets or removes a shared secret; a variable of the same name is removed. Returns
    /// whether something was there before.
    pub async fn set_shared_secret(
        &self,
        key: String,
        change: SecretChange,
        now: i64,
    ) -> anyhow::Result<bool> {
        self.write(move |c| {
            let tx = c.transaction()?;
            let had = tx.execute("DELETE FROM shared_vars WHERE key = ?1", [&key])?
                + tx.query_row(
                    "SELECT count(*) FROM shared_secrets WHERE key = ?1",
                    [&key],
                    |r| r.get::<_, usize>(0),
                )?;
            write_secrets(
                &tx,
                SecretTable::Shared,
                "",
                &BTreeMap::from([(key, change)]),
                now,
            )?;
            tx.commit()?;
            Ok(had > 0)
        })
        .await
    }

    /// The variables an environment runs with: the shared ones, then its own over them. A
    /// shared variable that the environment has a secret of the same name for is left out.
    pub async fn effective_vars(&self, env_id: String) -> anyhow::Result<BTreeMap<String, String>> {
        self.read(move |c| {
            let own = |sql: &str| -> rusqlite::Result<Vec<(String, String)>> {
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map([&env_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            };
            let secret_names: BTreeSet<String> =
                own("SELECT key, '' FROM environment_secrets WHERE environment_id = ?1")?
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect();
            let mut st = c.prepare_cached("SELECT key, value FROM shared_vars")?;
            let shared = st.query_map([], |r| Ok::<(String, String), _>((r.get(0)?, r.get(1)?)))?;
            let mut vars = BTreeMap::new();
            for row in shared {
                let (k, v) = row?;
                if !secret_names.contains(&k) {
                    vars.insert(k, v);
                }
            }
            vars.extend(own(
                "SELECT key, value FROM environment_vars WHERE environment_id = ?1",
            )?);
            Ok(vars)
        })
        .await
    }

    /// The secrets an environment runs with, and where each comes from: its own, and the
    /// shared ones whose name (or, for a file, whose path) it does not set itself as a
    /// variable or a secret.
    pub async fn effective_secrets(
        &self,
        env_id: String,
    ) -> anyhow::Result<Vec<(SecretRecord, SecretOrigin)>> {
        self.read(move |c| {
            let own = read_secrets(c, SecretTable::Environment, &env_id)?;
            let mut st =
                c.prepare_cached("SELECT key FROM environment_vars WHERE environment_id = ?1")?;
            let var_names: BTreeSet<String> = st
                .query_map([&env_id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let taken = |s: &SecretRecord| {
                var_names.contains(&s.key)
                    || own
                        .iter()
                        .any(|o| o.key == s.key || (s.file.is_some() && o.file == s.file))
            };
            let shared: Vec<SecretRecord> = read_secrets(c, SecretTable::Shared, "")?
                .into_iter()
                .filter(|s| !taken(s))
                .collect();
            Ok(own
                .into_iter()
                .map(|s| (s, SecretOrigin::Environment))
                .chain(shared.into_iter().map(|s| (s, SecretOrigin::Shared)))
                .collect())
        })
        .await
    }
}
