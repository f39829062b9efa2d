//! The API socket on disk: only a stale socket at the path is replaced,
//! never a live one (another memtide serves it) or anything that is not a
//! socket; the new socket is private to this user (mode 0600). The work is
//! [`memtide_uds`]'s; this module puts it in `--api-sock` terms.

use std::os::unix::net::UnixListener;
use std::path::Path;

use memtide_uds::BindError;

use super::ApiError;

pub use memtide_uds::{Found, SOCKET_MODE};

impl From<BindError> for ApiError {
    fn from(e: BindError) -> Self {
        match e {
            BindError::InUse(path) => Self::InUse(path),
            BindError::NotASocket(path) => Self::NotASocket(path),
            BindError::Bind { path, source } => Self::Bind { path, source },
            BindError::Permissions { path, source } => Self::Permissions { path, source },
        }
    }
}

/// Checks that `path` can become the API socket: nothing is there, or a
/// stale socket. A live socket, a regular file, a directory or a symlink
/// is an error naming the path, and is left alone.
pub fn check_path(path: &Path) -> Result<Found, ApiError> {
    Ok(memtide_uds::check_path(path)?)
}

/// Binds the API socket at `path` (replacing only a stale socket, see
/// [`check_path`]) and makes it mode 0600.
pub fn bind_private(path: &Path) -> Result<UnixListener, ApiError> {
    Ok(memtide_uds::bind_private(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_api_sock_wording() {
        let d = std::env::temp_dir().join(format!("memtide-api-file-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        let f = d.join("api.sock");
        std::fs::write(&f, b"precious").expect("file");
        let e = bind_private(&f).expect_err("not a socket");
        assert!(matches!(e, ApiError::NotASocket(_)), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&*f.to_string_lossy()), "{msg}");
        assert!(
            msg.contains("--api-sock") && msg.contains("not a socket"),
            "{msg}"
        );
        assert_eq!(std::fs::read(&f).expect("still there"), b"precious");
        std::fs::remove_file(&f).expect("rm");
        let live = bind_private(&f).expect("bind");
        assert!(matches!(check_path(&f), Err(ApiError::InUse(_))));
        drop(live);
        assert_eq!(check_path(&f).expect("stale"), Found::StaleSocket);
        let _ = std::fs::remove_dir_all(&d);
    }
}
