//! What a sandboxed process starts with: its environment (the node's minus its internals,
//! bus and agent sockets and credentials, plus the task's) and a session of its own.
//!
//! Must not touch: what the process may see of the file system or the network (`bwrap.rs`).

use std::collections::BTreeMap;
use std::ffi::OsString;

/// Names of the node's own variables that a task must not inherit: its internals, sockets
/// to agents and buses outside the sandbox, and anything named like a credential.
fn internal(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    up.starts_with("VIBER_")
        || up.starts_with("DBUS_")
        || [
            "TMPDIR",
            "XDG_RUNTIME_DIR",
            "SSH_AUTH_SOCK",
            "SSH_AGENT_PID",
            "GPG_AGENT_INFO",
        ]
        .contains(&up.as_str())
        || [
            "KEY",
            "TOKEN",
            "SECRET",
            "PASSWORD",
            "PASSWD",
            "CREDENTIAL",
            "CREDS",
            "AUTH",
            "_PAT",
            "_DSN",
            "_PWD",
        ]
        .iter()
        .any(|w| up.contains(w))
}

/// A value that carries a password in a URL (`scheme://user:secret@host`).
fn has_userinfo(value: &std::ffi::OsStr) -> bool {
    let v = value.to_string_lossy();
    v.split("://").skip(1).any(|rest| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

/// A task process's environment: the node's, minus its internals and credentials, plus
/// `env` (the task's vars and secrets, which may name anything).
pub fn process_env(env: &BTreeMap<String, String>) -> Vec<(OsString, OsString)> {
    let mut out: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, v)| k.to_str().is_some_and(|k| !internal(k)) && !has_userinfo(v))
        .filter(|(k, _)| k.to_str().is_some_and(|k| !env.contains_key(k)))
        .collect();
    out.extend(env.iter().map(|(k, v)| (k.into(), v.into())));
    out
}

/// Starts the process in a session of its own (so also a process group of its own, whose
/// id is its pid): it has no controlling terminal, so it cannot push keystrokes into the
/// terminal of a node started in one, and stopping the group reaches all it starts.
pub fn own_session(cmd: &mut tokio::process::Command) {
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

pub(super) fn set_env(cmd: &mut tokio::process::Command, env: &BTreeMap<String, String>) {
    cmd.env_clear().envs(process_env(env));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_internals_and_credentials_are_not_inherited() {
        for k in [
            "VIBER_HOME",
            "viber_node_token",
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "PGPASSWORD",
            "TMPDIR",
            "MYSQL_PWD",
            "GITHUB_PAT",
            "SENTRY_DSN",
            "DBUS_SESSION_BUS_ADDRESS",
            "XDG_RUNTIME_DIR",
            "SSH_AUTH_SOCK",
        ] {
            assert!(internal(k), "{k}");
        }
        for k in [
            "PATH",
            "HOME",
            "LANG",
            "TERM",
            "USER",
            "CARGO_HOME",
            "PWD",
            "OLDPWD",
        ] {
            assert!(!internal(k), "{k}");
        }
        assert!(has_userinfo("postgres://app:pw@db:5432/x".as_ref()));
        assert!(has_userinfo("http://u:p@proxy:3128".as_ref()));
        assert!(!has_userinfo("https://example.com/a@b".as_ref()));
        assert!(!has_userinfo("/usr/bin:/bin".as_ref()));
        // What the task itself sets is kept, whatever its name.
        let env = BTreeMap::from([("GIT_TOKEN".to_string(), "t".to_string())]);
        let got = process_env(&env);
        assert!(got.iter().any(|(k, v)| k == "GIT_TOKEN" && v == "t"));
        assert_eq!(got.iter().filter(|(k, _)| k == "GIT_TOKEN").count(), 1);
    }
}
