//! `memtide ctl`: a client for the control API of a running memtide.

use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::api::http::{read_response, write_request, HttpError};
use crate::cli::{BalancerCommand, BalloonCommand, CtlCommand, MemoryCommand, VsockCommand};

/// Errors from talking to a running memtide.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No memtide listens on the socket.
    #[error("cannot connect to {path}: {source} (is memtide running with --api-sock?)")]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("API exchange failed: {0}")]
    Http(#[from] HttpError),
    /// The VMM refused the request.
    #[error("memtide answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its message.
        body: String,
    },
}

/// Sends one request; returns the response body on 2xx.
pub fn call(sock: &Path, method: &str, path: &str, body: &str) -> Result<String, CtlError> {
    let stream = UnixStream::connect(sock).map_err(|source| CtlError::Connect {
        path: sock.display().to_string(),
        source,
    })?;
    write_request(&stream, method, path, body).map_err(HttpError::from)?;
    let resp = read_response(&stream)?;
    if (200..300).contains(&resp.status) {
        Ok(resp.body)
    } else {
        Err(CtlError::Refused {
            status: resp.status,
            body: resp.body,
        })
    }
}

/// Runs a `memtide ctl` command and prints the answer.
pub fn run(sock: &Path, command: &CtlCommand) -> Result<(), CtlError> {
    let out = match command {
        CtlCommand::Balloon(BalloonCommand::Set { target_mib }) => call(
            sock,
            "PUT",
            "/balloon",
            &format!("{{\"target_mib\":{target_mib}}}"),
        )?,
        CtlCommand::Balloon(BalloonCommand::Get) => call(sock, "GET", "/balloon", "")?,
        CtlCommand::Balloon(BalloonCommand::Stats) => call(sock, "GET", "/balloon/statistics", "")?,
        CtlCommand::Memory(MemoryCommand::Add { size_mib }) => call(
            sock,
            "PUT",
            "/memory",
            &format!("{{\"size_mib\":{size_mib}}}"),
        )?,
        CtlCommand::Memory(MemoryCommand::Get) => call(sock, "GET", "/memory", "")?,
        CtlCommand::Memory(MemoryCommand::Guest) => call(sock, "GET", "/memory/guest", "")?,
        CtlCommand::Vsock(VsockCommand::Get) => call(sock, "GET", "/vsock", "")?,
        CtlCommand::Balancer(BalancerCommand::Get) => call(sock, "GET", "/balancer", "")?,
    };
    if !out.is_empty() {
        println!("{out}");
    }
    Ok(())
}
