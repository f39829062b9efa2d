//! The API socket on disk: only a stale socket at the path is replaced,
//! never a live one (another memtide serves it) or anything that is not a
//! socket; the new socket is private to this user (mode 0600).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use super::ApiError;

/// Mode of the API socket: only this user may connect.
pub const SOCKET_MODE: u32 = 0o600;

/// What is at the socket path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Nothing,
    /// A socket nobody listens on (left by an earlier run).
    StaleSocket,
}

/// Checks that `path` can become the API socket: nothing is there, or a
/// stale socket. A live socket, a regular file, a directory or a symlink
/// is an error naming the path, and is left alone.
pub fn check_path(path: &Path) -> Result<Found, ApiError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Found::Nothing),
        Err(source) => Err(ApiError::Bind {
            path: path.to_path_buf(),
            source,
        }),
        Ok(m) if !m.file_type().is_socket() => Err(ApiError::NotASocket(path.to_path_buf())),
        Ok(_) if UnixStream::connect(path).is_ok() => Err(ApiError::InUse(path.to_path_buf())),
        Ok(_) => Ok(Found::StaleSocket),
    }
}

/// Binds the API socket at `path` (replacing only a stale socket, see
/// [`check_path`]) and makes it mode 0600.
pub fn bind_private(path: &Path) -> Result<UnixListener, ApiError> {
    let bind_err = |source| ApiError::Bind {
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
        |source| ApiError::Permissions {
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("memtide-api-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn a_regular_file_is_refused_and_left_alone() {
        let d = dir("file");
        let f = d.join("api.sock");
        std::fs::write(&f, b"precious").expect("file");
        let e = bind_private(&f).expect_err("not a socket");
        assert!(matches!(e, ApiError::NotASocket(_)), "{e}");
        assert!(e.to_string().contains(&*f.to_string_lossy()), "{e}");
        assert_eq!(std::fs::read(&f).expect("still there"), b"precious");
        // A symlink to a socket is not a socket either.
        let link = d.join("link.sock");
        std::os::unix::fs::symlink(d.join("elsewhere"), &link).expect("symlink");
        assert!(matches!(check_path(&link), Err(ApiError::NotASocket(_))));
        assert!(matches!(check_path(&d), Err(ApiError::NotASocket(_))));
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
        assert!(matches!(bind_private(&s), Err(ApiError::InUse(_))));
        drop(live);
        let _ = std::fs::remove_dir_all(&d);
    }
}
