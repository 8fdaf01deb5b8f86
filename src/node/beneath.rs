//! Files opened beneath a directory, so that no path a repository or a model controls can
//! reach outside it.
//!
//! Paths are not checked as text and opened later (a symlink can change in between, and a
//! dangling one looks like a new name): every open resolves the path relative to a
//! descriptor of the directory, and the kernel refuses any step that leaves it
//! (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`). Symlinks that stay inside the
//! tree keep working. On a kernel without `openat2` (before 5.6), the path is walked one
//! component at a time with `O_NOFOLLOW`, which refuses every symlink.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

/// A directory that every open stays beneath.
pub struct Beneath {
    root: OwnedFd,
}

impl Beneath {
    /// Opens the directory at `path` (the operator's path: followed as given).
    pub fn open_root(path: &Path) -> io::Result<Beneath> {
        let dir = File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                path.display()
            )));
        }
        Ok(Beneath { root: dir.into() })
    }

    /// Opens `rel` (relative, no `..`) beneath the root.
    pub fn open(&self, rel: &Path, flags: OFlag, mode: Mode) -> io::Result<File> {
        Ok(File::from(open_in(&self.root, rel, flags, mode)?))
    }

    /// Reads a regular file. Opening does not wait (a FIFO planted in the tree would block a
    /// reader for good); anything but a regular file is refused.
    pub fn read_to_string(&self, rel: &Path) -> io::Result<String> {
        let mut f = self.open(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())?;
        if !f.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                rel.display()
            )));
        }
        let mut s = String::new();
        f.read_to_string(&mut s)?;
        Ok(s)
    }

    /// Whether `rel` resolves to something beneath the root.
    pub fn contains(&self, rel: &Path) -> bool {
        self.open(rel, OFlag::O_PATH, Mode::empty()).is_ok()
    }

    /// Writes `data` to `rel`, creating or truncating it and creating missing parent
    /// directories, all beneath the root. An existing file keeps its mode.
    pub fn write(&self, rel: &Path, data: &[u8]) -> io::Result<()> {
        self.write_as(rel, data, false)
    }

    /// [`Self::write`] for a secret: directories it creates are the owner's only (0700)
    /// and the file is 0600, whatever it was before.
    pub fn write_private(&self, rel: &Path, data: &[u8]) -> io::Result<()> {
        self.write_as(rel, data, true)
    }

    fn write_as(&self, rel: &Path, data: &[u8], private: bool) -> io::Result<()> {
        let (file_mode, dir_mode) = if private {
            (0o600, 0o700)
        } else {
            (0o644, 0o755)
        };
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::other("not a file name"))?;
        let parent = self.create_dirs(rel.parent().unwrap_or(Path::new("")), dir_mode)?;
        // Not truncated before it is known to be a regular file; never waits on a FIFO.
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NONBLOCK;
        let fd = open_in(
            &parent,
            Path::new(name),
            flags,
            Mode::from_bits_truncate(file_mode),
        )?;
        let mut f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                rel.display()
            )));
        }
        if private {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(file_mode))?;
        }
        f.set_len(0)?;
        f.write_all(data)
    }

    /// Opens the directory `rel`, creating what is missing one level at a time (with `mode`).
    fn create_dirs(&self, rel: &Path, mode: u32) -> io::Result<OwnedFd> {
        let mut cur = self.root.try_clone()?;
        for name in names(rel)? {
            let dir = OFlag::O_DIRECTORY | OFlag::O_RDONLY;
            cur = match open_in(&cur, Path::new(name), dir, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    mkdirat(&cur, name, Mode::from_bits_truncate(mode)).map_err(io::Error::from)?;
                    open_in(&cur, Path::new(name), dir, Mode::empty())?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }
}

/// The normal components of a relative path; `..`, roots and prefixes are refused.
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(io::Error::other(format!(
                "{} leaves the directory",
                rel.display()
            ))),
        })
        .collect()
}

fn open_in(dir: &OwnedFd, rel: &Path, flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
    let parts = names(rel)?;
    let rel = if parts.is_empty() {
        Path::new(".")
    } else {
        rel
    };
    // openat2 refuses flags that do not go with O_PATH.
    let extra = if flags.contains(OFlag::O_PATH) {
        OFlag::O_CLOEXEC
    } else {
        OFlag::O_CLOEXEC | OFlag::O_NOCTTY
    };
    let how = OpenHow::new()
        .flags(flags | extra)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir.as_fd(), rel, how) {
        Err(Errno::ENOSYS) | Err(Errno::EPERM) => walk(dir, &parts, flags, mode),
        Err(Errno::EXDEV) | Err(Errno::ELOOP) => Err(escape(rel)),
        other => other.map_err(io::Error::from),
    }
}

/// Without `openat2`: one component at a time, never following a symlink.
fn walk(dir: &OwnedFd, parts: &[&OsStr], flags: OFlag, mode: Mode) -> io::Result<OwnedFd> {
    let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Some((last, parents)) = parts.split_last() else {
        return openat(dir.as_fd(), ".", flags | OFlag::O_CLOEXEC, mode).map_err(io::Error::from);
    };
    let mut cur = dir.try_clone()?;
    for name in parents {
        cur = openat(
            cur.as_fd(),
            *name,
            OFlag::O_DIRECTORY | nofollow,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => escape(Path::new(name)),
            e => io::Error::from(e),
        })?;
    }
    openat(cur.as_fd(), *last, flags | nofollow, mode).map_err(|e| match e {
        Errno::ELOOP => escape(Path::new(last)),
        e => io::Error::from(e),
    })
}

fn escape(rel: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} leads outside the working directory (through a symlink)",
            rel.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_out_are_refused_and_symlinks_within_work() {
        let dir =
            std::env::temp_dir().join(format!("viber-beneath-{}", crate::crypto::random_u64()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.join("secret"), "key").unwrap();
        std::fs::write(root.join("sub/inner.txt"), "inside").unwrap();
        std::os::unix::fs::symlink(dir.join("secret"), root.join("leak")).unwrap();
        std::os::unix::fs::symlink(dir.join("new-file"), root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
        std::os::unix::fs::symlink("sub/inner.txt", root.join("ok")).unwrap();
        let b = Beneath::open_root(&root).unwrap();

        assert!(b.read_to_string(Path::new("leak")).is_err());
        assert!(b.read_to_string(Path::new("slash/etc/passwd")).is_err());
        assert!(b.write(Path::new("dangling"), b"x").is_err());
        assert!(!dir.join("new-file").exists());
        assert!(b.write(Path::new("slash/tmp/x"), b"x").is_err());
        assert!(b.read_to_string(Path::new("../secret")).is_err());
        assert_eq!(b.read_to_string(Path::new("ok")).unwrap(), "inside");
        assert!(b.contains(Path::new("sub/inner.txt")));
        assert!(!b.contains(Path::new("leak")));

        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = b.read_to_string(Path::new("fifo")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        // Writing to it neither waits for a reader nor succeeds.
        assert!(b.write(Path::new("fifo"), b"x").is_err());

        b.write(Path::new("a/b/c.txt"), b"made").unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("a/b/c.txt")).unwrap(),
            "made"
        );

        // A secret: private directories and file, also over a file that was readable, and
        // never through a symlinked directory.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        b.write(Path::new("creds/old.json"), b"was public").unwrap();
        b.write_private(Path::new("creds/old.json"), b"{}").unwrap();
        assert_eq!(mode("creds/old.json"), 0o600);
        b.write_private(Path::new("p/q/token"), b"t").unwrap();
        assert_eq!(
            (mode("p"), mode("p/q"), mode("p/q/token")),
            (0o700, 0o700, 0o600)
        );
        assert!(b.write_private(Path::new("slash/tmp/token"), b"t").is_err());
        assert!(b.write_private(Path::new("../token"), b"t").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
