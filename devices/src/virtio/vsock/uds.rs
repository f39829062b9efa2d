//! The Unix-socket side: paths in Firecracker's convention, a listener
//! that replaces a stale socket file, a connect that never blocks the
//! event loop, writes that never raise `SIGPIPE`, and the `CONNECT` line.

use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::VsockError;

/// Room in `sockaddr_un.sun_path`, without the terminating NUL.
pub(super) const MAX_SOCKET_PATH: usize = memtide_uds::MAX_SOCKET_PATH;
/// Longest `_<port>` suffix.
const PORT_SUFFIX_MAX: usize = 11;

/// `<uds>_<port>`: where a guest connection to host port `port` goes.
pub(super) fn port_path(uds: &Path, port: u32) -> PathBuf {
    let mut s = OsString::from(uds.as_os_str());
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Checks that `uds` and every `<uds>_<port>` fit a Unix socket address.
pub(super) fn check_path(uds: &Path) -> Result<(), VsockError> {
    let bytes = uds.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.contains(&0) || bytes.len() + PORT_SUFFIX_MAX > MAX_SOCKET_PATH {
        return Err(VsockError::PathTooLong(uds.to_path_buf()));
    }
    Ok(())
}

/// Binds a non-blocking listener at `path`, mode 0600, first removing a
/// stale socket file left by an earlier run (but nothing that is not a
/// socket, and no socket another process still listens on).
pub(super) fn listen(path: &Path) -> Result<UnixListener, VsockError> {
    let l = memtide_uds::bind_private(path)?;
    l.set_nonblocking(true)
        .map_err(|source| VsockError::Listen {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(l)
}

/// Connects a non-blocking stream to `path`. A listener with a full
/// backlog fails at once (`EAGAIN`) instead of blocking the event loop.
pub(super) fn connect(path: &Path) -> io::Result<UnixStream> {
    memtide_uds::connect(path, memtide_uds::Wait::NonBlocking)
}

/// Writes what the socket takes of `buf` without raising `SIGPIPE` on a
/// closed peer (`EPIPE` comes back as an error instead).
pub(super) fn send(stream: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the whole call and
    // the stream's fd is open while `stream` is borrowed.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast::<libc::c_void>(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    // Negative means failure, with the cause in errno.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Parses a complete `CONNECT <port>\n` line (newline included; a `\r`
/// before it is tolerated). `None` for anything else, including port
/// `u32::MAX` (`VMADDR_PORT_ANY`).
pub(super) fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let port = line.strip_prefix(b"CONNECT ")?;
    if port.is_empty() || port.len() > 10 || !port.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let port: u32 = String::from_utf8(port.to_vec()).ok()?.parse().ok()?;
    (port != u32::MAX).then_some(port)
}

/// The answer to an accepted `CONNECT`: `OK <local port>\n`.
pub(super) fn ok_line(local_port: u32) -> Vec<u8> {
    format!("OK {local_port}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 52\n"), Some(52));
        assert_eq!(
            parse_connect_line(b"CONNECT 4294967294\r\n"),
            Some(u32::MAX - 1)
        );
        for bad in [
            &b"CONNECT 52"[..],
            b"CONNECT\n",
            b"CONNECT \n",
            b"connect 52\n",
            b"CONNECT -1\n",
            b"CONNECT +5\n",
            b"CONNECT 4294967295\n",
            b"CONNECT 99999999999\n",
            b"CONNECT 5 6\n",
            b"HELLO 5\n",
        ] {
            assert_eq!(parse_connect_line(bad), None, "{bad:?}");
        }
        assert_eq!(ok_line(1 << 30), b"OK 1073741824\n");
    }

    #[test]
    fn port_paths_and_limits() {
        let p = Path::new("/run/v.sock");
        assert_eq!(port_path(p, 52), Path::new("/run/v.sock_52"));
        assert!(check_path(p).is_ok());
        let long = "a".repeat(97);
        assert!(
            check_path(Path::new(&long)).is_err(),
            "97 + _4294967295 > 107"
        );
        assert!(check_path(Path::new(&"a".repeat(96))).is_ok());
        assert!(check_path(Path::new("")).is_err());
    }

    #[test]
    fn listen_replaces_a_stale_socket_but_not_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("memtide-uds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let sock = dir.join("s");
        drop(listen(&sock).expect("first bind"));
        assert!(sock.exists(), "the stale socket stays behind");
        let l = listen(&sock).expect("rebind over the stale socket");
        assert!(l.accept().is_err(), "non-blocking: no connection waits");
        let mode = std::fs::metadata(&sock).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, memtide_uds::SOCKET_MODE, "{mode:o}");
        assert!(
            matches!(listen(&sock), Err(VsockError::InUse(_))),
            "a live listener is not taken over"
        );
        // That check connected once: take its (closed) connection first.
        drop(l.accept().expect("the probe connection"));
        let c = connect(&sock).expect("connect");
        let (peer, _) = l.accept().expect("accept");
        assert_eq!(send(&c, b"x").expect("send"), 1);
        drop(peer);
        let e = send(&c, b"x").expect_err("peer gone");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "an error, not SIGPIPE");
        let file = dir.join("f");
        std::fs::write(&file, b"keep").expect("file");
        assert!(matches!(listen(&file), Err(VsockError::NotASocket(_))));
        assert_eq!(std::fs::read(&file).expect("left alone"), b"keep");
        assert!(connect(&dir.join("nobody")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
