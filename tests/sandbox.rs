//! Issue 13: the sandbox task processes run in, and `networkAccess`. Real processes: a real
//! `viber all-in-one` or gateway plus node, bubblewrap as installed by `scripts/test.sh`,
//! an HTTP server of the test's own on the host's loopback.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::*;

const T: Duration = Duration::from_secs(30);

/// Under CI a missing bubblewrap is a failure; elsewhere the test says it skipped.
fn bwrap_or_skip() -> bool {
    if std::path::Path::new("/usr/bin/bwrap").exists() || which("bwrap") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "bubblewrap is missing (scripts/test.sh installs it)"
    );
    eprintln!("SKIPPED: bubblewrap (bwrap) is not installed");
    false
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// A gateway and one node with `env` in its environment; `fetch.py` in the working dir.
struct Cluster {
    gw: Gateway,
    work: TempDir,
    _node: Proc,
    _dirs: (TempDir, TempDir),
}

impl Cluster {
    /// A cluster whose node's allowlist proxy resolves each of `names` to 127.0.0.1, where
    /// the test's HTTP server listens (`--proxy-resolve`).
    async fn resolving(node: &str, names: &[&str]) -> Cluster {
        let map: Vec<String> = names.iter().map(|n| format!("{n}=127.0.0.1")).collect();
        Cluster::start(node, &[("VIBER_PROXY_RESOLVE", &map.join(","))]).await
    }

    async fn start(name: &str, env: &[(&str, &str)]) -> Cluster {
        let (gdir, ndir, work) = (
            TempDir::new("gw"),
            TempDir::new("node"),
            TempDir::new("work"),
        );
        std::fs::write(work.join("fetch.py"), FETCH_PY).unwrap();
        let gw = Gateway::start(gdir.path(), 0, &[]);
        let token = gw.enroll(name).await;
        let node = start_node_env(&gw.url, Some(&token), ndir.path(), name, env);
        gw.wait_node_status(name, "online", T).await;
        Cluster {
            gw,
            work,
            _node: node,
            _dirs: (gdir, ndir),
        }
    }
}

async fn create_task(gw: &Gateway, goal: &str, options: Value) -> String {
    let (code, v) = gw
        .post(
            "/api/tasks",
            json!({"goal": goal, "executor": "shell", "options": options}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// Waits for the task to end; returns it and its whole text output.
async fn run_task(gw: &Gateway, goal: &str, options: Value) -> (Value, String) {
    let id = create_task(gw, goal, options).await;
    gw.finished(&id).await
}

/// The attack from the issue, on `viber all-in-one`: a shell task reads `$VIBER_HOME`'s
/// operator token, secret key and node key. Now it sees neither the files nor the variable,
/// and still reads and writes its working dir.
#[tokio::test]
async fn a_task_cannot_read_the_data_dir_or_see_viber_home() {
    if !bwrap_or_skip() {
        return;
    }
    let home = TempDir::new("aio-home");
    let work = TempDir::new("work");
    std::fs::write(work.join("input.txt"), "from the host\n").unwrap();
    // More paths to cover (`--sandbox-hide`), outside /tmp (the sandbox's /tmp is its own).
    let outside = TempDir(std::path::PathBuf::from(format!(
        "/var/tmp/viber-test-hide-{:016x}",
        viber::crypto::random_u64()
    )));
    std::fs::create_dir_all(outside.join("keys")).unwrap();
    std::fs::write(outside.join("keys/id"), "hidden-dir-content").unwrap();
    std::fs::write(outside.join("token"), "hidden-file-content").unwrap();
    std::fs::write(outside.join("public"), "visible-content").unwrap();
    // One inside the working dir too: the working dir's bind must not uncover it.
    std::fs::write(work.join("inside-secret"), "hidden-inside-content").unwrap();
    let hide = format!(
        "{},{},{}",
        outside.join("keys").display(),
        outside.join("token").display(),
        work.join("inside-secret").display()
    );
    // A socket in the host's /run (as systemd's, D-Bus's or docker's are): out of reach.
    let run_socket = std::path::PathBuf::from(format!(
        "/run/viber-test-{:016x}.sock",
        viber::crypto::random_u64()
    ));
    let _listener = std::os::unix::net::UnixListener::bind(&run_socket).ok();
    let mut proc = Proc::spawn(
        &["all-in-one", "--listen", "127.0.0.1:0"],
        home.join("aio.log"),
        &[
            ("VIBER_HOME", home.path().to_str().unwrap()),
            ("SOME_API_KEY", "node-side-credential-1234"),
            ("VIBER_SANDBOX_HIDE", &hide),
        ],
    );
    let line = proc.wait_line("viber ready: ", T);
    let gw = Gateway::from_ready(proc, &line, home.path());
    let nodes = gw.nodes().await;
    assert!(
        nodes[0]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("sandbox:bwrap")),
        "{nodes:?}"
    );
    assert_eq!(nodes[0]["sandbox"], "bwrap", "{nodes:?}");

    let files = [
        "admin-token",
        "secret.key",
        "node-key",
        "viber.db",
        "state.key",
    ];
    for f in files {
        assert!(home.join(f).exists(), "{f} is where the attack looks");
    }
    let goal = format!(
        "D={d}\n\
         echo \"VIBER_HOME=[$VIBER_HOME] KEY=[$SOME_API_KEY]\"\n\
         cat \"$VIBER_HOME/admin-token\" $D/admin-token 2>/dev/null && echo LEAKED\n\
         for f in {files}; do [ -e \"$D/$f\" ] && echo \"SEES $f\"; done\n\
         echo \"entries=$(ls -A $D | wc -l)\"\n\
         cat input.txt && echo written > output.txt\n\
         echo probe > /tmp/probe && echo tmp-ok\n\
         touch /usr/viber-probe 2>/dev/null && echo SYSTEM-WRITABLE\n\
         echo \"pid1=$(cat /proc/1/comm)\"\n\
         cat {o}/keys/id {o}/token {o}/public inside-secret 2>/dev/null; echo\n\
         [ -e {s} ] && echo SEES-RUN-SOCKET; true",
        d = home.path().display(),
        files = files.join(" "),
        o = outside.path().display(),
        s = run_socket.display(),
    );
    let (task, out) = run_task(&gw, &goal, json!({"cwd": work.path()})).await;
    assert_eq!(task["state"], "completed", "{task} {out}");
    assert!(out.contains("VIBER_HOME=[] KEY=[]"), "{out}");
    assert!(!out.contains("LEAKED") && !out.contains("SEES"), "{out}");
    let token = std::fs::read_to_string(home.join("admin-token")).unwrap();
    assert!(!out.contains(token.trim()), "{out}");
    assert!(out.contains("entries=0"), "{out}");
    assert!(
        out.contains("from the host") && out.contains("tmp-ok"),
        "{out}"
    );
    assert!(!out.contains("SYSTEM-WRITABLE"), "{out}");
    assert!(out.contains("visible-content"), "{out}");
    assert!(!out.contains("hidden-"), "{out}");
    if run_socket.exists() {
        assert!(!out.contains("SEES-RUN-SOCKET"), "{out}");
        let _ = std::fs::remove_file(&run_socket);
    }
    // Its own PID namespace: the node's processes (and their environments) are not there.
    assert!(out.contains("pid1=bwrap"), "{out}");
    assert_eq!(
        std::fs::read_to_string(work.join("output.txt")).unwrap(),
        "written\n"
    );
    // Its /tmp was its own.
    assert!(!std::path::Path::new("/tmp/probe").exists());

    // A working dir that would open the data dir (or a directory above it) is refused.
    for cwd in [
        home.path().to_path_buf(),
        home.path().parent().unwrap().to_path_buf(),
    ] {
        let (task, _) = run_task(&gw, "ls", json!({"cwd": cwd})).await;
        assert_eq!(task["state"], "error", "{task}");
        assert!(
            task["error"].as_str().unwrap().contains("data dir"),
            "{task}"
        );
    }
}

/// A tiny HTTP server on the host's loopback: answers every request with `hello from host`.
async fn host_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "hello from host";
                let _ = conn
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    port
}

/// Fetches a URL with Python's urllib (which honours `HTTP_PROXY`), or through an explicit
/// CONNECT tunnel (`tunnel HOST PORT`); prints the body or the error.
const FETCH_PY: &str = r#"
import os, sys, urllib.request, urllib.parse, http.client
try:
    if sys.argv[1] == "tunnel":
        p = urllib.parse.urlparse(os.environ["HTTPS_PROXY"])
        c = http.client.HTTPConnection(p.hostname, p.port, timeout=10)
        c.set_tunnel(sys.argv[2], int(sys.argv[3]))
        c.request("GET", "/")
        print("BODY:" + c.getresponse().read().decode())
    else:
        print("BODY:" + urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())
except urllib.error.HTTPError as e:
    print("HTTP %d: %s" % (e.code, e.read().decode().strip()))
except Exception as e:
    print("ERROR: %s" % e)
"#;

/// `networkAccess`: `off` has loopback only (the host's server is unreachable), `on` reaches
/// it, `allowlist` reaches a listed name (mapped to the server with `--proxy-resolve`) over
/// plain HTTP and a CONNECT tunnel, and refuses another name and unlisted addresses.
#[tokio::test]
async fn network_access_off_on_and_allowlist() {
    if !bwrap_or_skip() {
        return;
    }
    let port = host_server().await;
    let c = Cluster::resolving("net", &["allowed.test", "other.test"]).await;
    let (gw, work) = (&c.gw, &c.work);
    let direct = format!("python3 fetch.py http://127.0.0.1:{port}/");
    let opts = |access: &str| {
        json!({"cwd": work.path(), "networkAccess": access,
               "networkAllowlist": ["allowed.test", "*.wild.test"]})
    };

    let (_, out) = run_task(gw, &direct, opts("on")).await;
    assert!(out.contains("BODY:hello from host"), "on: {out}");

    let (_, out) = run_task(gw, &direct, opts("off")).await;
    assert!(out.contains("ERROR"), "off: {out}");
    assert!(!out.contains("hello from host"), "off: {out}");

    // Allowlist: the listed name passes, by a proxied GET and by a CONNECT tunnel...
    let (_, out) = run_task(
        gw,
        &format!("python3 fetch.py http://allowed.test:{port}/ && python3 fetch.py tunnel allowed.test {port}"),
        opts("allowlist"),
    )
    .await;
    assert_eq!(
        out.matches("BODY:hello from host").count(),
        2,
        "allowlist: {out}"
    );
    // ...another name is refused with a message that says why...
    let (_, out) = run_task(
        gw,
        &format!(
            "python3 fetch.py http://other.test:{port}/; python3 fetch.py tunnel other.test {port}"
        ),
        opts("allowlist"),
    )
    .await;
    assert!(
        out.contains("HTTP 403") && out.contains("not on its networkAllowlist"),
        "{out}"
    );
    assert!(!out.contains("hello from host"), "{out}");
    // ...and the host's loopback is not reachable around the proxy.
    let (_, out) = run_task(gw, &direct, opts("allowlist")).await;
    assert!(!out.contains("hello from host"), "{out}");
}

/// An environment's `networkAccess` and allowlist reach its thread's tasks; bad entries are
/// refused at creation; older clients' booleans still work.
#[tokio::test]
async fn an_environments_network_mode_applies_to_its_threads() {
    if !bwrap_or_skip() {
        return;
    }
    let port = host_server().await;
    let c = Cluster::resolving("envnet", &["allowed.test"]).await;
    let (gw, work) = (&c.gw, &c.work);

    for bad in [
        json!(["exa mple.com"]),
        json!(["example.com:0"]),
        json!([""]),
    ] {
        let (code, v) = gw
            .post(
                "/api/environments",
                json!({"name": "bad", "type": "manual", "networkAllowlist": bad}),
            )
            .await;
        assert_eq!(code, 422, "{bad}: {v}");
    }
    let (code, v) = gw
        .post(
            "/api/environments",
            json!({"name": "legacy", "type": "manual", "networkAccess": false}),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["networkAccess"], "off");

    let made = gw
        .env_thread(
            json!({"name": "fenced", "type": "local", "localPath": work.path(),
                   "networkAccess": "allowlist", "networkAllowlist": ["Allowed.Test"]}),
            &gw.nodes().await[0]["id"],
        )
        .await;
    assert_eq!(made.env["networkAccess"], "allowlist");
    assert_eq!(made.env["networkAllowlist"], json!(["allowed.test"]));
    let (code, t) = gw
        .post(
            &format!("/api/threads/{}/messages", made.thread),
            json!({"executor": "shell",
                   "message": format!("python3 fetch.py http://allowed.test:{port}/; python3 fetch.py http://127.0.0.1:{port}/")}),
        )
        .await;
    assert!(code == 201 || code == 202, "{t}");
    let task_id = t["taskId"].as_str().unwrap().to_string();
    let (task, out) = gw.finished(&task_id).await;
    assert_eq!(task["state"], "completed", "{task}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        lines[0], "BODY:hello from host",
        "the listed name passes: {out}"
    );
    assert!(
        lines[1].starts_with("ERROR"),
        "the host's loopback does not: {out}"
    );
}

/// Ask, don't just block: under `allowlist`, a task in `always-ask` that reaches for an
/// unlisted host raises a `network` approval. Approved for the environment, the request goes
/// through and the host joins the environment's allowlist; denied, the request gets a 403
/// that says so.
#[tokio::test]
async fn an_unlisted_host_raises_a_network_approval() {
    if !bwrap_or_skip() {
        return;
    }
    let port = host_server().await;
    let c = Cluster::resolving("asker", &["asked.test", "denied.test"]).await;
    let (gw, work) = (&c.gw, &c.work);
    let made = gw
        .env_thread(
            json!({"name": "asks", "type": "local", "localPath": work.path(),
                   "networkAccess": "allowlist", "networkAllowlist": ["allowed.test"],
                   "metadata": {"workingMode": "always-ask"}}),
            &gw.nodes().await[0]["id"],
        )
        .await;
    let env_id = made.env["id"].as_str().unwrap().to_string();
    let thread_id = made.thread;
    let send = |host: &'static str| {
        let (gw, thread_id) = (&gw, &thread_id);
        async move {
            let (code, t) = gw
                .post(
                    &format!("/api/threads/{thread_id}/messages"),
                    json!({"executor": "shell",
                           "message": format!("python3 fetch.py http://{host}:{port}/")}),
                )
                .await;
            assert!(code == 201 || code == 202, "{t}");
            t["taskId"].as_str().unwrap().to_string()
        }
    };
    let pending = |task_id: String| {
        let gw = &gw;
        async move {
            wait_until("a network approval", T, || async {
                gw.get(&format!("/api/tasks/{task_id}")).await.1["status"] == "awaiting approval"
            })
            .await;
            gw.get(&format!("/api/tasks/{task_id}")).await.1["awaitingApproval"].clone()
        }
    };

    // Asked, approved for the environment: it goes through and is remembered.
    let task_id = send("asked.test").await;
    let p = pending(task_id.clone()).await;
    assert_eq!(p["toolName"], "network", "{p}");
    assert_eq!(
        p["input"],
        json!({"host": "asked.test", "port": port}),
        "{p}"
    );
    let (code, v) = gw
        .post(
            &format!(
                "/api/tasks/{task_id}/approvals/{}",
                p["approvalId"].as_str().unwrap()
            ),
            json!({"approve": true, "scope": "environment"}),
        )
        .await;
    assert_eq!(code, 202, "{v}");
    let (task, out) = gw.finished(&task_id).await;
    assert_eq!(task["state"], "completed", "{task}");
    assert!(out.contains("BODY:hello from host"), "{out}");
    let (_, env) = gw.get(&format!("/api/environments/{env_id}")).await;
    assert_eq!(
        env["networkAllowlist"],
        json!(["allowed.test", format!("asked.test:{port}")]),
        "{env}"
    );

    // Now listed: the next task reaches it without asking.
    let task_id = send("asked.test").await;
    let (task, out) = gw.finished(&task_id).await;
    assert_eq!(task["state"], "completed", "{task}");
    assert!(out.contains("BODY:hello from host"), "{out}");

    // Asked and denied: refused with the reason; a scope is for network approvals only.
    let task_id = send("denied.test").await;
    let p = pending(task_id.clone()).await;
    let answer = format!(
        "/api/tasks/{task_id}/approvals/{}",
        p["approvalId"].as_str().unwrap()
    );
    let (code, v) = gw
        .post(&answer, json!({"approve": false, "reason": "not today"}))
        .await;
    assert_eq!(code, 202, "{v}");
    let (_, out) = gw.finished(&task_id).await;
    assert!(
        out.contains("HTTP 403") && out.contains("not today"),
        "{out}"
    );
    assert!(!out.contains("hello from host"), "{out}");
}

/// The container engine's configuration for these machines: the engine may not raise
/// resource limits here (no CAP_SYS_RESOURCE), and crun refuses the host's hybrid cgroups.
const CONTAINERS_CONF: &str = "[containers]\ndefault_ulimits = []\n[engine]\nruntime = \"runc\"\n";

/// A tiny image without a registry: the host's bash and its libraries, busybox, and an
/// os-release that names it.
fn import_test_image(dir: &std::path::Path, conf: &std::path::Path, tag: &str) {
    let root = dir.join("rootfs");
    let copy = |from: &str, to: &str| {
        let dest = root.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(from, &dest).unwrap_or_else(|e| panic!("{from}: {e}"));
    };
    copy("/bin/bash", "/bin/bash");
    copy("/usr/bin/busybox", "/bin/busybox");
    let ldd = std::process::Command::new("ldd")
        .arg("/bin/bash")
        .output()
        .unwrap();
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        copy(lib, lib);
    }
    for tool in ["sh", "cat", "grep", "echo", "ls", "id"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=viber-test\n").unwrap();
    for d in ["tmp", "home", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | podman import - {tag} >/dev/null",
            root.display()
        ))
        .env("CONTAINERS_CONF", conf)
        .status()
        .unwrap();
    assert!(status.success(), "podman import");
}

/// An environment with a `containerImage` runs its setup script and its tasks in a container
/// of that image: the image's files, the working dir bind-mounted and written, the home
/// volume kept from setup to task, secrets passed in, no network under `off`.
#[tokio::test]
async fn a_container_environment_runs_setup_and_tasks_in_its_image() {
    if !which("podman") {
        assert!(
            std::env::var_os("CI").is_none(),
            "podman is missing (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: podman is not installed");
        return;
    }
    let image_dir = TempDir::new("image");
    let conf = image_dir.join("containers.conf");
    std::fs::write(&conf, CONTAINERS_CONF).unwrap();
    let tag = format!(
        "localhost/viber-test-{:08x}:latest",
        viber::crypto::random_u64() as u32
    );
    import_test_image(image_dir.path(), &conf, &tag);
    let c = Cluster::start("boxed", &[("CONTAINERS_CONF", conf.to_str().unwrap())]).await;
    let (gw, work) = (&c.gw, &c.work);
    let nodes = gw.nodes().await;
    assert!(
        nodes[0]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("container:podman")),
        "{nodes:?}"
    );
    let (code, v) = gw
        .post(
            "/api/environments",
            json!({"name": "bad-image", "type": "manual", "containerImage": "--privileged"}),
        )
        .await;
    assert_eq!(code, 422, "{v}");
    let made = gw
        .env_thread(
            json!({"name": "boxed", "type": "local", "localPath": work.path(),
                   "containerImage": tag, "persistVolume": true, "networkAccess": "off",
                   "secrets": {"BOX_SECRET": "box-secret-value-1234"},
                   "setupScript": "grep ^ID= /etc/os-release > setup.txt\necho kept-from-setup > $HOME/kept"}),
            &nodes[0]["id"],
        )
        .await;
    let binding_id = made.binding["id"].as_str().unwrap().to_string();
    let (code, t) = gw
        .post(
            &format!("/api/threads/{}/messages", made.thread),
            json!({"executor": "shell", "message": "grep ^ID= /etc/os-release; cat $HOME/kept; \
                   echo written > out.txt; echo \"secret-len=${#BOX_SECRET}\"; id -u; \
                   ls /sys/class/net"}),
        )
        .await;
    assert!(code == 201 || code == 202, "{t}");
    let (task, out) = gw.finished(t["taskId"].as_str().unwrap()).await;
    let _ = std::process::Command::new("podman")
        .args([
            "volume",
            "rm",
            "--force",
            &format!("viber-home-{binding_id}"),
        ])
        .env("CONTAINERS_CONF", &conf)
        .output();
    let _ = std::process::Command::new("podman")
        .args(["rmi", "--force", &tag])
        .env("CONTAINERS_CONF", &conf)
        .output();
    assert_eq!(task["state"], "completed", "{task} {out}");
    assert_eq!(
        std::fs::read_to_string(work.join("setup.txt")).unwrap(),
        "ID=viber-test\n"
    );
    assert!(out.contains("ID=viber-test"), "{out}");
    assert!(
        out.contains("kept-from-setup"),
        "the home volume persists: {out}"
    );
    assert!(out.contains("secret-len=21"), "{out}");
    // `networkAccess: off`: loopback only.
    assert!(out.contains("lo") && !out.contains("eth0"), "{out}");
    assert_eq!(
        std::fs::read_to_string(work.join("out.txt")).unwrap(),
        "written\n"
    );
}
