//! `viber config set|list|rm`: shared credentials every environment inherits.

use anyhow::bail;

use super::envs::secret_from_stdin;
use super::{print_table, seg, Client};
use crate::protocol::api::{SetShared, SharedConfig};
use crate::protocol::SecretScope;

pub async fn set(
    client: &Client,
    key: &str,
    value: Option<String>,
    scope: Option<SecretScope>,
) -> anyhow::Result<()> {
    let value = match (key.split_once('.').map(|(k, _)| k), value) {
        (Some("var"), Some(v)) => v,
        (Some("var"), None) => secret_from_stdin(key, false)?,
        (_, Some(_)) => bail!("a secret's value is read from stdin, never the command line: viber config set {key} < FILE"),
        (kind, None) => secret_from_stdin(key, kind == Some("file"))?,
    };
    let _: SharedConfig = client
        .put(
            &format!("/api/config/{}", seg(key)),
            &SetShared { value, scope },
        )
        .await?;
    println!("{key} set; every environment that does not set it itself now has it");
    Ok(())
}

pub async fn list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let v: SharedConfig = client.get("/api/config").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if v.vars.is_empty() && v.secrets.is_empty() {
        println!("nothing shared; set something with `viber config set env.NAME < FILE`");
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = v
        .vars
        .iter()
        .map(|(k, val)| vec![format!("var.{k}"), val.clone(), String::new()])
        .collect();
    rows.extend(v.secrets.iter().map(|(k, s)| {
        let key = match &s.file {
            Some(path) => format!("file.{path}"),
            None => format!("env.{k}"),
        };
        vec![key, s.value.clone(), s.scope.to_string()]
    }));
    print_table(&["KEY", "VALUE", "SCOPE"], &rows);
    Ok(())
}

pub async fn remove(client: &Client, key: &str) -> anyhow::Result<()> {
    client.delete(&format!("/api/config/{}", seg(key))).await?;
    println!("{key} removed");
    Ok(())
}
