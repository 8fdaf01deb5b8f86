//! A process under a pseudo-terminal: the node holds the master side, the process gets the
//! slave as its stdin, stdout, stderr and controlling terminal, in a session of its own.
//!
//! Must not touch: what runs (the caller builds the command, sandboxed), what the output
//! means (`mod.rs` redacts it and keeps it in the ring).

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;

use nix::pty::Winsize;
use nix::sys::termios::{self, LocalFlags, SetArg};
use tokio::io::unix::AsyncFd;

/// The node's side of a terminal.
pub struct Master {
    fd: AsyncFd<OwnedFd>,
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Starts `cmd` under a new terminal of `cols` x `rows`, echoing input or not.
pub fn spawn(
    mut cmd: tokio::process::Command,
    cols: u16,
    rows: u16,
    echo: bool,
) -> std::io::Result<(tokio::process::Child, Master)> {
    let pty = nix::pty::openpty(Some(&winsize(cols, rows)), None).map_err(std::io::Error::from)?;
    // Close-on-exec, so a process the node starts meanwhile on another thread does not keep
    // this terminal's ends open (its end would then never be seen).
    for fd in [&pty.master, &pty.slave] {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
    }
    if !echo {
        let mut t = termios::tcgetattr(&pty.slave).map_err(std::io::Error::from)?;
        t.local_flags
            .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ECHOE | LocalFlags::ECHOK);
        termios::tcsetattr(&pty.slave, SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
    }
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs between fork and
    // exec. The slave is fd 0 by now.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if nix::libc::ioctl(0, nix::libc::TIOCSCTTY as _, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The command holds the parent's copies of the slave: without them, reading the master
    // fails once the process tree is gone.
    drop(cmd);
    set_nonblocking(&pty.master)?;
    // SAFETY: the OwnedFd is a valid open descriptor that the AsyncFd owns until dropped.
    let fd = unsafe { AsyncFd::register(pty.master) }.map_err(std::io::Error::from)?;
    Ok((child, Master { fd }))
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

impl Master {
    /// Reads what the terminal printed; `Ok(0)` once every process holding the slave is
    /// gone (Linux answers EIO then).
    pub async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Types some of `bytes` into the terminal, once it takes any; how many it took.
    /// Cancel-safe.
    pub async fn write(&self, bytes: &[u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(std::io::Error::from))
            {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sets the window size; the process gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) -> std::io::Result<()> {
        let ws = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
        let r = unsafe {
            nix::libc::ioctl(
                self.fd.get_ref().as_raw_fd(),
                nix::libc::TIOCSWINSZ as _,
                &ws as *const Winsize,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
