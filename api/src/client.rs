//! A small blocking client: one HTTP/1.1 request per connection over the
//! API's Unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connect::{connect, Deadline};
use crate::types::{
    paths, AdmitAnswer, AdmitRequest, BalancerStatus, BalloonStatistics, BalloonStatus,
    BalloonTarget, GuestMemory, HotAdd, MemoryStatus, VirtioMemStatus, VirtioMemTarget,
    VsockStatus,
};

/// Largest answer body accepted.
const MAX_BODY: usize = 16 << 20;
/// Longest status or header line accepted.
const MAX_LINE: u64 = 8 * 1024;

/// How long one exchange may take, phase by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for the server to take the connection.
    pub connect: Duration,
    /// Sending the whole request.
    pub write: Duration,
    /// Receiving the whole answer (status, headers and body), counted from
    /// the end of the request.
    pub read: Duration,
}

impl Timeouts {
    /// Every phase limited to `limit`.
    pub fn all(limit: Duration) -> Self {
        Self {
            connect: limit,
            write: limit,
            read: limit,
        }
    }
}

impl Default for Timeouts {
    /// 5 s per phase: far above any answer of a healthy memtide (routes
    /// answer in milliseconds; a hot-add waits for at most a few hundred).
    fn default() -> Self {
        Self::all(Duration::from_secs(5))
    }
}

/// Errors from one API exchange.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("cannot connect to {path}: {source} (is memtide running with --api-sock?)")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server did not take the connection, the request or the answer
    /// in time (a stopped or stuck memtide).
    #[error("API timed out {phase} {path} (limit {limit:?})")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// `connecting to`, `sending the request to` or `reading the answer
        /// from`.
        phase: &'static str,
        /// The limit that ran out.
        limit: Duration,
    },
    /// The exchange failed half-way.
    #[error("API exchange failed: i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP this client understands.
    #[error("API exchange failed: malformed answer: {0}")]
    Malformed(&'static str),
    /// The server answered with a non-2xx status.
    #[error("memtide answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The answer body (`{"error": "..."}`).
        body: String,
    },
    /// A 2xx answer whose body is not the expected type.
    #[error("unexpected answer to {request}: {source}: {body}")]
    Decode {
        /// `METHOD /path`.
        request: String,
        /// What serde could not decode.
        source: serde_json::Error,
        /// The body.
        body: String,
    },
    /// A request body that cannot be encoded (not expected for this
    /// crate's types).
    #[error("cannot encode the request to {request}: {source}")]
    Encode {
        /// `METHOD /path`.
        request: String,
        /// The serde error.
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status of a refused request.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

/// A client for the API socket at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    path: PathBuf,
    timeouts: Timeouts,
}

impl Client {
    /// A client for the socket at `path` with [`Timeouts::default`]
    /// (nothing is connected yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            timeouts: Timeouts::default(),
        }
    }

    /// The same client with other time limits.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The time limits of every exchange.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// A timeout error of `phase` for an I/O error that is one, else the
    /// I/O error.
    fn io_error(&self, e: std::io::Error, phase: &'static str, limit: Duration) -> ClientError {
        if matches!(
            e.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ) {
            ClientError::Timeout {
                path: self.path.clone(),
                phase,
                limit,
            }
        } else {
            ClientError::Io(e)
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request; returns the body of a 2xx answer.
    pub fn call(&self, method: &str, path: &str, body: &str) -> Result<String, ClientError> {
        let t = self.timeouts;
        let stream = connect(&self.path, t.connect).map_err(|source| {
            if source.kind() == std::io::ErrorKind::TimedOut {
                self.io_error(source, "connecting to", t.connect)
            } else {
                ClientError::Connect {
                    path: self.path.clone(),
                    source,
                }
            }
        })?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        Deadline::new(&stream, t.write)
            .write_all(request.as_bytes())
            .map_err(|e| self.io_error(e, "sending the request to", t.write))?;
        let (status, body) =
            read_response(Deadline::new(&stream, t.read)).map_err(|e| match e {
                ClientError::Io(io) => self.io_error(io, "reading the answer from", t.read),
                other => other,
            })?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(ClientError::Status { status, body })
        }
    }

    /// `POST /balancer/admit`: can a VM with these bounds start now?
    pub fn admit(&self, request: &AdmitRequest) -> Result<AdmitAnswer, ClientError> {
        let request_line = format!("POST {}", paths::BALANCER_ADMIT);
        let body = serde_json::to_string(request).map_err(|source| ClientError::Encode {
            request: request_line.clone(),
            source,
        })?;
        let answer = self.call("POST", paths::BALANCER_ADMIT, &body)?;
        serde_json::from_str(&answer).map_err(|source| ClientError::Decode {
            request: request_line,
            source,
            body: answer,
        })
    }

    /// `GET /metrics`: the OpenMetrics text Prometheus scrapes.
    pub fn get_metrics(&self) -> Result<String, ClientError> {
        self.call("GET", paths::METRICS, "")
    }

    /// `GET path`, decoded as `T` (`serde_json::Value` for any JSON).
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.call("GET", path, "")?;
        serde_json::from_str(&body).map_err(|source| ClientError::Decode {
            request: format!("GET {path}"),
            source,
            body,
        })
    }

    /// `PUT path` with `body` as JSON; the server answers 204.
    pub fn put<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ClientError> {
        let json = serde_json::to_string(body).map_err(|source| ClientError::Encode {
            request: format!("PUT {path}"),
            source,
        })?;
        self.call("PUT", path, &json).map(|_| ())
    }

    /// `GET /balloon`.
    pub fn get_balloon(&self) -> Result<BalloonStatus, ClientError> {
        self.get(paths::BALLOON)
    }

    /// `PUT /balloon`: sets the balloon target.
    pub fn set_balloon_target(&self, target_mib: u64) -> Result<(), ClientError> {
        self.put(paths::BALLOON, &BalloonTarget { target_mib })
    }

    /// `GET /balloon/statistics`.
    pub fn get_balloon_statistics(&self) -> Result<BalloonStatistics, ClientError> {
        self.get(paths::BALLOON_STATISTICS)
    }

    /// `GET /memory`.
    pub fn get_memory(&self) -> Result<MemoryStatus, ClientError> {
        self.get(paths::MEMORY)
    }

    /// `PUT /memory`: hot-adds `size_mib` (whole slots).
    pub fn hot_add(&self, size_mib: u64) -> Result<(), ClientError> {
        self.put(paths::MEMORY, &HotAdd { size_mib })
    }

    /// `GET /memory/guest`.
    pub fn get_guest_memory(&self) -> Result<GuestMemory, ClientError> {
        self.get(paths::MEMORY_GUEST)
    }

    /// `GET /memory/virtio-mem`.
    pub fn get_virtio_mem(&self) -> Result<VirtioMemStatus, ClientError> {
        self.get(paths::MEMORY_VIRTIO_MEM)
    }

    /// `PUT /memory/virtio-mem`: asks the guest to plug `requested_mib`.
    pub fn set_virtio_mem_requested(&self, requested_mib: u64) -> Result<(), ClientError> {
        self.put(paths::MEMORY_VIRTIO_MEM, &VirtioMemTarget { requested_mib })
    }

    /// `GET /vsock`.
    pub fn get_vsock(&self) -> Result<VsockStatus, ClientError> {
        self.get(paths::VSOCK)
    }

    /// `GET /balancer`.
    pub fn get_balancer(&self) -> Result<BalancerStatus, ClientError> {
        self.get(paths::BALANCER)
    }
}

fn read_line<R: BufRead>(r: &mut R) -> Result<String, ClientError> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(ClientError::Malformed("connection closed"));
    }
    if n as u64 > MAX_LINE {
        return Err(ClientError::Malformed("line too long"));
    }
    let s = String::from_utf8(line).map_err(|_| ClientError::Malformed("not UTF-8"))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads an answer: status and body.
fn read_response<R: Read>(stream: R) -> Result<(u16, String), ClientError> {
    let mut r = BufReader::new(stream);
    let line = read_line(&mut r)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(ClientError::Malformed("bad status line"))?;
    let mut content_length = None;
    loop {
        let h = read_line(&mut r)?;
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = value
                    .trim()
                    .parse()
                    .map_err(|_| ClientError::Malformed("bad Content-Length"))?;
                content_length = Some(n);
            }
        }
    }
    let mut body = Vec::new();
    match content_length {
        Some(n) if n <= MAX_BODY => {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        }
        Some(_) => return Err(ClientError::Malformed("body too large")),
        None => {
            r.take(MAX_BODY as u64).read_to_end(&mut body)?;
        }
    }
    let body = String::from_utf8(body).map_err(|_| ClientError::Malformed("body not UTF-8"))?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Serves `answers` (status, body) to one connection each, in order,
    /// and returns the requests it read (request line and body).
    fn serve(
        name: &str,
        answers: Vec<(u16, &'static str)>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<(String, String)>>) {
        let path = std::env::temp_dir().join(format!(
            "memtide-api-test-{}-{name}.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (status, body) in answers {
                let (stream, _) = listener.accept().expect("accept");
                let mut r = BufReader::new(&stream);
                let mut line = String::new();
                r.read_line(&mut line).expect("request line");
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).expect("header");
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("Content-Length:") {
                        len = v.trim().parse().expect("length");
                    }
                }
                let mut req_body = vec![0; len];
                r.read_exact(&mut req_body).expect("body");
                seen.push((
                    line.trim().to_string(),
                    String::from_utf8(req_body).expect("utf8"),
                ));
                let mut w = &stream;
                write!(
                    w,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .expect("answer");
            }
            seen
        });
        (path, handle)
    }

    #[test]
    fn typed_gets_and_puts_round_trip() {
        let balloon = r#"{"target_mib":64,"actual_mib":60,"inflated_mib":60,"driver_ready":true,"guest_ram_mib":256,"guest_ram_resident_mib":42}"#;
        let (path, server) = serve("ok", vec![(200, balloon), (204, "")]);
        let c = Client::new(&path);
        let b = c.get_balloon().expect("get");
        assert_eq!((b.target_mib, b.guest_ram_resident_mib), (64, 42));
        c.set_balloon_target(32).expect("put");
        let seen = server.join().expect("server");
        assert_eq!(seen[0].0, "GET /balloon HTTP/1.1");
        assert_eq!(
            seen[1],
            ("PUT /balloon HTTP/1.1".into(), "{\"target_mib\":32}".into())
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn refusals_and_bad_answers_are_typed_errors() {
        let (path, server) = serve(
            "errors",
            vec![
                (400, r#"{"error":"this VM has no balloon"}"#),
                (200, r#"{"target":64}"#),
                (200, "not json"),
            ],
        );
        let c = Client::new(&path);
        let e = c.get_balloon().expect_err("400");
        assert_eq!(e.status(), Some(400));
        assert!(e.to_string().contains("no balloon"), "{e}");
        assert!(matches!(c.get_balloon(), Err(ClientError::Decode { .. })));
        assert!(matches!(
            c.get::<serde_json::Value>("/x"),
            Err(ClientError::Decode { .. })
        ));
        server.join().expect("server");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_silent_server_is_a_timeout_within_the_limit() {
        let path = std::env::temp_dir().join(format!(
            "memtide-api-test-{}-silent.sock",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let limit = std::time::Duration::from_millis(200);
        let c = Client::new(&path).with_timeouts(Timeouts::all(limit));
        let start = std::time::Instant::now();
        // The kernel takes the connection (backlog); nobody ever answers.
        let e = c.get_balloon().expect_err("no answer");
        let took = start.elapsed();
        println!("silent server: timeout after {took:?} (limit {limit:?})");
        assert!(e.is_timeout(), "{e}");
        assert!(
            e.to_string()
                .starts_with("API timed out reading the answer from"),
            "{e}"
        );
        assert!(took < limit * 3, "{took:?}");
        drop(listener);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_missing_socket_is_a_connect_error() {
        let c = Client::new("/nonexistent/memtide.sock");
        let e = c.get_memory().expect_err("no server");
        assert!(matches!(e, ClientError::Connect { .. }));
        assert!(e.to_string().contains("is memtide running"), "{e}");
    }
}
