//! Issue 14: the agent CLIs people use (Claude Code, Codex, OpenCode) as executors, each the
//! real CLI (pinned in tests/js/package-lock.json, installed by scripts/test.sh) driven by a
//! node against the scripted model server in tests/common. Nothing about the CLIs is faked.

#[path = "../common/mod.rs"]
mod common;

mod claude;
mod codex;
mod opencode;

use serde_json::json;

use common::*;

/// A node without the CLIs does not offer them, and the gateway says how to install each.
#[tokio::test]
async fn a_node_without_the_clis_does_not_offer_them() {
    let (gdir, ndir) = (TempDir::new("gw"), TempDir::new("node"));
    let gw = Gateway::start(gdir.path(), 0, &[]);
    let token = gw.enroll("plain").await;
    let _node = start_node_env(
        &gw.url,
        Some(&token),
        ndir.path(),
        "plain",
        &[("PATH", "/usr/bin:/bin")],
    );
    gw.wait_node_status("plain", "online", agent_cli::T).await;
    let node_id = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
    for (executor, install) in [
        ("claude-code", "npm install -g @anthropic-ai/claude-code"),
        ("codex", "npm install -g @openai/codex"),
        ("opencode", "npm install -g opencode-ai"),
    ] {
        let (code, v) = gw
            .post(
                "/api/tasks",
                json!({"goal": "hi", "executor": executor, "nodeId": node_id}),
            )
            .await;
        assert_eq!(code, 422, "{v}");
        assert!(v.to_string().contains(install), "{v}");
    }
}
