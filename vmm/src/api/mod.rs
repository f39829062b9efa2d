//! The control API: HTTP/JSON on a Unix socket, in the style of
//! Firecracker's API (`PUT /balloon {"target_mib": 64}`), one request per
//! connection.
//!
//! No client can hold up another: connections are served concurrently (at
//! most [`ApiLimits::max_connections`], the rest answered 503), each with a
//! deadline for its whole request (408 after it) and one for its whole
//! answer; request lines, headers and bodies have size limits
//! ([`http::MAX_BODY`]). The socket is mode 0600 and replaces only a stale
//! socket at its path ([`listen`]).

pub mod http;
pub mod listen;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod virtio_mem;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use listen::check_path;
pub use routes::ApiState;
pub use server::ApiLimits;

/// Errors from starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be bound.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something other than a socket is at the path; it is left alone.
    #[error("--api-sock {0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A live socket is at the path: another process serves it.
    #[error("--api-sock {0}: another process is listening on it (another memtide?)")]
    InUse(PathBuf),
    /// The socket's mode could not be set.
    #[error("cannot make {path} private (mode 0600): {source}")]
    Permissions {
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

/// Binds `path` (replacing only a stale socket, mode 0600) and serves
/// requests with the default [`ApiLimits`] on a thread named `api`.
pub fn start(path: &Path, state: ApiState) -> Result<(), ApiError> {
    start_with(path, state, ApiLimits::default())
}

/// [`start`] with other limits.
pub fn start_with(path: &Path, state: ApiState, limits: ApiLimits) -> Result<(), ApiError> {
    let listener = listen::bind_private(path)?;
    let state = Arc::new(state);
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || server::accept_loop(listener, state, limits))
        .map_err(ApiError::Thread)?;
    Ok(())
}
