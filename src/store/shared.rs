//! Shared credentials: gateway-wide variables and secrets that every environment inherits
//! unless it sets the same name itself, and what an environment runs with once both are
//! put together.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::params;

use super::environments::{read_secrets, write_secrets, SecretTable};
use super::{Cached, SecretChange, SecretRecord, Store};

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

    /// Sets a shared variable; a secret of the same name is removed, so a name is one or
    /// the other.
    pub async fn set_shared_var(&self, key: String, value: String) -> anyhow::Result<()> {
        self.write(move |c| {
            let tx = c.transaction()?;
            tx.exec("DELETE FROM shared_secrets WHERE key = ?1", [&key])?;
            tx.exec(
                "INSERT OR REPLACE INTO shared_vars (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
            tx.commit()
        })
        .await
    }

    /// Sets a shared secret; a variable of the same name is removed.
    pub async fn set_shared_secret(
        &self,
        key: String,
        change: SecretChange,
        now: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            let tx = c.transaction()?;
            tx.exec("DELETE FROM shared_vars WHERE key = ?1", [&key])?;
            write_secrets(
                &tx,
                SecretTable::Shared,
                "",
                &BTreeMap::from([(key, change)]),
                now,
            )?;
            tx.commit()
        })
        .await
    }

    /// Removes a shared variable (or with `secret`, a shared secret); false when there was
    /// none of that kind.
    pub async fn remove_shared(&self, key: String, secret: bool) -> anyhow::Result<bool> {
        let table = if secret {
            "shared_secrets"
        } else {
            "shared_vars"
        };
        self.write(move |c| {
            Ok(c.exec(&format!("DELETE FROM {table} WHERE key = ?1"), [&key])? == 1)
        })
        .await
    }

    /// The variables an environment runs with: the shared ones, then its own over them. A
    /// shared variable that the environment has a secret of the same name for is left out.
    pub async fn effective_vars(&self, env_id: String) -> anyhow::Result<BTreeMap<String, String>> {
        self.read(move |c| {
            let own_secrets: BTreeSet<String> = read_secrets(c, SecretTable::Environment, &env_id)?
                .into_iter()
                .map(|s| s.key)
                .collect();
            let mut vars = BTreeMap::new();
            let mut shared = c.prepare_cached("SELECT key, value FROM shared_vars")?;
            for row in
                shared.query_map([], |r| Ok::<(String, String), _>((r.get(0)?, r.get(1)?)))?
            {
                let (k, v) = row?;
                if !own_secrets.contains(&k) {
                    vars.insert(k, v);
                }
            }
            let mut own = c.prepare_cached(
                "SELECT key, value FROM environment_vars WHERE environment_id = ?1",
            )?;
            for row in own.query_map([&env_id], |r| Ok((r.get(0)?, r.get(1)?)))? {
                let (k, v) = row?;
                vars.insert(k, v);
            }
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
