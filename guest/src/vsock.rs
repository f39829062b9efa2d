//! `AF_VSOCK` stream sockets: connecting to the host, listening for it.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The host's context id (`VMADDR_CID_HOST`).
pub const CID_HOST: u32 = libc::VMADDR_CID_HOST;

/// A failed vsock operation.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// `socket(AF_VSOCK)` failed (no vsock support in the kernel?).
    #[error("vsock socket: {0}")]
    Socket(std::io::Error),
    /// Setting a socket option failed.
    #[error("vsock {what}: {source}")]
    SetOption {
        /// The option.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection was refused or timed out, or there is no transport.
    #[error("connect to cid {cid} port {port}: {source}")]
    Connect {
        /// Context id of the peer.
        cid: u32,
        /// Port of the peer.
        port: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Binding or listening on a local port failed.
    #[error("listen on port {port}: {source}")]
    Listen {
        /// The local port.
        port: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// Accepting a connection failed.
    #[error("accept: {0}")]
    Accept(std::io::Error),
    /// Sending failed (the peer closed, or the send timed out).
    #[error("send: {0}")]
    Send(std::io::Error),
}

/// A `sockaddr_vm` for (cid, port).
fn address(cid: u32, port: u32) -> libc::sockaddr_vm {
    libc::sockaddr_vm {
        svm_family: AF_VSOCK_FAMILY,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: cid,
        svm_zero: [0; 4],
    }
}

/// `AF_VSOCK` as the address family field's type.
#[allow(
    clippy::cast_possible_truncation,
    reason = "AF_VSOCK is 40, which fits sa_family_t"
)]
const AF_VSOCK_FAMILY: libc::sa_family_t = libc::AF_VSOCK as libc::sa_family_t;

/// Size of `sockaddr_vm` for the socket calls (16 bytes).
#[allow(
    clippy::cast_possible_truncation,
    reason = "a sockaddr_vm is 16 bytes, which fits socklen_t"
)]
const ADDRESS_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

/// Size of `timeval` for `setsockopt` (16 bytes).
#[allow(
    clippy::cast_possible_truncation,
    reason = "a timeval is 16 bytes, which fits socklen_t"
)]
const TIMEVAL_LEN: libc::socklen_t = std::mem::size_of::<libc::timeval>() as libc::socklen_t;

/// A new close-on-exec `AF_VSOCK` stream socket.
fn socket() -> Result<OwnedFd, VsockError> {
    // SAFETY: socket takes no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(VsockError::Socket(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A connected vsock stream.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl VsockStream {
    /// Connects to (cid, port). A send that cannot make progress for
    /// `send_timeout` fails rather than blocking forever (the host may
    /// stop reading).
    pub fn connect(cid: u32, port: u32, send_timeout: Duration) -> Result<Self, VsockError> {
        let fd = socket()?;
        set_send_timeout(fd.as_fd(), send_timeout)?;
        let addr = address(cid, port);
        // SAFETY: addr is a valid sockaddr_vm and ADDRESS_LEN its size; fd
        // is an open socket.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                ADDRESS_LEN,
            )
        };
        if rc != 0 {
            return Err(VsockError::Connect {
                cid,
                port,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self { fd })
    }

    /// Sends all of `bytes`, retrying after interruptions. A broken
    /// connection is an error, not a `SIGPIPE`.
    pub fn send_all(&self, mut bytes: &[u8]) -> Result<(), VsockError> {
        while !bytes.is_empty() {
            // SAFETY: the pointer and length describe the live slice
            // `bytes`; fd is an open socket.
            let n = unsafe {
                libc::send(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(VsockError::Send(err));
            }
            let sent = usize::try_from(n).unwrap_or(0);
            if sent == 0 {
                return Err(VsockError::Send(std::io::ErrorKind::WriteZero.into()));
            }
            bytes = bytes.get(sent..).unwrap_or_default();
        }
        Ok(())
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A vsock socket listening on a local port, for any peer.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// Listens on `port` (any local CID).
    pub fn bind(port: u32) -> Result<Self, VsockError> {
        let fd = socket()?;
        let addr = address(libc::VMADDR_CID_ANY, port);
        let listen_error = |port| VsockError::Listen {
            port,
            source: std::io::Error::last_os_error(),
        };
        // SAFETY: addr is a valid sockaddr_vm and ADDRESS_LEN its size; fd
        // is an open socket.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                ADDRESS_LEN,
            )
        };
        if rc != 0 {
            return Err(listen_error(port));
        }
        // SAFETY: listen takes no pointers; fd is a bound socket.
        if unsafe { libc::listen(fd.as_raw_fd(), 4) } != 0 {
            return Err(listen_error(port));
        }
        Ok(Self { fd })
    }

    /// Waits for the next connection; sends on it time out after
    /// `send_timeout`.
    pub fn accept(&self, send_timeout: Duration) -> Result<VsockStream, VsockError> {
        // SAFETY: null address pointers are allowed (the peer's address is
        // not wanted); fd is a listening socket.
        let fd = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(VsockError::Accept(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        set_send_timeout(fd.as_fd(), send_timeout)?;
        Ok(VsockStream { fd })
    }
}

/// Sets `SO_SNDTIMEO` (a zero duration would mean "never"; it is raised
/// to 1 ms).
fn set_send_timeout(fd: BorrowedFd<'_>, timeout: Duration) -> Result<(), VsockError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: tv is a valid timeval and its size is passed; fd is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&raw const tv).cast(),
            TIMEVAL_LEN,
        )
    };
    if rc != 0 {
        return Err(VsockError::SetOption {
            what: "SO_SNDTIMEO",
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_layout() {
        assert_eq!(ADDRESS_LEN, 16);
        let a = address(CID_HOST, 5100);
        assert_eq!(a.svm_family, 40);
        assert_eq!((a.svm_cid, a.svm_port), (2, 5100));
    }

    #[test]
    fn connecting_nowhere_is_a_typed_error() {
        // Without a vsock transport this fails at socket() or connect();
        // with one, nothing listens on the host at this port. Either way
        // it is an error, never a panic.
        match VsockStream::connect(CID_HOST, 0xdead_beef, Duration::from_millis(10)) {
            Err(VsockError::Socket(_) | VsockError::Connect { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
