//! `viber gateway install`, `viber node install --gateway URL`, `viber all-in-one install`
//! and their `uninstall`: a systemd unit that runs the role (system-wide as root, `--user`
//! otherwise), restarted on failure, its settings and secrets in an environment file (0600,
//! the `VIBER_*` variables every flag reads), and hardening that leaves the node's work alone.
//! On macOS the launchd plist is printed instead (not installed).
//!
//! Owns: the unit's and environment file's text, where they go, and the `systemctl` calls.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;

use super::args::{InstallArgs, UninstallArgs};

/// The role a service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Node,
    AllInOne,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Node => "node",
            Role::AllInOne => "all-in-one",
        }
    }

    fn unit(self) -> String {
        format!("viber-{}.service", self.name())
    }

    fn description(self) -> &'static str {
        match self {
            Role::Gateway => "viber gateway: API, board and the endpoint nodes dial",
            Role::Node => "viber node: runs agent tasks and terminals in sandboxes",
            Role::AllInOne => "viber all-in-one: a gateway and its node",
        }
    }
}

/// Where a service's files go and what it runs as.
struct Layout {
    user: bool,
    unit_dir: PathBuf,
    env_file: PathBuf,
    data_dir: PathBuf,
}

fn layout(role: Role, user: bool, unit_dir: Option<&Path>) -> anyhow::Result<Layout> {
    if user {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = var("HOME").context("HOME is not set: a --user service needs it")?;
        let config = var("XDG_CONFIG_HOME")
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| home.join(".config"));
        let data_dir = match role {
            Role::Node => super::default_data_dir().join("node"),
            _ => super::default_data_dir(),
        };
        Ok(Layout {
            user,
            unit_dir: unit_dir.map_or_else(|| config.join("systemd/user"), Path::to_path_buf),
            env_file: config.join(format!("viber/{}.env", role.name())),
            data_dir,
        })
    } else {
        Ok(Layout {
            user,
            unit_dir: unit_dir
                .map_or_else(|| PathBuf::from("/etc/systemd/system"), Path::to_path_buf),
            env_file: PathBuf::from(format!("/etc/viber/{}.env", role.name())),
            data_dir: PathBuf::from(format!("/var/lib/viber-{}", role.name())),
        })
    }
}

/// A word of `ExecStart=`, quoted for systemd when it needs to be, with `%` and `$` escaped.
fn systemd_word(s: &str) -> String {
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if !escaped.is_empty()
        && escaped
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The unit's text.
fn unit_text(role: Role, l: &Layout, exe: &Path, extra: &[String]) -> String {
    let mut exec = vec![
        systemd_word(&exe.to_string_lossy()),
        role.name().to_string(),
    ];
    exec.extend(extra.iter().map(|a| systemd_word(a)));
    let after = if l.user {
        "After=network.target"
    } else {
        "After=network-online.target\nWants=network-online.target"
    };
    let wanted_by = if l.user {
        "default.target"
    } else {
        "multi-user.target"
    };
    let data = l.data_dir.to_string_lossy();
    let state = if l.user {
        String::new()
    } else {
        // systemd makes it (0700) before the first start.
        format!(
            "StateDirectory=viber-{}\nStateDirectoryMode=0700\n",
            role.name()
        )
    };
    format!(
        "# Written by `viber {role} install`; `viber {role} uninstall` removes it.\n\
         # Settings and secrets: {env} (the VIBER_* variables of `viber {role} --help`).\n\
         [Unit]\n\
         Description={desc}\n\
         {after}\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Environment=VIBER_HOME={data}\n\
         EnvironmentFile=-{env}\n\
         {state}\
         Restart=on-failure\n\
         RestartSec=2s\n\
         # The main process gets SIGTERM first: a node stops its tasks its own way.\n\
         KillMode=mixed\n\
         TimeoutStopSec=30s\n\
         # Hardening that leaves the work alone: the sandbox (bubblewrap) needs user and mount\n\
         # namespaces, so namespaces are not restricted; everything but the data dir (which\n\
         # holds the workspace) is read-only.\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ReadWritePaths={data}\n\
         PrivateTmp=yes\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        role = role.name(),
        env = l.env_file.display(),
        desc = role.description(),
        exec = exec.join(" "),
    )
}

/// The launchd plist for macOS: printed, for `~/Library/LaunchAgents/`.
fn plist_text(role: Role, exe: &Path, extra: &[String], data_dir: &Path) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut args = vec![esc(&exe.to_string_lossy()), role.name().to_string()];
    args.extend(extra.iter().map(|a| esc(a)));
    let args: String = args
        .iter()
        .map(|a| format!("    <string>{a}</string>\n"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \x20 <key>Label</key><string>dev.viber.{name}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
         \x20 <key>EnvironmentVariables</key>\n  <dict><key>VIBER_HOME</key><string>{data}</string></dict>\n\
         \x20 <key>RunAtLoad</key><true/>\n\
         \x20 <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
         </dict>\n</plist>\n",
        name = role.name(),
        data = esc(&data_dir.to_string_lossy()),
    )
}

/// `KEY=value` lines for the environment file, from what the install command was given.
pub type Settings = Vec<(&'static str, String)>;

/// Writes (or updates) the environment file, 0600: keys given replace their lines, other
/// lines (the operator's edits) stay.
fn write_env_file(path: &Path, role: Role, settings: &Settings) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| {
        format!(
            "# Settings and secrets of viber-{0} (read by systemd; `viber {0} --help` lists the\n\
             # VIBER_* variables). Restart the service after an edit.\n",
            role.name()
        )
    });
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| {
            !settings
                .iter()
                .any(|(k, _)| l.starts_with(&format!("{k}=")))
        })
        .map(str::to_string)
        .collect();
    lines.extend(settings.iter().map(|(k, v)| format!("{k}={v}")));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode otherwise.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all((lines.join("\n") + "\n").as_bytes())?;
    Ok(())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `systemctl [--user] ARGS`; fails with its output.
fn systemctl(user: bool, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new("systemctl");
    if user {
        cmd.arg("--user");
    }
    let out = cmd
        .args(args)
        .output()
        .context("running systemctl (is systemd installed?)")?;
    if !out.status.success() {
        anyhow::bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs (or with `--print` shows) the service of `role`.
pub fn install(role: Role, a: &InstallArgs, settings: Settings) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding this executable")?;
    let user = a.user || !is_root();
    let l = layout(role, user, a.unit_dir.as_deref())?;
    if cfg!(target_os = "macos") {
        print!("{}", plist_text(role, &exe, &a.args, &l.data_dir));
        eprintln!(
            "save it as ~/Library/LaunchAgents/dev.viber.{}.plist and run `launchctl load` on it",
            role.name()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let unit = unit_text(role, &l, &exe, &a.args);
    if a.print {
        print!("{unit}");
        for (k, v) in &settings {
            let shown = if k.contains("TOKEN") { "<hidden>" } else { v };
            eprintln!("{} would get {k}={shown}", l.env_file.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&l.unit_dir)
        .with_context(|| format!("creating {}", l.unit_dir.display()))?;
    let unit_path = l.unit_dir.join(role.unit());
    std::fs::write(&unit_path, &unit)
        .with_context(|| format!("writing {}", unit_path.display()))?;
    write_env_file(&l.env_file, role, &settings)?;
    if l.user {
        // The data dir must exist to be made writable in the unit's read-only view.
        std::fs::create_dir_all(&l.data_dir)?;
    }
    println!("wrote {}", unit_path.display());
    println!("settings and secrets: {} (0600)", l.env_file.display());
    println!("data dir: {}", l.data_dir.display());
    if a.no_start {
        println!(
            "not started: `systemctl{} daemon-reload && systemctl{} enable --now {}`",
            if l.user { " --user" } else { "" },
            if l.user { " --user" } else { "" },
            role.unit()
        );
        return Ok(ExitCode::SUCCESS);
    }
    systemctl(l.user, &["daemon-reload"])?;
    systemctl(l.user, &["enable", "--now", &role.unit()])?;
    println!(
        "started; follow it with `journalctl{} -u {} -f`",
        if l.user { " --user" } else { "" },
        role.unit()
    );
    Ok(ExitCode::SUCCESS)
}

/// Stops, disables and removes the service of `role`; its data dir and environment file stay.
pub fn uninstall(role: Role, a: &UninstallArgs) -> anyhow::Result<ExitCode> {
    let user = a.user || !is_root();
    let l = layout(role, user, a.unit_dir.as_deref())?;
    let unit_path = l.unit_dir.join(role.unit());
    if !a.no_stop {
        systemctl(l.user, &["disable", "--now", &role.unit()])?;
    }
    match std::fs::remove_file(&unit_path) {
        Ok(()) => println!("removed {}", unit_path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("{} was not installed", unit_path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("removing {}", unit_path.display())),
    }
    if !a.no_stop {
        systemctl(l.user, &["daemon-reload"])?;
    }
    println!(
        "kept the data dir {} and the settings {}; delete them yourself if you no longer need them",
        l.data_dir.display(),
        l.env_file.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_are_quoted_and_escaped() {
        assert_eq!(systemd_word("/usr/bin/viber"), "/usr/bin/viber");
        assert_eq!(
            systemd_word("--listen=0.0.0.0:7391"),
            "--listen=0.0.0.0:7391"
        );
        assert_eq!(systemd_word("a b"), "\"a b\"");
        assert_eq!(systemd_word("100%"), "\"100%%\"");
        assert_eq!(systemd_word("$HOME"), "\"$$HOME\"");
        assert_eq!(systemd_word("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(systemd_word(""), "\"\"");
    }
}
