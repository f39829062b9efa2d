//! The guest's own reclaim and OOM counters, from the balloon statistics
//! queue (tags 10-15; a Linux guest sends them only when built with
//! `CONFIG_VM_EVENT_COUNTERS`). They are cumulative since the guest
//! booted, so they are exposed as counters: a guest reboot is a counter
//! reset, which Prometheus' `rate()` handles.

use memtide_devices::virtio::balloon::BalloonStats;
use prometheus_client::registry::Unit;

use super::{Families, Value};

/// Adds the families of the counters `s` carries (none when absent).
pub(super) fn families(f: &mut Families, s: &BalloonStats) {
    if let Some(n) = s.oom_kills {
        f.push(
            "guest_oom_kills",
            "OOM killer invocations in the guest since it booted (balloon statistics).",
            None,
            Value::Counter(n),
        );
    }
    if let Some(n) = s.alloc_stalls {
        f.push(
            "guest_alloc_stalls",
            "Guest allocations that stalled in direct reclaim since it booted (balloon statistics).",
            None,
            Value::Counter(n),
        );
    }
    for (kind, scanned, reclaimed) in [
        ("async", s.async_scan, s.async_reclaim),
        ("direct", s.direct_scan, s.direct_reclaim),
    ] {
        if let Some(n) = scanned {
            f.labelled(
                "guest_reclaim_scanned",
                "Guest memory scanned for reclaim, by kswapd (async) or in direct reclaim (balloon statistics).",
                Some(Unit::Bytes),
                vec![("kind", kind.to_string())],
                Value::Counter(n),
            );
        }
        if let Some(n) = reclaimed {
            f.labelled(
                "guest_reclaimed",
                "Guest memory reclaimed, by kswapd (async) or in direct reclaim (balloon statistics).",
                Some(Unit::Bytes),
                vec![("kind", kind.to_string())],
                Value::Counter(n),
            );
        }
    }
}
