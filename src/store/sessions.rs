//! Operator tokens, board sessions and stored responses of idempotent requests.

use super::{Cached, Store};

impl Store {
    /// Replaces the admin operator token's hash.
    pub async fn set_admin_token_hash(&self, hash: String, now: i64) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "INSERT INTO operator_tokens (id, name, token_hash, created_at)
                 VALUES ('admin', 'admin', ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash,
                                                created_at = excluded.created_at",
                rusqlite::params![hash, now],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn operator_token_hashes(&self) -> anyhow::Result<Vec<String>> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT token_hash FROM operator_tokens")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    /// Unexpired board sessions whose operator token still exists:
    /// `(session_hash, csrf_token, expires_at)`.
    pub async fn sessions(&self, now: i64) -> anyhow::Result<Vec<(String, String, i64)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT s.session_hash, s.csrf_token, s.expires_at FROM sessions s
                 JOIN operator_tokens o ON o.token_hash = s.operator_hash
                 WHERE s.expires_at > ?1",
            )?;
            let rows = st.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    pub async fn insert_session(
        &self,
        session_hash: String,
        csrf_token: String,
        operator_hash: String,
        now: i64,
        expires_at: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
            c.exec(
                "INSERT INTO sessions (session_hash, csrf_token, operator_hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![session_hash, csrf_token, operator_hash, now, expires_at],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn delete_session(&self, session_hash: String) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "DELETE FROM sessions WHERE session_hash = ?1",
                [session_hash],
            )?;
            Ok(())
        })
        .await
    }

    /// Looks up a stored response for an idempotency key.
    pub async fn idempotent_response(
        &self,
        scope: String,
        key: String,
    ) -> anyhow::Result<Option<(u16, String)>> {
        self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT status, response FROM idempotency_keys WHERE scope=?1 AND key=?2",
            )?;
            let mut rows = st.query(rusqlite::params![scope, key])?;
            match rows.next()? {
                Some(r) => Ok(Some((r.get::<_, i64>(0)? as u16, r.get(1)?))),
                None => Ok(None),
            }
        })
        .await
    }

    pub async fn save_idempotent_response(
        &self,
        scope: String,
        key: String,
        status: u16,
        response: String,
        now: i64,
    ) -> anyhow::Result<()> {
        self.write(move |c| {
            c.exec(
                "INSERT OR IGNORE INTO idempotency_keys (scope, key, status, response, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![scope, key, status as i64, response, now],
            )?;
            Ok(())
        })
        .await
    }
}
