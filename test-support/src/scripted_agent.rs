//! A stand-in for the guest memory agent, on the host: it writes the
//! agent's wire format into a VM's report socket (`<uds>_<port>`) with a
//! committed memory the caller scripts and a MemTotal read from the VM's
//! API (what the guest can use now). `memtide demo --workload scripted`,
//! `memtide bench balancer` and the balancer's integration test use it for
//! exact, repeatable demand; everything after the report socket is the
//! real path.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memtide_agent_proto::{encode, GuestReport};

use memtide_api::{Client, ClientError};

/// The real agent's default report interval.
pub const REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// One report frame: `committed` MiB committed out of `visible` MiB.
pub fn frame(seq: u64, uptime_ms: u64, visible_mib: u64, committed_mib: u64) -> Vec<u8> {
    encode(&GuestReport {
        seq,
        uptime_ms,
        mem_total_kib: visible_mib << 10,
        mem_free_kib: visible_mib.saturating_sub(committed_mib) << 10,
        mem_available_kib: visible_mib.saturating_sub(committed_mib) << 10,
        committed_as_kib: committed_mib << 10,
        commit_limit_kib: visible_mib << 10,
        swap_total_kib: 0,
        swap_free_kib: 0,
        psi: None,
    })
}

/// What the guest can use now, from its API: (online MiB, balloon MiB).
/// Online is the boot memory plus the slots the guest acknowledged with
/// `_OST` (added and onlined), not merely the slots memtide mapped.
pub fn guest_memory(api: &Path) -> Result<(u64, u64), ClientError> {
    let client = Client::new(api);
    let balloon = client.get_balloon()?;
    let online = match client.get_memory() {
        Ok(m) => m.online_mib(),
        // No hot-add slots (a virtio-mem guest, say): the balloon's guest
        // RAM, which counts plugged virtio-mem memory.
        Err(e) if e.status() == Some(400) => balloon.guest_ram_mib,
        Err(e) => return Err(e),
    };
    Ok((online, balloon.actual_mib))
}

/// A background report source for one VM; stops when dropped.
#[derive(Debug)]
pub struct ScriptedAgent {
    committed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ScriptedAgent {
    /// Starts reporting `committed_mib` to `report_sock` every
    /// [`REPORT_INTERVAL`], with MemTotal from the VM's API at `api`.
    pub fn spawn(api: PathBuf, report_sock: PathBuf, committed_mib: u64) -> Self {
        let committed = Arc::new(AtomicU64::new(committed_mib));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (committed.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut conn: Option<UnixStream> = None;
            let mut visible = 0;
            let mut seq = 0u64;
            while !s.load(Ordering::SeqCst) {
                if let Ok((online, balloon)) = guest_memory(&api) {
                    visible = online.saturating_sub(balloon);
                }
                if conn.is_none() {
                    conn = UnixStream::connect(&report_sock).ok();
                }
                if let (Some(stream), true) = (&mut conn, visible > 0) {
                    let uptime = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let f = frame(seq, uptime, visible, c.load(Ordering::SeqCst));
                    seq += 1;
                    if stream.write_all(&f).is_err() {
                        conn = None;
                    }
                }
                std::thread::sleep(REPORT_INTERVAL);
            }
        });
        Self {
            committed,
            stop,
            handle: Some(handle),
        }
    }

    /// Changes the committed memory reported from the next report on.
    pub fn set(&self, committed_mib: u64) {
        self.committed.store(committed_mib, Ordering::SeqCst);
    }
}

impl Drop for ScriptedAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_to_the_scripted_memory() {
        let f = frame(3, 1000, 384, 300);
        let r = memtide_agent_proto::decode_payload(&f[4..]).expect("decodes");
        assert_eq!((r.seq, r.uptime_ms), (3, 1000));
        assert_eq!(
            (r.mem_total_kib >> 10, r.committed_as_kib >> 10),
            (384, 300)
        );
        assert_eq!(r.mem_available_kib >> 10, 84);
    }
}
