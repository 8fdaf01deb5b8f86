//! Environments with a `containerImage`: each process tree runs in a container of that
//! image through the node's podman (or docker) CLI, removed when the tree ends.
//!
//! The container sees the working dir (bind-mounted at the same path, read-write), a home
//! volume of the binding's own when the environment keeps one (`persistVolume`), the
//! environment's variables and secrets (passed by name from the engine's environment, never
//! on its command line), and by `networkAccess` the host's network (`on`) or none (`off`).
//! It keeps no capabilities and cannot gain privileges. The node's data dir is not mounted.
//!
//! The engine's own configuration is the host's: on hosts whose resource limits the engine
//! cannot raise, set `[containers] default_ulimits = []` (and a runtime that works there) in
//! `containers.conf` or point `CONTAINERS_CONF` at such a file for the node.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::process::set_env;
use super::{find_on_path, Guard, Network, Prepared, Sandbox};
use crate::protocol::{image_reference, ContainerSpec};

/// Where the home volume is mounted inside the container.
const HOME_INSIDE: &str = "/home/viber";

/// A container engine's CLI.
#[derive(Debug, Clone)]
pub struct Engine {
    path: PathBuf,
    /// `podman` or `docker`.
    name: &'static str,
}

impl Engine {
    /// podman, else docker, when on PATH.
    pub fn detect() -> Option<Engine> {
        ["podman", "docker"]
            .into_iter()
            .find_map(|name| find_on_path(name).map(|path| Engine { path, name }))
    }

    pub fn capability(&self) -> String {
        format!("container:{}", self.name)
    }
}

/// A started container's name; the container is removed (killed first if it still runs)
/// when this is dropped.
pub struct Running {
    engine: PathBuf,
    name: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        // `--rm` removes a container that ended by itself; this ends one whose `run` client
        // was killed. Off the async threads: the engine may take a moment.
        let (engine, name) = (self.engine.clone(), std::mem::take(&mut self.name));
        std::thread::spawn(move || {
            let _ = std::process::Command::new(engine)
                .args(["rm", "--force", "--time", "0", &name])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        });
    }
}

impl Sandbox {
    /// Whether `spec` can run in `cwd` with `network` here: the engine, its `--network`
    /// and the working dir with its links resolved.
    pub(super) fn container_check(
        &self,
        spec: &ContainerSpec,
        cwd: &Path,
        network: &Network,
    ) -> Result<(&Engine, &'static str, PathBuf), String> {
        let engine = self.inner.engine.as_ref().ok_or(
            "this environment runs in a container (containerImage) and this node has no \
             container engine; install podman (apt-get install podman) or docker",
        )?;
        image_reference(&spec.image)?;
        let net = match network {
            Network::On => "host",
            Network::Off => "none",
            Network::Allowlist(_) => {
                return Err(
                    "networkAccess \"allowlist\" is not available in containers yet; \
                            use \"on\" or \"off\" for an environment with a containerImage"
                        .into(),
                )
            }
        };
        Ok((engine, net, self.confined_dir(cwd)?))
    }

    /// `program args` in a container of `spec.image`, in `cwd`, with `network`.
    pub(super) fn container_command(
        &self,
        spec: &ContainerSpec,
        program: &str,
        args: &[&str],
        cwd: &Path,
        env: &BTreeMap<String, String>,
        network: &Network,
    ) -> Result<Prepared, String> {
        let (engine, net, cwd) = self.container_check(spec, cwd, network)?;
        let name = format!("viber-{:016x}", crate::crypto::random_u64());
        let mut bind = OsString::from(&cwd);
        bind.push(":");
        bind.push(&cwd);
        let mut a: Vec<OsString> = vec![
            "run".into(),
            "--rm".into(),
            "--name".into(),
            name.clone().into(),
            "--network".into(),
            net.into(),
            "--cap-drop".into(),
            "ALL".into(),
            "--security-opt".into(),
            "no-new-privileges".into(),
            "--volume".into(),
            bind,
            "--workdir".into(),
            cwd.clone().into(),
        ];
        if let Some(volume) = &spec.home_volume {
            a.push("--volume".into());
            a.push(format!("{volume}:{HOME_INSIDE}").into());
            a.push("--env".into());
            a.push(format!("HOME={HOME_INSIDE}").into());
        }
        // By name only: the engine reads each value from its own environment.
        for k in env.keys() {
            a.push("--env".into());
            a.push(k.into());
        }
        a.push(spec.image.clone().into());
        a.push(program.into());
        a.extend(args.iter().map(OsString::from));
        let mut cmd = tokio::process::Command::new(&engine.path);
        cmd.args(a).current_dir(&cwd);
        set_env(&mut cmd, env);
        Ok(Prepared {
            cmd,
            guard: Some(Guard::Container(Running {
                engine: engine.path.clone(),
                name,
            })),
        })
    }
}
