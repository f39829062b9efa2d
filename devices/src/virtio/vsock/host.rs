//! Host-side events: clients accepted on `<uds>` and their `CONNECT` line
//! (host-initiated connections), and readiness of connected streams.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

use vmm_sys_util::epoll::EventSet;

use super::connection::Connection;
use super::device::{PendingClient, Vsock};
use super::packet::Op;
use super::stream::{ConnKey, HostConn};
use super::{uds, CONNECT_LINE_TIMEOUT, MAX_CONNECTIONS, MAX_CONNECT_LINE, MAX_PENDING_CLIENTS};

/// What reading a client's line gave.
enum Line {
    /// Not complete yet.
    Partial,
    /// A whole line (ending in `\n`).
    Complete,
    /// EOF, error or too long: drop the client.
    Dead,
}

impl Vsock {
    /// Accepts every waiting host client.
    pub(super) fn accept_clients(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    memtide_log_limit::warn_limited!(
                        "vsock: accept on {}: {e}",
                        self.uds_path.display()
                    );
                    return;
                }
            };
            if let Err(e) = stream.set_nonblocking(true) {
                memtide_log_limit::warn_limited!("vsock: client socket: {e}");
                continue;
            }
            let mut cl = PendingClient {
                stream,
                line: Vec::new(),
                registered: None,
                since: Instant::now(),
            };
            // Most clients send their line with the connect: serve it now,
            // without taking a pending place.
            match Self::read_line(&mut cl) {
                Line::Complete => {
                    self.finish_line(cl);
                    continue;
                }
                Line::Dead => {
                    self.graveyard.push((cl.stream, cl.registered));
                    continue;
                }
                Line::Partial => {}
            }
            self.make_room_for_a_client(cl.since);
            self.clients.insert(cl.stream.as_raw_fd(), cl);
        }
    }

    /// Drops pending clients that have not sent their line within
    /// [`CONNECT_LINE_TIMEOUT`] and, if all [`MAX_PENDING_CLIENTS`] places
    /// are still taken, the one that has waited longest: silent clients
    /// can never lock the others out.
    fn make_room_for_a_client(&mut self, now: Instant) {
        let expired: Vec<RawFd> = self
            .clients
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.since) >= CONNECT_LINE_TIMEOUT)
            .map(|(fd, _)| *fd)
            .collect();
        for fd in expired {
            self.drop_client(fd);
        }
        if self.clients.len() >= MAX_PENDING_CLIENTS {
            if let Some(oldest) = self
                .clients
                .iter()
                .min_by_key(|(_, c)| c.since)
                .map(|(fd, _)| *fd)
            {
                memtide_log_limit::warn_limited!(
                    "vsock: {MAX_PENDING_CLIENTS} clients have not sent CONNECT; dropping the oldest"
                );
                self.drop_client(oldest);
            }
        }
    }

    /// Reads a client's `CONNECT` line byte by byte (so that data sent
    /// right behind it stays in the socket for the guest).
    fn read_line(cl: &mut PendingClient) -> Line {
        let mut b = [0u8; 1];
        loop {
            match (&cl.stream).read(&mut b) {
                Ok(0) => return Line::Dead,
                Ok(_) => {
                    cl.line.push(b[0]);
                    if b[0] == b'\n' {
                        return Line::Complete;
                    }
                    if cl.line.len() >= MAX_CONNECT_LINE {
                        return Line::Dead;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Line::Partial,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Line::Dead,
            }
        }
    }

    /// A pending client has input: its `CONNECT` line, or its end.
    pub(super) fn client_readable(&mut self, fd: RawFd) {
        let Some(cl) = self.clients.get_mut(&fd) else {
            return;
        };
        match Self::read_line(cl) {
            Line::Partial => return,
            Line::Dead => {
                log::debug!("vsock: client gone or line too long: {:?}", cl.line);
                self.drop_client(fd);
                return;
            }
            Line::Complete => {}
        }
        if let Some(cl) = self.clients.remove(&fd) {
            self.finish_line(cl);
        }
    }

    /// A client's whole line: connect it, or drop it if the line is bad.
    fn finish_line(&mut self, cl: PendingClient) {
        match uds::parse_connect_line(&cl.line) {
            Some(port) => self.host_connect(cl, port),
            None => {
                log::debug!("vsock: bad CONNECT line {:?}", cl.line);
                self.graveyard.push((cl.stream, cl.registered));
            }
        }
    }

    /// Sends the guest a REQUEST for `port` on behalf of `cl`; the client
    /// hears `OK <local port>` once the guest answers RESPONSE.
    fn host_connect(&mut self, cl: PendingClient, port: u32) {
        let ready = self.shared.driver_ready.load(Ordering::SeqCst) && self.active.is_some();
        let local = if ready && self.conns.len() < MAX_CONNECTIONS {
            self.alloc_port(port)
        } else {
            None
        };
        let Some(local) = local else {
            log::debug!("vsock: cannot connect a host client to guest port {port} now");
            self.graveyard.push((cl.stream, cl.registered));
            return;
        };
        let key: ConnKey = (local, port);
        let conn = Connection::connecting(self.buf_alloc);
        self.insert(key, HostConn::new(conn, cl.stream, cl.registered));
        self.queue_control(Op::Request, key, 0);
    }

    /// Readiness of a connection's host stream.
    pub(super) fn stream_event(&mut self, key: ConnKey, set: EventSet) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if set.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
            c.readable = true;
        }
        if set.intersects(EventSet::OUT | EventSet::HANG_UP | EventSet::ERROR) {
            self.flush(key);
        }
    }
}
