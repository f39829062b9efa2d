//! Connecting to a Unix socket with a time limit, and a stream wrapper
//! whose reads (or writes) must all finish by one deadline.
//!
//! `UnixStream::connect` blocks for as long as the listener's backlog is
//! full (a stopped VMM still queues 128 connections, then blocks every
//! connect); here the connect waits at most the given time
//! (`SO_SNDTIMEO` bounds a Unix-socket connect).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The time left until `until`, seen at `now`; `None` once it has passed
/// (a zero timeout would mean "no timeout" to the socket calls).
pub fn remaining(until: Instant, now: Instant) -> Option<Duration> {
    until.checked_duration_since(now).filter(|d| !d.is_zero())
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} deadline passed"))
}

/// Maps the error of a socket call that ran into its timeout (`EAGAIN`)
/// to [`io::ErrorKind::TimedOut`].
fn timeout_kind(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, e)
    } else {
        e
    }
}

/// A borrowed stream whose reads and writes must all be done by `until`:
/// every call gets the time left as its socket timeout, so a peer that
/// sends one byte a second cannot stretch the exchange past the deadline.
#[derive(Debug)]
pub struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl<'a> Deadline<'a> {
    /// `stream`, with everything read or written through this wrapper due
    /// within `limit` from now.
    pub fn new(stream: &'a UnixStream, limit: Duration) -> Self {
        Self {
            stream,
            until: Instant::now() + limit,
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = remaining(self.until, Instant::now()).ok_or_else(|| timed_out("read"))?;
        self.stream.set_read_timeout(Some(left))?;
        (&*self.stream).read(buf).map_err(timeout_kind)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = remaining(self.until, Instant::now()).ok_or_else(|| timed_out("write"))?;
        self.stream.set_write_timeout(Some(left))?;
        (&*self.stream).write(buf).map_err(timeout_kind)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects to the Unix socket at `path`, waiting at most `limit` for a
/// listener with a full backlog (`TimedOut` after that).
pub fn connect(path: &Path, limit: Duration) -> io::Result<UnixStream> {
    memtide_uds::connect(path, memtide_uds::Wait::AtMost(limit)).map_err(timeout_kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_time_left_ends_at_the_deadline() {
        let now = Instant::now();
        let until = now + Duration::from_millis(5);
        assert_eq!(remaining(until, now), Some(Duration::from_millis(5)));
        assert_eq!(remaining(until, until), None, "zero is no timeout: over");
        assert_eq!(remaining(now, until), None);
    }

    #[test]
    fn a_silent_peer_times_out_at_the_deadline() {
        let path = std::env::temp_dir().join(format!("memtide-dl-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let c = connect(&path, Duration::from_secs(1)).expect("connect");
        let (_peer, _) = listener.accept().expect("accept");
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let e = Deadline::new(&c, Duration::from_millis(100))
            .read(&mut buf)
            .expect_err("silence");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(connect(Path::new(""), Duration::from_secs(1)).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
