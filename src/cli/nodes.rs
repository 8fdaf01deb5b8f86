//! `viber nodes`, `viber node add`, `viber node rm`, `viber node check-config`, and device
//! pairing: `viber node pending`, `viber node approve`, `viber node reject`.

use std::process::ExitCode;

use super::{or_dash, print_table, seg, Client};
use crate::protocol::api::{
    ApproveRequest, ConfigPushed, EnrollRequest, Enrollment, NodeList, NodeView, PairingDecided,
    PairingList,
};
use crate::protocol::ValidationStatus;

pub async fn list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let v: NodeList = client.get("/api/vibers").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let nodes = &v.nodes;
    if nodes.is_empty() {
        println!("no nodes enrolled; add one with `viber node add NAME`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.name.clone(),
                n.status.to_string(),
                n.version.clone(),
                n.platform.clone(),
                or_dash(n.sandbox.as_deref()),
                or_dash(n.last_seen.as_deref()),
                n.running_tasks.len().to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "NAME",
            "STATUS",
            "VERSION",
            "PLATFORM",
            "SANDBOX",
            "LAST SEEN",
            "RUNNING",
        ],
        &rows,
    );
    Ok(())
}

pub async fn add(
    client: &Client,
    name: &str,
    expires_in_secs: Option<u64>,
    uses: u32,
) -> anyhow::Result<()> {
    let body = EnrollRequest {
        name: name.to_string(),
        expires_in_secs,
        uses: Some(uses),
    };
    let v: Enrollment = client.post("/api/nodes/enroll", &body).await?;
    let how_many = match v.uses {
        1 => "one use".to_string(),
        n => format!("{n} nodes, each named {name}-<end of its id>"),
    };
    println!(
        "Enrollment token for {:?} ({how_many}, expires {}).",
        name, v.expires_at
    );
    println!("On the new machine, run:\n");
    println!("  {}\n", v.command);
    Ok(())
}

/// Asks the node to check its config and prints the checks it reports (within 30 s); exits
/// non-zero when one failed.
pub async fn check_config(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let before: NodeView = client.get(&format!("/api/nodes/{id}")).await?;
    let pushed: ConfigPushed = client
        .post_empty(&format!("/api/nodes/{id}/config-push"))
        .await?;
    if !pushed.delivered {
        println!("the node is away; it checks its config when it is back");
        return Ok(ExitCode::SUCCESS);
    }
    let stamp = |n: &NodeView| {
        n.config
            .as_ref()
            .and_then(|c| c.validations.first())
            .map(|v| v.checked_at.clone())
    };
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let ack = loop {
        let now: NodeView = client.get(&format!("/api/nodes/{id}")).await?;
        let fresh = stamp(&now) != stamp(&before);
        if let Some(config) = now.config.filter(|_| fresh) {
            break config;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the node did not report its checks within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let rows: Vec<Vec<String>> = ack
        .validations
        .iter()
        .map(|v| {
            vec![
                v.category.clone(),
                v.status.to_string(),
                or_dash(v.message.clone()),
            ]
        })
        .collect();
    print_table(&["CHECK", "STATUS", "MESSAGE"], &rows);
    let failed = ack
        .validations
        .iter()
        .any(|v| v.status == ValidationStatus::Failed);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn remove(client: &Client, id: &str) -> anyhow::Result<()> {
    client.delete(&format!("/api/nodes/{id}")).await?;
    println!("revoked {id}");
    Ok(())
}

pub async fn pending(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let v: PairingList = client.get("/api/nodes/pending").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if v.requests.is_empty() {
        println!("no device is waiting; a node started without --token asks to pair");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v
        .requests
        .iter()
        .map(|r| {
            vec![
                r.fingerprint.clone(),
                r.name.clone(),
                r.hostname.clone(),
                r.platform.clone(),
                r.address.clone(),
                match (r.status.as_str(), r.waiting) {
                    ("pending", true) => "waiting".to_string(),
                    (s, _) => s.to_string(),
                },
                r.requested_at.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "FINGERPRINT",
            "NAME",
            "HOSTNAME",
            "PLATFORM",
            "ADDRESS",
            "STATUS",
            "REQUESTED",
        ],
        &rows,
    );
    Ok(())
}

pub async fn approve(
    client: &Client,
    fingerprint: &str,
    name: Option<String>,
) -> anyhow::Result<()> {
    let v: PairingDecided = client
        .post(
            &format!("/api/nodes/pending/{}/approve", seg(fingerprint)),
            &ApproveRequest { name },
        )
        .await?;
    if v.delivered {
        println!(
            "approved {} as {:?}; it is coming online",
            v.fingerprint, v.name
        );
    } else {
        println!(
            "approved {} as {:?}; it joins when it next connects",
            v.fingerprint, v.name
        );
    }
    Ok(())
}

pub async fn reject(client: &Client, fingerprint: &str) -> anyhow::Result<()> {
    let v: PairingDecided = client
        .post_empty(&format!("/api/nodes/pending/{}/reject", seg(fingerprint)))
        .await?;
    println!("rejected {}; its key is refused from now on", v.fingerprint);
    Ok(())
}
