//! Just enough HTTP/1.1 for a local control socket: one request per
//! connection, `Content-Length` bodies, JSON in and out.

use std::io::{BufRead, BufReader, Read, Write};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest request line or header line accepted.
const MAX_LINE: usize = 8 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, without query.
    pub path: String,
    /// The body (empty if none).
    pub body: Vec<u8>,
}

/// A response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The body's media type.
    pub content_type: &'static str,
    /// The body (JSON unless `content_type` says otherwise; may be empty).
    pub body: String,
}

/// The media type of JSON bodies.
pub const JSON: &str = "application/json";

impl Response {
    /// A response with a JSON body.
    pub fn json(status: u16, body: String) -> Self {
        Self {
            status,
            content_type: JSON,
            body,
        }
    }

    /// A 200 response with a body of media type `content_type`.
    pub fn ok_with(content_type: &'static str, body: String) -> Self {
        Self {
            status: 200,
            content_type,
            body,
        }
    }

    /// An error response: `{"error": "..."}`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = memtide_api::ErrorBody {
            error: message.to_string(),
        };
        Self {
            status,
            content_type: JSON,
            // A struct of one string always encodes; the fallback is the
            // same JSON shape without the message.
            body: serde_json::to_string(&body).unwrap_or_else(|_| "{\"error\":\"\"}".to_string()),
        }
    }

    /// 204 No Content.
    pub fn no_content() -> Self {
        Self {
            status: 204,
            content_type: JSON,
            body: String::new(),
        }
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection failed.
    #[error("i/o: {0}")]
    Io(std::io::Error),
    /// The peer did not finish in time.
    #[error("timed out")]
    TimedOut,
    /// Not a request this server understands.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Body over [`MAX_BODY`].
    #[error("request body too large")]
    TooLarge,
}

impl From<std::io::Error> for HttpError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Self::TimedOut,
            _ => Self::Io(e),
        }
    }
}

fn read_line<R: BufRead>(r: &mut R) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(HttpError::Malformed("connection closed"));
    }
    if n > MAX_LINE {
        return Err(HttpError::Malformed("line too long"));
    }
    let s = String::from_utf8(line).map_err(|_| HttpError::Malformed("not UTF-8"))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads header lines up to the blank line; returns `Content-Length`.
fn read_headers<R: BufRead>(r: &mut R) -> Result<Option<usize>, HttpError> {
    let mut content_length = None;
    loop {
        let h = read_line(r)?;
        if h.is_empty() {
            return Ok(content_length);
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let n = value
                    .trim()
                    .parse()
                    .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
                content_length = Some(n);
            }
        }
    }
}

/// Reads one request from `stream`.
pub fn read_request<R: Read>(stream: R) -> Result<Request, HttpError> {
    let mut r = BufReader::new(stream);
    let line = read_line(&mut r)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not HTTP/1.x"));
    }
    let content_length = read_headers(&mut r)?.unwrap_or(0);
    if content_length > MAX_BODY {
        return Err(HttpError::TooLarge);
    }
    let mut body = vec![0u8; content_length];
    r.read_exact(&mut body)?;
    Ok(Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or(target).to_string(),
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes `resp` to `stream` and closes the exchange.
pub fn write_response<W: Write>(mut stream: W, resp: &Response) -> std::io::Result<()> {
    let text = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        resp.body
    );
    stream.write_all(text.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a request (the real client is `memtide-api`'s; this one only
    /// feeds the round-trip tests).
    fn write_request<W: Write>(
        mut stream: W,
        method: &str,
        path: &str,
        body: &str,
    ) -> std::io::Result<()> {
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        stream.flush()
    }

    /// Reads a response: status and body (see [`write_request`]).
    fn read_response<R: Read>(stream: R) -> Result<Response, HttpError> {
        let mut r = BufReader::new(stream);
        let line = read_line(&mut r)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(HttpError::Malformed("bad status line"))?;
        let mut body = Vec::new();
        match read_headers(&mut r)? {
            Some(n) if n <= MAX_BODY => {
                body.resize(n, 0);
                r.read_exact(&mut body)?;
            }
            Some(_) => return Err(HttpError::TooLarge),
            None => {
                r.read_to_end(&mut body)?;
            }
        }
        Ok(Response {
            status,
            content_type: JSON,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    #[test]
    fn request_round_trip() {
        let mut buf = Vec::new();
        write_request(&mut buf, "PUT", "/balloon", "{\"target_mib\":64}").expect("write");
        let req = read_request(&buf[..]).expect("parse");
        assert_eq!(req.method, "PUT");
        assert_eq!(req.path, "/balloon");
        assert_eq!(req.body, b"{\"target_mib\":64}");
    }

    #[test]
    fn response_round_trip() {
        let mut buf = Vec::new();
        write_response(&mut buf, &Response::error(400, "bad")).expect("write");
        let r = read_response(&buf[..]).expect("parse");
        assert_eq!(r.status, 400);
        assert_eq!(r.body, "{\"error\":\"bad\"}");
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert!(read_request(&b""[..]).is_err());
        assert!(read_request(&b"GET\r\n\r\n"[..]).is_err());
        assert!(read_request(&b"GET / SPDY/3\r\n\r\n"[..]).is_err());
        assert!(read_request(&b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..]).is_err());
        assert!(matches!(
            read_request(&b"PUT / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"[..]),
            Err(HttpError::TooLarge)
        ));
        assert!(read_request(&b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort"[..]).is_err());
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "late");
        assert!(matches!(HttpError::from(timeout), HttpError::TimedOut));
        let q = read_request(&b"GET /balloon?x=1 HTTP/1.0\r\n\r\n"[..]).expect("query stripped");
        assert_eq!(q.path, "/balloon");
    }
}
