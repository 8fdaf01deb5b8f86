//! `viber sandbox-forward SOCKET -- PROGRAM ARGS...`: runs inside a sandbox whose only
//! network is loopback. Listens on a loopback port, points `HTTP_PROXY`/`HTTPS_PROXY` (and
//! their lowercase forms) at it, runs the program, and copies each connection to the node's
//! allowlist proxy on the unix socket bound into the sandbox. Exits with the program's
//! status.
//!
//! Plain threads and std I/O on purpose: it is small, starts fast and holds no runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "sandbox-forward";

/// Runs the forwarder; returns the exit code for the process.
pub fn run(socket: PathBuf, program: &[String]) -> i32 {
    let Some((cmd, args)) = program.split_first() else {
        eprintln!("viber sandbox-forward: no program to run");
        return 2;
    };
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("viber sandbox-forward: cannot listen on loopback: {e}");
            return 125;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let socket = socket.clone();
            std::thread::spawn(move || relay(conn, &socket));
        }
    });
    // Stop signals are for the program: the forwarder waits for it to exit (a handler, not
    // SIG_IGN, so the program does not inherit the disposition).
    ignore_stop_signals();
    let url = format!("http://127.0.0.1:{port}");
    let status = std::process::Command::new(cmd)
        .args(args)
        .env("HTTP_PROXY", &url)
        .env("HTTPS_PROXY", &url)
        .env("http_proxy", &url)
        .env("https_proxy", &url)
        .env("NO_PROXY", "localhost,127.0.0.1,::1")
        .env("no_proxy", "localhost,127.0.0.1,::1")
        .status();
    match status {
        Ok(st) => st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)),
        Err(e) => {
            eprintln!("viber sandbox-forward: cannot run {cmd}: {e}");
            127
        }
    }
}

fn relay(tcp: TcpStream, socket: &std::path::Path) {
    let unix = match UnixStream::connect(socket) {
        Ok(u) => u,
        Err(e) => {
            let body = format!("viber: the network proxy is gone: {e}\n");
            let _ = write!(
                &tcp,
                "HTTP/1.1 502 Bad Gateway\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            return;
        }
    };
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(tcp2, unix2));
    pipe(unix, tcp);
    let _ = up.join();
}

/// Copies until EOF, then half-closes the other side.
fn pipe<R: Read + Shut, W: Write + Shut>(mut from: R, mut to: W) {
    let _ = std::io::copy(&mut from, &mut to);
    to.shut_write();
    from.shut_read();
}

trait Shut {
    fn shut_write(&self);
    fn shut_read(&self);
}

impl Shut for TcpStream {
    fn shut_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn shut_read(&self) {
        let _ = self.shutdown(Shutdown::Read);
    }
}

impl Shut for UnixStream {
    fn shut_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
    fn shut_read(&self) {
        let _ = self.shutdown(Shutdown::Read);
    }
}

extern "C" fn on_stop_signal(_: nix::libc::c_int) {}

fn ignore_stop_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}
