//! The guest's MemTotal as its balloon statistics report it: the
//! benchmarks' one view of the guest's memory size (the guest must be
//! booted with `--balloon-stats-ms` above 0).

use std::path::Path;
use std::time::Duration;

use super::guest::{Guest, GuestError};
use memtide_api::Client;

/// How often the statistics are polled.
pub const STATS_POLL: Duration = Duration::from_millis(50);

/// One balloon statistics sample as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSample {
    /// When it arrived, ms since the VMM started (only compared with other
    /// samples of the same VM).
    pub updated_ms: u64,
    /// The guest's MemTotal, bytes.
    pub total_bytes: u64,
}

impl StatsSample {
    /// MemTotal in MiB.
    pub fn total_mib(&self) -> f64 {
        mib(self.total_bytes)
    }
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// The latest balloon statistics sample, if the guest has sent one with
/// its MemTotal.
pub fn stats_sample(sock: &Path) -> Result<Option<StatsSample>, GuestError> {
    let v = Client::new(sock).get_balloon_statistics()?;
    Ok(v.guest.and_then(|g| {
        g.total_memory.map(|total_bytes| StatsSample {
            updated_ms: g.updated_ms,
            total_bytes,
        })
    }))
}

/// Waits up to `deadline` for a sample newer than `after_ms` for which
/// `done` holds; returns the latest sample newer than `after_ms` (whether
/// or not `done` held for it), or `None` if none arrived in time.
pub fn wait_fresh(
    guest: &mut Guest,
    after_ms: u64,
    deadline: Duration,
    done: impl Fn(&StatsSample) -> bool,
) -> Result<Option<StatsSample>, GuestError> {
    let mut latest = None;
    let waited = guest.wait_until(
        "a fresh balloon statistics sample",
        deadline,
        STATS_POLL,
        |g| {
            if let Some(s) = stats_sample(&g.sock)?.filter(|s| s.updated_ms > after_ms) {
                latest = Some(s);
                return Ok(done(&s));
            }
            Ok(false)
        },
    );
    match waited {
        Ok(()) | Err(GuestError::Timeout(_)) => Ok(latest),
        Err(e) => Err(e),
    }
}

/// The arrival time of the current sample (0 when there is none yet), to
/// pass to [`wait_fresh`] as `after_ms`.
pub fn current_ms(guest: &Guest) -> Result<u64, GuestError> {
    Ok(stats_sample(&guest.sock)?.map_or(0, |s| s.updated_ms))
}
