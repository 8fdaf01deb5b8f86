//! `viber shell` and `viber terminal ...`: terminals on nodes through the gateway's viewer
//! WebSocket (`/api/terminals/:id/ws`).
//!
//! Interactive (stdin is a terminal): raw mode, the window size follows SIGWINCH, Ctrl-]
//! detaches and leaves the terminal running. With a command and piped stdin: the input is
//! passed through (no echo), end of input is sent as Ctrl-D, and `viber shell` exits with
//! the command's code.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::args::ShellArgs;
use super::{or_dash, print_table, seg, Client};
use crate::protocol::api::{
    EnvironmentView, NodeList, OpenTerminal, TerminalList, TerminalView, ViewerEvent, ViewerInput,
};
use crate::protocol::terminal::Bytes64;

/// Ctrl-]: detach, as telnet and `docker attach` do.
const DETACH_KEY: u8 = 0x1d;
/// Ctrl-D: end of input for a program reading the terminal.
const EOT: u8 = 0x04;

/// `viber shell`: exits with the command's code (0 after a detach).
pub async fn shell(client: &Client, args: &ShellArgs) -> anyhow::Result<u8> {
    let interactive = std::io::stdin().is_terminal();
    let (cols, rows) = args.size.or_else(window_size).unwrap_or((80, 24));
    let existing = if args.new || !args.command.is_empty() {
        None
    } else {
        find_shell(client, args).await?
    };
    let term = match existing {
        Some(t) => t,
        None => {
            let body = OpenTerminal {
                thread_id: args.thread.clone(),
                environment: args.thread.is_none().then(|| args.env.clone()),
                node: args.node.clone().filter(|_| args.thread.is_none()),
                command: args.command.clone(),
                cols: Some(cols),
                rows: Some(rows),
                echo: Some(interactive || args.command.is_empty()),
                ..OpenTerminal::default()
            };
            client.post("/api/terminals", &body).await?
        }
    };
    if interactive {
        eprintln!(
            "[terminal {} on {}; Ctrl-] detaches]\r",
            term.id, term.node_id
        );
    }
    attach(client, &term, interactive, (cols, rows)).await
}

/// The running shell (not a command) of the environment on the node, or of the thread.
async fn find_shell(client: &Client, args: &ShellArgs) -> anyhow::Result<Option<TerminalView>> {
    let env: EnvironmentView = client
        .get(&format!("/api/environments/{}", seg(&args.env)))
        .await?;
    let q = match &args.thread {
        Some(t) => format!("?threadId={}", seg(t)),
        None => String::new(),
    };
    let node = match &args.node {
        Some(n) => {
            let nodes: NodeList = client.get("/api/nodes").await?;
            let found = nodes.nodes.into_iter().find(|v| v.id == *n || v.name == *n);
            Some(found.with_context(|| format!("no node {n:?}"))?.id)
        }
        None => None,
    };
    let list: TerminalList = client.get(&format!("/api/terminals{q}")).await?;
    Ok(list.terminals.into_iter().find(|t| {
        t.environment_id == env.id
            && t.command.is_empty()
            && t.persistent
            && (args.thread.is_some() || t.thread_id.is_none())
            && node.as_ref().is_none_or(|n| t.node_id == *n)
    }))
}

/// Restores the terminal's mode when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).context("entering raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = nix::sys::termios::tcsetattr(
            stdin.as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// This terminal's size, when stdout is one.
fn window_size() -> Option<(u16, u16)> {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer, which outlives the call.
    let r = unsafe { nix::libc::ioctl(1, nix::libc::TIOCGWINSZ as _, &mut ws as *mut _) };
    (r == 0 && ws.ws_col > 0 && ws.ws_row > 0).then_some((ws.ws_col, ws.ws_row))
}

fn viewer_url(client: &Client, id: &str, offset: u64) -> String {
    let base = client.base();
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        format!("ws://{base}")
    };
    format!("{ws}/api/terminals/{}/ws?offset={offset}", seg(id))
}

fn input(i: &ViewerInput) -> Message {
    Message::Text(serde_json::to_string(i).unwrap_or_default().into())
}

/// Shows the terminal until it ends or the user detaches; the exit code to end with.
async fn attach(
    client: &Client,
    term: &TerminalView,
    interactive: bool,
    (cols, rows): (u16, u16),
) -> anyhow::Result<u8> {
    let mut req = viewer_url(client, &term.id, 0)
        .into_client_request()
        .context("bad gateway URL")?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", client.token())
            .parse()
            .context("bad token")?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("opening terminal {}", term.id))?;
    let (mut sink, mut stream) = ws.split();
    let _raw = if interactive {
        Some(RawMode::enter()?)
    } else {
        None
    };
    if interactive {
        // The terminal may have been opened at another size.
        sink.send(input(&ViewerInput::Resize { cols, rows }))
            .await?;
    }
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 8192];
    let mut stdin_open = true;
    let mut last_byte: Option<u8> = None;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => bail!("the gateway closed the terminal's connection"),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("terminal connection: {e}"),
                };
                match serde_json::from_str::<ViewerEvent>(text.as_str()) {
                    Ok(ViewerEvent::Output { data, .. }) => {
                        stdout.write_all(&data.0)?;
                        stdout.flush()?;
                    }
                    Ok(ViewerEvent::Skipped { .. }) => {}
                    Ok(ViewerEvent::Exit { code }) => {
                        drop(_raw);
                        return Ok(code.map(|c| c.clamp(0, 255) as u8).unwrap_or(1));
                    }
                    Ok(ViewerEvent::Error { message }) => {
                        drop(_raw);
                        bail!("{message}");
                    }
                    Err(e) => bail!("the gateway sent an unknown message: {e}"),
                }
            }
            n = stdin.read(&mut buf), if stdin_open => {
                let n = n?;
                if n == 0 {
                    stdin_open = false;
                    if !interactive {
                        // Ctrl-D ends the input at the start of a line; after a partial
                        // line the first one only hands that line over.
                        let eot = if last_byte.is_some_and(|b| b != b'\n') { vec![EOT, EOT] } else { vec![EOT] };
                        sink.send(input(&ViewerInput::InputBytes { data: Bytes64(eot) })).await?;
                    }
                    continue;
                }
                last_byte = buf[..n].last().copied();
                let mut bytes = &buf[..n];
                let detach = interactive && bytes.contains(&DETACH_KEY);
                if detach {
                    let at = bytes.iter().position(|b| *b == DETACH_KEY).unwrap_or(0);
                    bytes = &bytes[..at];
                }
                if !bytes.is_empty() {
                    let data = Bytes64(bytes.to_vec());
                    sink.send(input(&ViewerInput::InputBytes { data })).await?;
                }
                if detach {
                    let _ = sink.close().await;
                    drop(_raw);
                    eprintln!("\r\n[detached from terminal {}; `viber shell` attaches again]", term.id);
                    return Ok(0);
                }
            }
            _ = winch.recv() => {
                if let Some((cols, rows)) = window_size() {
                    sink.send(input(&ViewerInput::Resize { cols, rows })).await?;
                }
            }
        }
    }
}

/// `viber terminal list`.
pub async fn list(
    client: &Client,
    thread: Option<String>,
    all: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut q = vec![];
    if let Some(t) = &thread {
        q.push(format!("threadId={}", seg(t)));
    }
    if all {
        q.push("all=true".into());
    }
    let path = if q.is_empty() {
        "/api/terminals".to_string()
    } else {
        format!("/api/terminals?{}", q.join("&"))
    };
    let list: TerminalList = client.get(&path).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .terminals
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.node_id.clone(),
                t.status.clone(),
                if t.command.is_empty() {
                    "(shell)".into()
                } else {
                    t.command.join(" ")
                },
                or_dash(t.thread_id.as_deref()),
                t.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                t.created_at.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "NODE", "STATUS", "COMMAND", "THREAD", "PORTS", "CREATED",
        ],
        &rows,
    );
    Ok(())
}

/// `viber terminal kill ID`.
pub async fn kill(client: &Client, id: &str) -> anyhow::Result<()> {
    let t: TerminalView = client
        .send(client.request(
            reqwest::Method::DELETE,
            &format!("/api/terminals/{}", seg(id)),
        ))
        .await?;
    println!("terminal {} {}", t.id, t.status);
    Ok(())
}
