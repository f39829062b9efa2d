//! The control API: HTTP/JSON on a Unix socket, in the style of
//! Firecracker's API (`PUT /balloon {"target_mib": 64}`), served by one
//! thread, one request per connection.

pub mod http;
pub mod routes;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use routes::ApiState;

/// Errors from starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket path exists and is in use or cannot be replaced.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The thread could not start.
    #[error("cannot start the API thread: {0}")]
    Thread(std::io::Error),
}

/// Locks a mutex, recovering from poisoning (the one helper, re-exported
/// for the routes).
pub use memtide_devices::bus::lock;

/// Binds `path` (replacing a stale socket file) and serves requests on a
/// thread named `api`.
pub fn start(path: &Path, state: ApiState) -> Result<(), ApiError> {
    if path.exists() {
        // A socket left by a previous run; a live one would still accept.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ApiError::Bind {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another memtide is serving it",
                ),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let state = Arc::new(state);
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(stream) = conn else { continue };
                let response = match http::read_request(&stream) {
                    Ok(req) => routes::handle(&state, &req),
                    Err(http::HttpError::TooLarge) => http::Response::error(413, "body too large"),
                    Err(e) => http::Response::error(400, &e.to_string()),
                };
                if let Err(e) = http::write_response(&stream, &response) {
                    log::debug!("api: cannot answer: {e}");
                }
            }
        })
        .map_err(ApiError::Thread)?;
    Ok(())
}
