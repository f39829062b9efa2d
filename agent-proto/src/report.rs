//! The report the guest agent sends: a snapshot of the guest's memory.

use serde::{Deserialize, Serialize};

/// One snapshot of the guest's memory, taken by the agent every interval.
///
/// Sizes are in KiB, as `/proc/meminfo` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestReport {
    /// Report number since the agent started (0, 1, 2, ...); a gap on the
    /// host means reports were lost (for instance while reconnecting).
    pub seq: u64,
    /// When the agent took the snapshot: guest time since boot, in ms
    /// (from `/proc/uptime`).
    pub uptime_ms: u64,
    /// `MemTotal`: the memory the guest kernel manages, KiB (grows with
    /// hot-added memory; a balloon does not lower it).
    pub mem_total_kib: u64,
    /// `MemFree`: memory not used at all, KiB.
    pub mem_free_kib: u64,
    /// `MemAvailable`: the kernel's estimate of memory available to new
    /// work without swapping, KiB.
    pub mem_available_kib: u64,
    /// `Committed_AS`: memory the guest's processes have committed, KiB;
    /// the balancer's demand signal.
    pub committed_as_kib: u64,
    /// `CommitLimit`: the commit limit under strict overcommit, KiB.
    pub commit_limit_kib: u64,
    /// `SwapTotal`: swap space, KiB (0 without swap).
    pub swap_total_kib: u64,
    /// `SwapFree`: unused swap space, KiB.
    pub swap_free_kib: u64,
    /// Memory pressure (PSI), when the guest kernel provides it.
    pub psi: Option<MemoryPressure>,
}

/// Memory pressure stall information from `/proc/pressure/memory`.
///
/// The averages are kept in hundredths of a percent (the kernel prints two
/// decimals), so the type stays `Eq` and encodes exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryPressure {
    /// `some avg10`: share of the last 10 s in which at least one task
    /// stalled on memory, in hundredths of a percent (1234 = 12.34 %).
    pub some_avg10_centi: u32,
    /// `full avg10`: share of the last 10 s in which all non-idle tasks
    /// stalled on memory at once, in hundredths of a percent.
    pub full_avg10_centi: u32,
    /// `some total`: total time with at least one task stalled, in µs.
    pub some_total_us: u64,
    /// `full total`: total time with all non-idle tasks stalled, in µs.
    pub full_total_us: u64,
}
