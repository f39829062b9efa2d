//! Scraping `GET /metrics` the way Prometheus or `curl --unix-socket`
//! does (raw HTTP on the API socket), and reading one sample.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One scrape: the answer's status, `Content-Type` and body.
#[derive(Debug)]
pub struct Scrape {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The exposition text.
    pub body: String,
}

/// `GET /metrics` on the API socket `sock`; panics when it cannot talk.
pub fn scrape(sock: &Path) -> Scrape {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
        .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("status");
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_string();
    Scrape {
        status,
        content_type,
        body: body.to_string(),
    }
}

/// The value of the sample `name` whose labels include every one of
/// `labels` (`("kind", "some")`), if the text has one.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (n == name && all).then(|| match value {
                "+Inf" => Some(f64::INFINITY),
                v => v.parse().ok(),
            })?
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let text = "# TYPE a gauge\na 1\nb{x=\"1\",y=\"2\"} 2.5\nb{x=\"3\"} 4\n# EOF\n";
        assert_eq!(sample(text, "a", &[]), Some(1.0));
        assert_eq!(sample(text, "b", &[("y", "2")]), Some(2.5));
        assert_eq!(sample(text, "b", &[("x", "3")]), Some(4.0));
        assert_eq!(sample(text, "c", &[]), None);
    }
}
