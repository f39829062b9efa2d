//! The host side of the guest memory agent: accepts the connections the
//! vsock device forwards to `<uds>_<port>`, decodes the agent's frames and
//! keeps the latest report per VM for the balancer and the control API.
//!
//! One acceptor thread per VM and one short-lived reader thread per agent
//! connection (an agent holds one connection and reconnects after a
//! failure, so there is rarely more than one). A connection that sends a
//! frame the reader cannot parse in sync (oversized, or a broken stream) is
//! dropped; a frame of an unknown version is counted and skipped.
//!
//! The socket is the trust boundary: it is made mode 0600, connections from
//! another user are refused (`SO_PEERCRED`), at most [`MAX_CONNECTIONS`]
//! are read at once, one silent for [`IDLE_TIMEOUT`] is closed, and the
//! first connection that delivers a good report owns the VM's reports until
//! it ends: a second writer cannot interleave its figures with the agent's.

use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use memtide_agent_proto::{DecodeError, FrameReader, GuestReport};

use crate::report::Report;

/// Errors from starting a reader.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The socket could not be bound.
    #[error("cannot listen for agent reports on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something other than a socket is at the path; it is left alone.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A live socket is at the path: another process listens on it.
    #[error("{0} is in use by another process (another memtide?); refusing to replace it")]
    InUse(PathBuf),
    /// The socket's mode could not be set.
    #[error("cannot make {path} private: {source}")]
    Permissions {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The acceptor thread could not start.
    #[error("cannot start the agent reader thread: {0}")]
    Thread(std::io::Error),
}

impl From<memtide_uds::BindError> for ReaderError {
    fn from(e: memtide_uds::BindError) -> Self {
        use memtide_uds::BindError;
        match e {
            BindError::InUse(path) => Self::InUse(path),
            BindError::NotASocket(path) => Self::NotASocket(path),
            BindError::Bind { path, source } => Self::Bind { path, source },
            BindError::Permissions { path, source } => Self::Permissions { path, source },
        }
    }
}

/// Most agent connections of one VM read at once; more are refused.
pub const MAX_CONNECTIONS: usize = 4;

/// A connection that sends nothing for this long is closed (the agent
/// reports every 250 ms).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A report and when the host received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The report as the agent sent it.
    pub report: GuestReport,
    /// Host time of arrival, ms since the store was created.
    pub received_ms: u64,
}

/// Counters and the latest report, as `GET /memory/guest` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentSnapshot {
    /// The latest report, if any arrived.
    pub latest: Option<Received>,
    /// Reports accepted.
    pub reports: u64,
    /// Frames rejected (unknown version, malformed, implausible).
    pub rejected: u64,
    /// Agent connections accepted.
    pub connections: u64,
    /// Why the last frame was rejected.
    pub last_error: Option<String>,
    /// Host time now, ms since the store was created (ages are
    /// `now_ms - received_ms`).
    pub now_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    latest: Option<Received>,
    reports: u64,
    rejected: u64,
    connections: u64,
    last_error: Option<String>,
    /// Connections being read now.
    open: usize,
    /// Id of the next connection.
    next_id: u64,
    /// The connection whose reports are believed.
    owner: Option<u64>,
}

/// One open agent connection; closing it (drop) frees its place and, if it
/// owned the VM's reports, lets the next connection take them.
#[derive(Debug)]
pub struct Connection<'a> {
    id: u64,
    reports: &'a AgentReports,
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        let mut inner = self.reports.lock();
        inner.open = inner.open.saturating_sub(1);
        if inner.owner == Some(self.id) {
            inner.owner = None;
        }
    }
}

/// The latest agent report of one VM, shared between the reader threads,
/// the balancer and the control API.
#[derive(Debug)]
pub struct AgentReports {
    epoch: Instant,
    inner: Mutex<Inner>,
}

impl Default for AgentReports {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentReports {
    /// An empty store whose clock starts now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Host time in ms since the store was created.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes one decoded frame: plausible reports replace the latest one,
    /// others are counted as rejected with the reason.
    pub fn accept(&self, frame: Result<GuestReport, DecodeError>) {
        self.accept_from(None, frame);
    }

    /// Opens a connection, or `None` when [`MAX_CONNECTIONS`] are open.
    pub fn open(&self) -> Option<Connection<'_>> {
        let mut inner = self.lock();
        if inner.open >= MAX_CONNECTIONS {
            return None;
        }
        inner.open += 1;
        inner.connections += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        Some(Connection { id, reports: self })
    }

    /// [`accept`](Self::accept) for a frame read from connection `conn`: a
    /// good report from a connection other than the owner is rejected.
    fn accept_from(&self, conn: Option<u64>, frame: Result<GuestReport, DecodeError>) {
        let now = self.now_ms();
        let mut inner = self.lock();
        let owner = inner.owner;
        match frame
            .map_err(|e| e.to_string())
            .and_then(|r| {
                implausible(&r).map_or(Ok(r), |why| Err(format!("implausible report: {why}")))
            })
            .and_then(|r| match (conn, owner) {
                (Some(c), Some(o)) if c != o => Err(format!(
                "report from agent connection {c} ignored: connection {o} owns this VM's reports"
            )),
                _ => Ok(r),
            }) {
            Ok(report) => {
                if conn.is_some() {
                    inner.owner = conn;
                }
                inner.latest = Some(Received {
                    report,
                    received_ms: now,
                });
                inner.reports += 1;
            }
            Err(why) => {
                memtide_log_limit::warn_limited!("agent report rejected: {why}");
                inner.rejected += 1;
                inner.last_error = Some(why);
            }
        }
    }

    /// Everything known now.
    pub fn snapshot(&self) -> AgentSnapshot {
        let now_ms = self.now_ms();
        let inner = self.lock();
        AgentSnapshot {
            latest: inner.latest,
            reports: inner.reports,
            rejected: inner.rejected,
            connections: inner.connections,
            last_error: inner.last_error.clone(),
            now_ms,
        }
    }

    /// The latest report in the policy's terms (MiB, host receive time).
    pub fn latest_for_policy(&self) -> Option<Report> {
        self.lock().latest.map(|r| to_policy_report(&r))
    }
}

/// A report the agent could not have read from a real `/proc/meminfo`:
/// parts larger than the whole. Returns why, or `None` when it is sane.
/// (Committed_AS may exceed MemTotal: that is over-commit, not a lie; the
/// policy judges absurd sizes against the VM's maximum.)
pub fn implausible(r: &GuestReport) -> Option<String> {
    if r.mem_total_kib == 0 {
        return Some("MemTotal is 0".into());
    }
    if r.mem_free_kib > r.mem_total_kib {
        return Some(format!(
            "MemFree {} KiB > MemTotal {} KiB",
            r.mem_free_kib, r.mem_total_kib
        ));
    }
    if r.mem_available_kib > r.mem_total_kib.saturating_add(r.swap_total_kib) {
        return Some(format!(
            "MemAvailable {} KiB > MemTotal {} KiB",
            r.mem_available_kib, r.mem_total_kib
        ));
    }
    if r.swap_free_kib > r.swap_total_kib {
        return Some(format!(
            "SwapFree {} KiB > SwapTotal {} KiB",
            r.swap_free_kib, r.swap_total_kib
        ));
    }
    None
}

/// Converts a received report to the policy's [`Report`].
pub fn to_policy_report(r: &Received) -> Report {
    let mib = |kib: u64| kib >> 10;
    Report {
        committed_mib: mib(r.report.committed_as_kib),
        visible_mib: mib(r.report.mem_total_kib),
        available_mib: mib(r.report.mem_available_kib),
        psi_some_avg10: r.report.psi.map(|p| p.some_avg10_centi as f32 / 100.0),
        psi_some_total_us: r.report.psi.map(|p| p.some_total_us),
        stalls: None,
        timestamp_ms: r.report.uptime_ms,
        received_ms: r.received_ms,
    }
}

/// The socket the vsock device forwards host port `port` to, for a vsock
/// device whose base path is `uds`.
pub fn port_socket_path(uds: &Path, port: u32) -> PathBuf {
    let mut s = uds.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Listens on `<uds>_<port>` (replacing a stale socket, never another kind
/// of file), mode 0600, and feeds every agent connection of this user into
/// `reports`, on background threads.
pub fn start(uds: &Path, port: u32, reports: Arc<AgentReports>) -> Result<PathBuf, ReaderError> {
    let path = port_socket_path(uds, port);
    let listener = memtide_uds::bind_private(&path)?;
    std::thread::Builder::new()
        .name("agent-accept".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(why) = same_user(&stream) {
                            memtide_log_limit::warn_limited!("agent connection refused: {why}");
                            continue;
                        }
                        if let Err(e) = stream.set_read_timeout(Some(IDLE_TIMEOUT)) {
                            memtide_log_limit::warn_limited!("agent connection: {e}");
                            continue;
                        }
                        let reports = reports.clone();
                        let spawned = std::thread::Builder::new()
                            .name("agent-read".into())
                            .spawn(move || read_connection(stream, &reports));
                        if let Err(e) = spawned {
                            log::error!("cannot start an agent reader: {e}");
                        }
                    }
                    Err(e) => memtide_log_limit::warn_limited!("agent listener: {e}"),
                }
            }
        })
        .map_err(ReaderError::Thread)?;
    Ok(path)
}

/// Whether the peer of `stream` runs as this process's user (or root).
fn same_user(stream: &UnixStream) -> Result<(), String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a ucred is 12 bytes, which fits socklen_t"
    )]
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes into `cred`, a live
    // `ucred` on this stack frame, and updates `len`; the fd is owned by
    // `stream` for the whole call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(format!(
            "no peer credentials: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if cred.uid == me || cred.uid == 0 {
        Ok(())
    } else {
        Err(format!(
            "peer pid {} runs as uid {}, not {me}",
            cred.pid, cred.uid
        ))
    }
}

/// Reads frames from one connection until it ends, breaks, or stays silent
/// for the stream's read timeout; refused when [`MAX_CONNECTIONS`] are
/// being read.
pub fn read_connection(mut stream: impl Read, reports: &AgentReports) {
    let Some(conn) = reports.open() else {
        memtide_log_limit::warn_limited!(
            "agent connection refused: {MAX_CONNECTIONS} already open"
        );
        return;
    };
    let mut frames = FrameReader::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("agent connection: {e}");
                return;
            }
        };
        frames.push(&buf[..n]);
        while let Some(frame) = frames.next_frame() {
            let fatal = matches!(&frame, Err(e) if !is_recoverable(e));
            reports.accept_from(Some(conn.id), frame);
            if fatal {
                memtide_log_limit::warn_limited!(
                    "agent connection dropped: the stream is out of sync"
                );
                return;
            }
        }
    }
}

/// Whether the stream stays in sync after `e` (the frame was skipped whole).
fn is_recoverable(e: &DecodeError) -> bool {
    !matches!(e, DecodeError::FrameTooLong(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtide_agent_proto::{encode, MemoryPressure};
    use std::os::unix::fs::PermissionsExt;

    fn report(seq: u64) -> GuestReport {
        GuestReport {
            seq,
            uptime_ms: 1000 + seq,
            mem_total_kib: 262_144,
            mem_free_kib: 100_000,
            mem_available_kib: 150_000,
            committed_as_kib: 80_000,
            commit_limit_kib: 131_072,
            swap_total_kib: 0,
            swap_free_kib: 0,
            psi: Some(MemoryPressure {
                some_avg10_centi: 125,
                full_avg10_centi: 0,
                some_total_us: 10,
                full_total_us: 0,
            }),
        }
    }

    #[test]
    fn a_stream_of_frames_keeps_the_latest_report() {
        let mut bytes = Vec::new();
        for seq in 0..3 {
            bytes.extend(encode(&report(seq)));
        }
        let reports = AgentReports::new();
        read_connection(&bytes[..], &reports);
        let s = reports.snapshot();
        assert_eq!((s.reports, s.rejected), (3, 0));
        assert_eq!(s.latest.map(|r| r.report.seq), Some(2));
        let p = reports.latest_for_policy().expect("policy report");
        assert_eq!(
            (p.visible_mib, p.committed_mib, p.available_mib),
            (256, 78, 146)
        );
        assert_eq!(p.psi_some_avg10, Some(1.25));
    }

    #[test]
    fn the_first_connection_with_a_good_report_owns_the_vm_until_it_closes() {
        let reports = AgentReports::new();
        let agent = reports.open().expect("agent");
        let intruder = reports.open().expect("intruder");
        reports.accept_from(Some(agent.id), Ok(report(1)));
        reports.accept_from(Some(intruder.id), Ok(report(99)));
        let s = reports.snapshot();
        assert_eq!(
            s.latest.map(|r| r.report.seq),
            Some(1),
            "the intruder is ignored"
        );
        assert_eq!(s.rejected, 1);
        assert!(s
            .last_error
            .unwrap_or_default()
            .contains("owns this VM's reports"));
        drop(agent);
        reports.accept_from(Some(intruder.id), Ok(report(100)));
        assert_eq!(
            reports.snapshot().latest.map(|r| r.report.seq),
            Some(100),
            "after the owner left, the next source takes over"
        );
    }

    #[test]
    fn at_most_max_connections_are_read_at_once() {
        let reports = AgentReports::new();
        let open: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| reports.open().expect("within the cap"))
            .collect();
        assert!(reports.open().is_none(), "one more is refused");
        read_connection(&encode(&report(5))[..], &reports);
        assert_eq!(
            reports.snapshot().reports,
            0,
            "a refused connection is not read"
        );
        drop(open);
        read_connection(&encode(&report(5))[..], &reports);
        assert_eq!(reports.snapshot().reports, 1);
    }

    #[test]
    fn a_regular_file_at_the_socket_path_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("memtide-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let uds = dir.join("v.vsock");
        let path = port_socket_path(&uds, 5100);
        std::fs::write(&path, b"precious").expect("file");
        let err = start(&uds, 5100, Arc::new(AgentReports::new())).expect_err("refused");
        assert!(matches!(err, ReaderError::NotASocket(_)), "{err}");
        assert_eq!(std::fs::read(&path).expect("still there"), b"precious");
        std::fs::remove_file(&path).expect("rm");
        let sock = start(&uds, 5100, Arc::new(AgentReports::new())).expect("socket");
        let mode = std::fs::metadata(&sock).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = start(&uds, 5100, Arc::new(AgentReports::new())).expect_err("live");
        assert!(matches!(err, ReaderError::InUse(_)), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lying_agent_is_rejected_and_the_last_good_report_kept() {
        let reports = AgentReports::new();
        reports.accept(Ok(report(1)));
        let mut lie = report(2);
        lie.mem_free_kib = lie.mem_total_kib + 1;
        reports.accept(Ok(lie));
        let mut zero = report(3);
        zero.mem_total_kib = 0;
        reports.accept(Ok(zero));
        let s = reports.snapshot();
        assert_eq!((s.reports, s.rejected), (1, 2));
        assert_eq!(s.latest.map(|r| r.report.seq), Some(1));
        assert!(s.last_error.is_some_and(|e| e.contains("MemTotal is 0")));
    }

    #[test]
    fn an_unknown_version_is_skipped_and_the_stream_stays_in_sync() {
        let mut future = encode(&report(7));
        // Bytes 4..6 are the version (after the u32 length).
        future[4] = 0xff;
        future[5] = 0x7f;
        let mut bytes = future;
        bytes.extend(encode(&report(8)));
        let reports = AgentReports::new();
        read_connection(&bytes[..], &reports);
        let s = reports.snapshot();
        assert_eq!((s.reports, s.rejected), (1, 1));
        assert_eq!(s.latest.map(|r| r.report.seq), Some(8));
    }

    #[test]
    fn an_oversized_frame_ends_the_connection() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend(encode(&report(1)));
        let reports = AgentReports::new();
        read_connection(&bytes[..], &reports);
        let s = reports.snapshot();
        assert_eq!((s.reports, s.rejected), (0, 1));
    }

    #[test]
    fn reports_arrive_over_the_port_socket() {
        let dir = std::env::temp_dir().join(format!("memtide-reader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let uds = dir.join("v.sock");
        let reports = Arc::new(AgentReports::new());
        let path = start(&uds, 5100, reports.clone()).expect("start");
        assert_eq!(path, dir.join("v.sock_5100"));
        let mut client = UnixStream::connect(&path).expect("connect");
        std::io::Write::write_all(&mut client, &encode(&report(4))).expect("write");
        drop(client);
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while reports.snapshot().reports == 0 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let s = reports.snapshot();
        assert_eq!((s.reports, s.connections), (1, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
