//! memtide's Unix-socket plumbing, in one place.
//!
//! - [`bind_private`]: a listener at a path, private to this user (mode
//!   0600), that replaces only a *stale* socket (one nobody listens on);
//!   a live socket or anything that is not a socket is refused and left
//!   alone.
//! - [`sockaddr`] and [`connect`]: a `sockaddr_un` built from a checked
//!   path, and a connect that is either non-blocking or waits at most a
//!   given time for room in a full backlog.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Mode of a private socket: only this user may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// Room in `sockaddr_un.sun_path`, without the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// `AF_UNIX` as the address family field's type.
#[allow(
    clippy::cast_possible_truncation,
    reason = "AF_UNIX is 1, which fits sa_family_t"
)]
const AF_UNIX_FAMILY: libc::sa_family_t = libc::AF_UNIX as libc::sa_family_t;

/// Why a private listener could not be bound. Each variant names the path;
/// callers map them into their own error types and wording.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live socket is at the path: another process listens on it.
    #[error("{0}: another process is listening on it")]
    InUse(PathBuf),
    /// Something other than a socket is at the path; it is left alone.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The path could not be examined, the stale socket removed, or the
    /// socket bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The socket's mode could not be set.
    #[error("cannot make {path} private (mode 0600): {source}")]
    Permissions {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// What is at a socket path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A socket nobody listens on (left by an earlier run).
    StaleSocket,
}

/// Checks that `path` can become a listening socket: nothing is there, or
/// a stale socket. A live socket, a regular file, a directory or a symlink
/// is an error naming the path, and is left alone.
pub fn check_path(path: &Path) -> Result<Found, BindError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Found::Nothing),
        Err(source) => Err(BindError::Bind {
            path: path.to_path_buf(),
            source,
        }),
        Ok(m) if !m.file_type().is_socket() => Err(BindError::NotASocket(path.to_path_buf())),
        Ok(_) if UnixStream::connect(path).is_ok() => Err(BindError::InUse(path.to_path_buf())),
        Ok(_) => Ok(Found::StaleSocket),
    }
}

/// Binds a (blocking) listener at `path`, replacing only a stale socket
/// (see [`check_path`]), and makes it mode 0600.
pub fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    let bind_err = |source| BindError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if check_path(path)? == Found::StaleSocket {
        std::fs::remove_file(path).map_err(bind_err)?;
    }
    // Whatever appeared since the check makes bind fail (EADDRINUSE); it is
    // never removed.
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| BindError::Permissions {
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(listener)
}

/// The `sockaddr_un` for `path` and its length. `InvalidInput` for a path
/// that is empty, holds a NUL or is over [`MAX_SOCKET_PATH`] bytes.
pub fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    let bytes = path.as_os_str().as_bytes();
    let mut addr = libc::sockaddr_un {
        sun_family: AF_UNIX_FAMILY,
        sun_path: [0; 108],
    };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a usable Unix socket path (empty, NUL or over 107 bytes)",
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = libc::c_char::from_ne_bytes([*s]);
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    let len = libc::socklen_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "socket address too long"))?;
    Ok((addr, len))
}

/// How [`connect`] waits for a listener whose backlog is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: the stream is non-blocking and a full backlog fails at
    /// once (`WouldBlock`, from `EAGAIN`). For event loops.
    NonBlocking,
    /// At most this long (at least 1 ms; a Unix-socket connect waits at
    /// most `SO_SNDTIMEO`), then `WouldBlock`. The stream is blocking and
    /// keeps that write timeout.
    AtMost(Duration),
}

/// Connects a stream to the Unix socket at `path`, waiting for backlog
/// room as `wait` says. The OS error comes back as it is.
pub fn connect(path: &Path, wait: Wait) -> io::Result<UnixStream> {
    let (addr, len) = sockaddr(path)?;
    let flags = match wait {
        Wait::NonBlocking => libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        Wait::AtMost(_) => libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
    };
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let stream = UnixStream::from(owned);
    if let Wait::AtMost(limit) = wait {
        stream.set_write_timeout(Some(limit.max(Duration::from_millis(1))))?;
    }
    // SAFETY: `addr` is a valid sockaddr_un that lives across the call and
    // `len` does not exceed its size; the socket is open while `stream`
    // lives.
    let rc = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memtide-uds-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_regular_file_is_refused_and_left_alone() {
        let d = dir("file");
        let f = d.join("api.sock");
        std::fs::write(&f, b"precious").expect("file");
        let e = bind_private(&f).expect_err("not a socket");
        assert!(matches!(e, BindError::NotASocket(_)), "{e}");
        assert!(e.to_string().contains(&*f.to_string_lossy()), "{e}");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&f).expect("still there"), b"precious");
        // A symlink (even to a socket) is not a socket, nor a directory.
        let link = d.join("link.sock");
        std::os::unix::fs::symlink(d.join("elsewhere"), &link).expect("symlink");
        assert!(matches!(check_path(&link), Err(BindError::NotASocket(_))));
        assert!(matches!(check_path(&d), Err(BindError::NotASocket(_))));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_refused_and_the_mode_is_0600() {
        let d = dir("stale");
        let s = d.join("api.sock");
        assert_eq!(check_path(&s).expect("nothing"), Found::Nothing);
        drop(UnixListener::bind(&s).expect("stale"));
        assert_eq!(check_path(&s).expect("stale"), Found::StaleSocket);
        let live = bind_private(&s).expect("replaces the stale socket");
        let mode = std::fs::metadata(&s).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, SOCKET_MODE, "{mode:o}");
        let e = bind_private(&s).expect_err("live");
        assert!(matches!(e, BindError::InUse(_)), "{e}");
        assert!(e.to_string().contains(&*s.to_string_lossy()), "{e}");
        drop(live);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_paths_are_invalid_input() {
        let long = "a".repeat(MAX_SOCKET_PATH + 1);
        for bad in ["", "a\0b", long.as_str()] {
            let e = sockaddr(Path::new(bad)).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            let e = connect(Path::new(bad), Wait::NonBlocking).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        let (addr, len) = sockaddr(Path::new(&"a".repeat(MAX_SOCKET_PATH))).expect("fits");
        assert_eq!(addr.sun_path[MAX_SOCKET_PATH], 0, "NUL-terminated");
        let want = std::mem::offset_of!(libc::sockaddr_un, sun_path) + MAX_SOCKET_PATH + 1;
        assert_eq!(usize::try_from(len).ok(), Some(want));
    }

    #[test]
    fn both_connect_modes_reach_a_listener_and_fail_without_one() {
        let d = dir("connect");
        let s = d.join("c.sock");
        let l = bind_private(&s).expect("bind");
        let nb = connect(&s, Wait::NonBlocking).expect("non-blocking");
        drop(l.accept().expect("accept"));
        let b = connect(&s, Wait::AtMost(Duration::from_secs(1))).expect("blocking");
        drop(l.accept().expect("accept"));
        assert!(b.write_timeout().expect("timeout").is_some());
        drop((nb, b));
        for wait in [Wait::NonBlocking, Wait::AtMost(Duration::ZERO)] {
            assert!(connect(&d.join("nobody"), wait).is_err());
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
