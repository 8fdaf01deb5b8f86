//! The OpenAPI description (`GET /api/openapi.json`) against the gateway that serves it:
//! it lists every route (the router is built from the description's handlers, nothing is
//! registered beside it, and every documented operation reaches a handler), its references
//! resolve, and schemathesis finds no server error nor a response that contradicts it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// Every `(method, path, operation)` of the description.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                ops.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    ops
}

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

async fn description(gw: &Gateway) -> Value {
    // Served without credentials.
    let res = reqwest::get(format!("{}/api/openapi.json", gw.url))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_description_is_openapi_3_1_and_its_references_resolve() {
    let dir = TempDir::new("oapi-doc");
    let gw = Gateway::start(dir.path(), 0, &[]);
    let doc = description(&gw).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "{} references", all.len());
    for r in &all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is not local"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    for name in ["operatorToken", "session", "csrf", "nodeToken"] {
        assert!(
            doc["components"]["securitySchemes"][name].is_object(),
            "{name}"
        );
    }
    let error = "#/components/schemas/ErrorBody";
    let mut ids = std::collections::HashSet::new();
    for (method, path, op) in operations(&doc) {
        let what = format!("{} {path}", method.to_uppercase());
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}"));
        assert!(ids.insert(id.to_string()), "{what}: operationId {id} twice");
        for range in ["4XX", "5XX"] {
            assert_eq!(
                op["responses"][range]["content"]["application/json"]["schema"]["$ref"], error,
                "{what}: {range}"
            );
        }
        // Path parameters are declared, and only those of the path.
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let in_path: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_path, "{what}");
        // Operator routes say how to authenticate; the others say they need nothing else.
        if path.starts_with("/api/") && !path.starts_with("/api/session") {
            assert!(op["security"].is_array(), "{what}: no security");
        }
    }
    // The request bodies refuse unknown fields, as serde does.
    let schemas = &doc["components"]["schemas"];
    for name in [
        "CreateTask",
        "EnvironmentInput",
        "EnrollRequest",
        "SendMessage",
    ] {
        assert_eq!(schemas[name]["additionalProperties"], false, "{name}");
    }
    // Wire enums are string enums of their wire names.
    assert_eq!(
        schemas["TaskState"]["enum"],
        serde_json::json!(["pending", "running", "completed", "error", "stopped"])
    );
}

/// Requests one documented operation with placeholder ids; returns the status and body.
async fn call(gw: &Gateway, method: &str, path: &str) -> (u16, Value) {
    let url = format!(
        "{}{}",
        gw.url,
        path.replace('{', "placeholder-").replace('}', "")
    );
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = gw.http.request(method, url).bearer_auth(&gw.token);
    if path.ends_with("/stream") {
        // A stream of a live task would not end; the placeholder task does not exist.
        req = req.query(&[("follow", "false")]);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let is_sse = res
        .headers()
        .get("content-type")
        .is_some_and(|c| c == "text/event-stream");
    if is_sse {
        // `/api/events` never ends: its status and type are enough.
        return (status, Value::Null);
    }
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn every_documented_operation_reaches_a_handler() {
    let dir = TempDir::new("oapi-routes");
    let gw = Gateway::start(dir.path(), 0, &[]);
    let doc = description(&gw).await;
    // What the check below tells apart: the `/api` fallback, and a method a path lacks.
    let (status, body) = gw.get("/api/no-such-route").await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (404, Some("no such API route"))
    );
    let (status, _) = gw.request(reqwest::Method::PATCH, "/api/usage", None).await;
    assert_eq!(status, 405);

    let ops = operations(&doc);
    assert!(ops.len() >= 40, "{} operations", ops.len());
    for (method, path, _) in &ops {
        let (status, body) = call(&gw, method, path).await;
        let what = format!("{} {path} -> {status} {body}", method.to_uppercase());
        assert_ne!(status, 405, "{what}");
        assert!(
            !(status == 404 && body["error"]["message"] == "no such API route"),
            "{what}: not routed"
        );
        assert!(status < 500, "{what}");
        if status >= 400 {
            // Every error, even from an extractor, is in the API's error shape.
            assert!(
                body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                "{what}"
            );
        }
    }
}

/// Routes exist only through `OpenApiRouter::routes(routes!(...))`, so the description
/// cannot miss one: no plain axum routing anywhere in the sources but the board's static
/// fallback (merged once) and unit tests.
#[test]
fn no_route_is_registered_beside_the_description() {
    fn rs_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rs_files(&root.join("src"), &mut files);
    assert!(files.len() > 20);
    let mut merges = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may build routers of their own.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let rel = f.strip_prefix(root).unwrap().display().to_string();
        if rel == "src/gateway/board.rs" {
            assert!(code.contains("Router::new().fallback(serve)"), "{rel}");
            assert!(!code.contains(".route("), "{rel}");
            continue;
        }
        for needle in [
            ".route(",
            ".route_service(",
            ".nest_service(",
            "Router::new(",
            "axum::routing",
            "MethodRouter",
        ] {
            assert!(
                !code.contains(needle),
                "{rel} registers a route with {needle}"
            );
        }
        merges += code.matches(".merge(").count();
        if code.contains(".merge(") {
            assert_eq!(rel, "src/gateway/http/mod.rs");
            assert!(code.contains(".merge(board::router())"));
        }
    }
    assert_eq!(merges, 1, "only the board is merged");
}

/// schemathesis (`SCHEMATHESIS`, installed by scripts/test.sh) against a live gateway with
/// one node online: every operation, positive and negative inputs, stateful sequences.
#[tokio::test]
async fn schemathesis_finds_nothing() {
    let Some(st) = std::env::var_os("SCHEMATHESIS") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run schemathesis: set SCHEMATHESIS (scripts/test.sh installs it)"
        );
        eprintln!(
            "\n*** SKIPPED: SCHEMATHESIS is not set; run ./scripts/test.sh, which installs it ***\n"
        );
        return;
    };
    let dir = TempDir::new("oapi-st");
    let gw = Gateway::start(dir.path(), 0, &[]);
    let token = gw.enroll("st-node").await;
    let node_dir = dir.join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    let _node = start_node(&gw.url, Some(&token), &node_dir, "st-node");
    gw.wait_node_status("st-node", "online", Duration::from_secs(20))
        .await;

    // Things to test against: without them most operations would only meet 404s. An
    // environment bound to the node with a thread, a second one for DELETE, and a task.
    let node = gw.nodes().await[0]["id"].as_str().unwrap().to_string();
    let id = |v: Value| {
        v["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"))
            .to_string()
    };
    let env = id(gw
        .post("/api/environments", json!({"name": "st", "type": "manual"}))
        .await
        .1);
    let doomed = id(gw
        .post(
            "/api/environments",
            json!({"name": "st-del", "type": "manual"}),
        )
        .await
        .1);
    let bid = id(gw
        .post(
            &format!("/api/environments/{env}/bindings"),
            json!({"nodeId": node}),
        )
        .await
        .1);
    let thread = id(gw
        .post("/api/threads", json!({"environmentId": env}))
        .await
        .1);
    let task = id(gw.post("/api/tasks", json!({"goal": "true"})).await.1);
    let config = format!(
        r#"
[[operations]]
include-path-regex = "^/api/environments/"
include-method = "DELETE"
parameters = {{ "id" = "{doomed}" }}

[[operations]]
include-path-regex = "^/api/environments/"
parameters = {{ "id" = "{env}", "bid" = "{bid}" }}

[[operations]]
include-path-regex = "^/api/(nodes|vibers)/"
parameters = {{ "id" = "{node}" }}

[[operations]]
include-path-regex = "^/api/threads/"
parameters = {{ "id" = "{thread}" }}

[[operations]]
include-path-regex = "^/api/tasks/"
parameters = {{ "id" = "{task}" }}
"#
    );
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();

    let auth = format!("Authorization: Bearer {}", gw.token);
    let spec = format!("{}/api/openapi.json", gw.url);
    let checks = "not_a_server_error,response_schema_conformance,status_code_conformance,\
                  content_type_conformance";
    let run = |filters: &[&str]| {
        let mut cmd = Command::new(&st);
        cmd.arg("--config-file")
            .arg(&config_file)
            .args(["run", &spec, "-H", &auth, "--checks", checks])
            .args(["--max-examples", "25", "--workers", "1", "--seed", "1"])
            .args(["--request-timeout", "20", "--no-color"])
            .args(filters)
            .current_dir(dir.path());
        let started = Instant::now();
        let out = cmd.output().expect("running schemathesis");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("schemathesis {filters:?}: {:?}", started.elapsed());
        assert!(
            out.status.success(),
            "schemathesis {filters:?} failed ({}):\n{text}\ngateway log:\n{}",
            out.status,
            gw.proc.logs()
        );
    };
    // `/api/events` never ends (other tests cover it). Revoking the node would leave every
    // later task request a (correct) 503 "no online node", so revocation runs last, alone.
    run(&[
        "--exclude-path",
        "/api/events",
        "--exclude-operation-id",
        "revokeNode",
        "--exclude-operation-id",
        "revokeViber",
    ]);
    run(&[
        "--include-operation-id",
        "revokeNode",
        "--include-operation-id",
        "revokeViber",
    ]);
}
