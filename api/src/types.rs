//! The JSON bodies of every route, as serde types.

use serde::{Deserialize, Serialize};

/// Route paths.
pub mod paths {
    /// The balloon: [`super::BalloonStatus`], [`super::BalloonTarget`].
    pub const BALLOON: &str = "/balloon";
    /// The balloon's statistics: [`super::BalloonStatistics`].
    pub const BALLOON_STATISTICS: &str = "/balloon/statistics";
    /// Memory hot-add: [`super::MemoryStatus`], [`super::HotAdd`].
    pub const MEMORY: &str = "/memory";
    /// The guest agent's reports: [`super::GuestMemory`].
    pub const MEMORY_GUEST: &str = "/memory/guest";
    /// virtio-mem: [`super::VirtioMemStatus`], [`super::VirtioMemTarget`].
    pub const MEMORY_VIRTIO_MEM: &str = "/memory/virtio-mem";
    /// The vsock device: [`super::VsockStatus`].
    pub const VSOCK: &str = "/vsock";
    /// The balancer: [`super::BalancerStatus`].
    pub const BALANCER: &str = "/balancer";
    /// Admission: [`super::AdmitRequest`], [`super::AdmitAnswer`].
    pub const BALANCER_ADMIT: &str = "/balancer/admit";
    /// Every metric, OpenMetrics text.
    pub const METRICS: &str = "/metrics";
}

/// Every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// `PUT /balloon`: the balloon target (memory taken from the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonTarget {
    /// Target size in MiB.
    pub target_mib: u64,
}

/// `GET /balloon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatus {
    /// The target, MiB.
    pub target_mib: u64,
    /// What the guest driver reports as inflated, MiB.
    pub actual_mib: u64,
    /// Pages the device holds, MiB.
    pub inflated_mib: u64,
    /// The guest driver is up.
    pub driver_ready: bool,
    /// Guest RAM now (boot plus hot-added), MiB.
    pub guest_ram_mib: u64,
    /// Guest RAM resident on the host, MiB.
    pub guest_ram_resident_mib: u64,
}

/// The guest's latest balloon statistics (bytes and counts as the
/// virtio-balloon statistics tags define them; `null` when not reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestBalloonStats {
    /// Total memory, bytes.
    pub total_memory: Option<u64>,
    /// Free memory, bytes.
    pub free_memory: Option<u64>,
    /// Available memory, bytes.
    pub available_memory: Option<u64>,
    /// Disk caches, bytes.
    pub disk_caches: Option<u64>,
    /// Swapped in, bytes.
    pub swap_in: Option<u64>,
    /// Swapped out, bytes.
    pub swap_out: Option<u64>,
    /// Major faults.
    pub major_faults: Option<u64>,
    /// Minor faults.
    pub minor_faults: Option<u64>,
    /// OOM killer invocations since the guest booted (a Linux guest sends
    /// tags 8-15 only when built with `CONFIG_VM_EVENT_COUNTERS`).
    #[serde(default)]
    pub oom_kills: Option<u64>,
    /// Allocation stalls (allocations that entered direct reclaim) since
    /// the guest booted.
    #[serde(default)]
    pub alloc_stalls: Option<u64>,
    /// Memory scanned by kswapd, bytes.
    #[serde(default)]
    pub async_scan: Option<u64>,
    /// Memory scanned in direct reclaim, bytes.
    #[serde(default)]
    pub direct_scan: Option<u64>,
    /// Memory reclaimed by kswapd, bytes.
    #[serde(default)]
    pub async_reclaim: Option<u64>,
    /// Memory reclaimed in direct reclaim, bytes.
    #[serde(default)]
    pub direct_reclaim: Option<u64>,
    /// Huge page allocations.
    #[serde(default)]
    pub hugetlb_allocations: Option<u64>,
    /// Huge page allocation failures.
    #[serde(default)]
    pub hugetlb_failures: Option<u64>,
    /// When the report arrived, ms on the device's clock.
    pub updated_ms: u64,
}

/// The balloon device's host-side counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonHostCounters {
    /// Inflate requests from the guest.
    pub inflate_requests: u64,
    /// Deflate requests from the guest.
    pub deflate_requests: u64,
    /// Page numbers outside guest RAM.
    pub pfns_out_of_range: u64,
    /// Page numbers inflated twice.
    pub pfns_duplicate: u64,
    /// Descriptors that could not be parsed.
    pub malformed_descriptors: u64,
    /// `madvise` calls.
    pub discard_calls: u64,
    /// Failed `madvise` calls.
    pub discard_errors: u64,
    /// Time spent discarding, ns.
    pub discard_ns: u64,
    /// Pages freed by free page reporting.
    pub reported_pages: u64,
}

/// `GET /balloon/statistics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatistics {
    /// The guest's latest report, if any.
    pub guest: Option<GuestBalloonStats>,
    /// Host counters.
    pub host: BalloonHostCounters,
}

/// `PUT /memory`: hot-add memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotAdd {
    /// MiB to add (whole slots).
    pub size_mib: u64,
}

/// One hot-add slot in [`MemoryStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotStatus {
    /// Guest-physical base address.
    pub base: u64,
    /// Size, MiB.
    pub size_mib: u64,
    /// Populated.
    pub present: bool,
    /// The guest's `_OST` status, once reported (0 = success).
    pub ost_status: Option<u32>,
    /// Milliseconds from populating the slot to the guest's `_OST`.
    pub online_ms: Option<f64>,
}

/// `GET /memory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryStatus {
    /// Boot memory, MiB.
    pub boot_mib: u64,
    /// Boot plus hot-added memory, MiB.
    pub plugged_mib: u64,
    /// The most memory the VM may reach, MiB.
    pub max_mib: u64,
    /// The size of each hot-add slot of this VM, MiB.
    pub slot_mib: u64,
    /// Every slot.
    pub slots: Vec<SlotStatus>,
}

impl MemoryStatus {
    /// Boot memory plus the slots the guest acknowledged with `_OST`
    /// (added and onlined), MiB.
    pub fn online_mib(&self) -> u64 {
        self.boot_mib
            + self
                .slots
                .iter()
                .filter(|s| s.ost_status.is_some())
                .map(|s| s.size_mib)
                .sum::<u64>()
    }
}

/// `PUT /memory/virtio-mem`: the size the guest is asked to plug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtioMemTarget {
    /// Requested size, MiB (a multiple of the block size, at most the
    /// region size).
    pub requested_mib: u64,
}

/// The host-side counters of virtio-mem in [`VirtioMemStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtioMemCounters {
    /// PLUG requests.
    pub plug_requests: u64,
    /// UNPLUG requests.
    pub unplug_requests: u64,
    /// UNPLUG_ALL requests.
    pub unplug_all_requests: u64,
    /// STATE requests.
    pub state_requests: u64,
    /// Requests answered NACK.
    pub nacks: u64,
    /// Requests answered ERROR.
    pub errors: u64,
    /// Chains that were not a readable, answerable request.
    pub malformed_requests: u64,
    /// `madvise(MADV_DONTNEED)` calls for unplugged blocks.
    pub discard_calls: u64,
    /// Those that failed.
    pub discard_errors: u64,
    /// Nanoseconds spent in those calls.
    pub discard_ns: u64,
}

/// `GET /memory/virtio-mem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtioMemStatus {
    /// The size the guest is asked to plug, MiB.
    pub requested_mib: u64,
    /// The size the guest has plugged, MiB.
    pub plugged_mib: u64,
    /// Device block size, MiB.
    pub block_size_mib: u64,
    /// Guest-physical base of the device region.
    pub region_base: u64,
    /// Size of the device region (the most that can be plugged), MiB.
    pub region_mib: u64,
    /// The guest driver has brought the device up.
    pub driver_ready: bool,
    /// Host-side counters.
    pub counters: VirtioMemCounters,
}

/// Memory pressure stall information from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Psi {
    /// `some avg10`, percent.
    pub some_avg10: f64,
    /// `full avg10`, percent.
    pub full_avg10: f64,
    /// `some total`, µs.
    pub some_total_us: u64,
    /// `full total`, µs.
    pub full_total_us: u64,
}

/// The guest agent's latest report in [`GuestMemory`] (KiB, as the
/// guest's `/proc/meminfo`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// Report sequence number.
    pub seq: u64,
    /// Guest uptime at the report, ms.
    pub uptime_ms: u64,
    /// Age of the report on the host clock, ms.
    pub age_ms: u64,
    /// MemTotal.
    pub mem_total_kib: u64,
    /// MemFree.
    pub mem_free_kib: u64,
    /// MemAvailable.
    pub mem_available_kib: u64,
    /// Committed_AS.
    pub committed_as_kib: u64,
    /// CommitLimit.
    pub commit_limit_kib: u64,
    /// SwapTotal.
    pub swap_total_kib: u64,
    /// SwapFree.
    pub swap_free_kib: u64,
    /// Committed_AS × 100 / MemTotal (`None` when MemTotal is 0).
    pub pressure_pct: Option<u64>,
    /// Memory PSI, when the guest kernel has it.
    pub psi: Option<Psi>,
}

/// `GET /memory/guest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestMemory {
    /// The latest report, if any.
    pub latest: Option<AgentReport>,
    /// Reports accepted.
    pub reports: u64,
    /// Reports rejected.
    pub rejected: u64,
    /// Agent connections seen.
    pub connections: u64,
    /// The last rejection's reason.
    pub last_error: Option<String>,
}

/// `GET /vsock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockStatus {
    /// The guest driver is up.
    pub driver_ready: bool,
    /// The guest's context ID.
    pub guest_cid: u64,
    /// Open connections.
    pub connections: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connections reset.
    pub connections_reset: u64,
    /// Packets to the guest.
    pub tx_packets: u64,
    /// Packets from the guest.
    pub rx_packets: u64,
    /// Payload bytes to the guest.
    pub tx_bytes: u64,
    /// Payload bytes from the guest.
    pub rx_bytes: u64,
    /// Packets dropped as malformed.
    pub malformed_packets: u64,
}

/// A balancer decision that changed something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastAction {
    /// Host time of the decision, ms.
    pub t_ms: u64,
    /// Its reason.
    pub reason: String,
}

/// One VM's line in [`BalancerStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerVm {
    /// The VM's name.
    pub name: String,
    /// Plugged minus balloon, MiB.
    pub assigned_mib: u64,
    /// Boot plus hot-added memory, MiB.
    pub plugged_mib: u64,
    /// Memory held by the balloon, MiB.
    pub balloon_mib: u64,
    /// virtio-mem: the requested size the balancer counts, MiB (0 without
    /// a device).
    #[serde(default)]
    pub virtio_mem_mib: u64,
    /// virtio-mem: the device's plugged size at the balancer's last look,
    /// MiB.
    #[serde(default)]
    pub virtio_mem_plugged_mib: u64,
    /// Committed plus buffer within the VM's bounds, MiB.
    pub demand_mib: u64,
    /// Committed memory from the latest report, MiB.
    pub committed_mib: Option<u64>,
    /// Committed × 100 / assigned.
    pub pressure_pct: Option<u64>,
    /// The last decision's reason.
    pub reason: String,
    /// The last decision that changed something.
    pub last_action: Option<LastAction>,
    /// The last failure to apply an action.
    pub last_error: Option<String>,
}

/// `GET /balancer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerStatus {
    /// Host budget for all VMs, MiB.
    pub budget_mib: u64,
    /// Ticks run.
    pub ticks: u64,
    /// Sum of the VMs' assigned memory, MiB.
    pub assigned_total_mib: u64,
    /// One line per VM.
    pub vms: Vec<BalancerVm>,
}

/// `POST /balancer/admit`: a VM that asks to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmitRequest {
    /// Memory it boots with, MiB.
    pub startup_mib: u64,
    /// Least memory it may run with, MiB.
    pub minimum_mib: u64,
    /// Most memory it may reach, MiB.
    pub maximum_mib: u64,
}

/// The answer to [`AdmitRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmitAnswer {
    /// Whether it can start now while every running VM keeps its minimum.
    pub admit: bool,
    /// Memory it can start with, MiB (0 when refused).
    pub memory_mib: u64,
    /// Budget not assigned to any VM now, MiB.
    pub free_now_mib: u64,
    /// Memory the balancer must first take from running VMs, MiB.
    pub reclaim_mib: u64,
    /// Why, in words.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn balloon_status_has_the_documented_field_names() {
        let s = BalloonStatus {
            target_mib: 64,
            actual_mib: 60,
            inflated_mib: 60,
            driver_ready: true,
            guest_ram_mib: 256,
            guest_ram_resident_mib: 42,
        };
        assert_eq!(
            serde_json::to_value(s).expect("json"),
            json!({"target_mib": 64, "actual_mib": 60, "inflated_mib": 60, "driver_ready": true,
                   "guest_ram_mib": 256, "guest_ram_resident_mib": 42})
        );
    }

    #[test]
    fn requests_are_the_documented_bodies() {
        assert_eq!(
            serde_json::to_string(&BalloonTarget { target_mib: 64 }).expect("json"),
            "{\"target_mib\":64}"
        );
        assert_eq!(
            serde_json::to_string(&HotAdd { size_mib: 256 }).expect("json"),
            "{\"size_mib\":256}"
        );
        assert_eq!(
            serde_json::to_string(&VirtioMemTarget { requested_mib: 128 }).expect("json"),
            "{\"requested_mib\":128}"
        );
        assert!(serde_json::from_str::<BalloonTarget>("{\"target\":1}").is_err());
        assert!(serde_json::from_str::<BalloonTarget>("{\"target_mib\":-1}").is_err());
    }

    #[test]
    fn a_renamed_or_missing_field_is_a_decode_error() {
        let ok = json!({"budget_mib": 1, "ticks": 2, "assigned_total_mib": 3, "vms": []});
        assert!(serde_json::from_value::<BalancerStatus>(ok).is_ok());
        let renamed = json!({"budget": 1, "ticks": 2, "assigned_total_mib": 3, "vms": []});
        assert!(serde_json::from_value::<BalancerStatus>(renamed).is_err());
        let missing = json!({"ticks": 2, "assigned_total_mib": 3, "vms": []});
        assert!(serde_json::from_value::<BalancerStatus>(missing).is_err());
        // Optional values are null, not absent: renaming one is an unknown field.
        let vm = json!({"name": "a", "assigned_mib": 1, "plugged_mib": 1, "balloon_mib": 0,
                        "demand_mib": 1, "committed_mib": null, "pressure": null, "reason": "",
                        "last_action": null, "last_error": null});
        assert!(serde_json::from_value::<BalancerVm>(vm).is_err());
    }

    #[test]
    fn memory_and_guest_reports_round_trip() {
        let m = MemoryStatus {
            boot_mib: 256,
            plugged_mib: 384,
            max_mib: 512,
            slot_mib: 128,
            slots: vec![
                SlotStatus {
                    base: 1 << 32,
                    size_mib: 128,
                    present: true,
                    ost_status: Some(0),
                    online_ms: Some(12.5),
                },
                SlotStatus {
                    base: (1 << 32) + (128 << 20),
                    size_mib: 128,
                    present: false,
                    ost_status: None,
                    online_ms: None,
                },
            ],
        };
        let v = serde_json::to_value(&m).expect("json");
        assert_eq!(v["slots"][0]["ost_status"], 0);
        assert!(v["slots"][1]["online_ms"].is_null());
        assert_eq!(v["slot_mib"], 128);
        assert_eq!(serde_json::from_value::<MemoryStatus>(v).expect("back"), m);
        assert_eq!(m.online_mib(), 384);
        let g = json!({"latest": {"seq": 9, "uptime_ms": 5000, "age_ms": 3,
            "mem_total_kib": 200000, "mem_free_kib": 1, "mem_available_kib": 2,
            "committed_as_kib": 150000, "commit_limit_kib": 4, "swap_total_kib": 0,
            "swap_free_kib": 0, "pressure_pct": 75,
            "psi": {"some_avg10": 1.5, "full_avg10": 0.0, "some_total_us": 7, "full_total_us": 8}},
            "reports": 1, "rejected": 0, "connections": 1, "last_error": null});
        let g: GuestMemory = serde_json::from_value(g).expect("decodes");
        let latest = g.latest.expect("latest");
        assert_eq!(latest.pressure_pct, Some(75));
        assert_eq!(latest.psi.map(|p| p.some_avg10), Some(1.5));
    }

    #[test]
    fn statistics_without_a_guest_report_have_a_null_guest() {
        let s = BalloonStatistics {
            guest: None,
            host: BalloonHostCounters {
                inflate_requests: 0,
                deflate_requests: 0,
                pfns_out_of_range: 0,
                pfns_duplicate: 0,
                malformed_descriptors: 0,
                discard_calls: 0,
                discard_errors: 0,
                discard_ns: 0,
                reported_pages: 0,
            },
        };
        let v = serde_json::to_value(s).expect("json");
        assert!(v["guest"].is_null());
        assert_eq!(v["host"]["inflate_requests"], 0);
    }
}
