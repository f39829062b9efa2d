//! Parsing the guest's balloon statistics buffer: packed
//! `(le16 tag, le64 value)` entries (virtio 1.x §5.5.6.3; tags as Linux
//! 6.12's `include/uapi/linux/virtio_balloon.h` numbers them).

/// Statistics the guest reported (bytes unless noted), `None` if absent.
///
/// Tags 8-15 are cumulative event counters since the guest booted; Linux
/// sends them only when built with `CONFIG_VM_EVENT_COUNTERS` (the hugetlb
/// pair also needs `CONFIG_HUGETLB_PAGE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// Swapped in, bytes (tag 0).
    pub swap_in: Option<u64>,
    /// Swapped out, bytes (tag 1).
    pub swap_out: Option<u64>,
    /// Major faults, a count (tag 2).
    pub major_faults: Option<u64>,
    /// Minor faults, a count (tag 3).
    pub minor_faults: Option<u64>,
    /// Free memory (tag 4).
    pub free_memory: Option<u64>,
    /// Total memory, the guest's MemTotal (tag 5).
    pub total_memory: Option<u64>,
    /// Available memory, MemAvailable (tag 6).
    pub available_memory: Option<u64>,
    /// Disk caches (tag 7).
    pub disk_caches: Option<u64>,
    /// Huge page allocations from the buddy allocator, a count (tag 8).
    pub hugetlb_allocations: Option<u64>,
    /// Huge page allocation failures, a count (tag 9).
    pub hugetlb_failures: Option<u64>,
    /// OOM killer invocations, a count (tag 10).
    pub oom_kills: Option<u64>,
    /// Allocation stalls (direct reclaim entered by an allocation), a
    /// count (tag 11).
    pub alloc_stalls: Option<u64>,
    /// Memory scanned by kswapd, bytes (tag 12).
    pub async_scan: Option<u64>,
    /// Memory scanned in direct reclaim, bytes (tag 13).
    pub direct_scan: Option<u64>,
    /// Memory reclaimed by kswapd, bytes (tag 14).
    pub async_reclaim: Option<u64>,
    /// Memory reclaimed in direct reclaim, bytes (tag 15).
    pub direct_reclaim: Option<u64>,
    /// Entries with tags this parser does not know.
    pub unknown_tags: u32,
    /// When the buffer arrived, milliseconds since the VMM started.
    pub updated_ms: u64,
}

/// Size of one packed entry.
const ENTRY_LEN: usize = 10;

impl BalloonStats {
    /// The field tag `tag` fills, if this parser knows the tag.
    fn slot(&mut self, tag: u16) -> Option<&mut Option<u64>> {
        Some(match tag {
            0 => &mut self.swap_in,
            1 => &mut self.swap_out,
            2 => &mut self.major_faults,
            3 => &mut self.minor_faults,
            4 => &mut self.free_memory,
            5 => &mut self.total_memory,
            6 => &mut self.available_memory,
            7 => &mut self.disk_caches,
            8 => &mut self.hugetlb_allocations,
            9 => &mut self.hugetlb_failures,
            10 => &mut self.oom_kills,
            11 => &mut self.alloc_stalls,
            12 => &mut self.async_scan,
            13 => &mut self.direct_scan,
            14 => &mut self.async_reclaim,
            15 => &mut self.direct_reclaim,
            _ => return None,
        })
    }
}

/// Parses a statistics buffer; a trailing partial entry is ignored.
pub fn parse(buf: &[u8], updated_ms: u64) -> BalloonStats {
    let mut s = BalloonStats {
        updated_ms,
        ..Default::default()
    };
    for entry in buf.chunks_exact(ENTRY_LEN) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let mut v = [0u8; 8];
        v.copy_from_slice(&entry[2..]);
        let value = Some(u64::from_le_bytes(v));
        match s.slot(tag) {
            Some(field) => *field = value,
            None => s.unknown_tags = s.unknown_tags.saturating_add(1),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u16, v: u64) -> Vec<u8> {
        let mut e = tag.to_le_bytes().to_vec();
        e.extend_from_slice(&v.to_le_bytes());
        e
    }

    #[test]
    fn parses_known_and_counts_unknown_tags() {
        let mut buf = entry(5, 256 << 20);
        buf.extend(entry(4, 100 << 20));
        buf.extend(entry(6, 120 << 20));
        buf.extend(entry(99, 1));
        buf.extend(entry(16, 1)); // VIRTIO_BALLOON_S_NR: not a statistic
        buf.extend_from_slice(&[1, 2, 3]); // partial entry
        let s = parse(&buf, 7);
        assert_eq!(s.total_memory, Some(256 << 20));
        assert_eq!(s.free_memory, Some(100 << 20));
        assert_eq!(s.available_memory, Some(120 << 20));
        assert_eq!(s.swap_in, None);
        assert_eq!(s.oom_kills, None, "a guest without vm event counters");
        assert_eq!(s.unknown_tags, 2);
        assert_eq!(s.updated_ms, 7);
    }

    #[test]
    fn parses_the_vm_event_counters_of_linux_6_12() {
        // The order update_balloon_vm_stats() sends them in.
        let values = [
            (0, 4096),
            (1, 8192),
            (2, 3),
            (3, 90_000),
            (10, 2),
            (11, 17),
            (12, 1 << 20),
            (13, 2 << 20),
            (14, 3 << 20),
            (15, 4 << 20),
            (8, 5),
            (9, 1),
        ];
        let buf: Vec<u8> = values.iter().flat_map(|&(t, v)| entry(t, v)).collect();
        let s = parse(&buf, 0);
        assert_eq!(s.oom_kills, Some(2));
        assert_eq!(s.alloc_stalls, Some(17));
        assert_eq!(s.async_scan, Some(1 << 20));
        assert_eq!(s.direct_scan, Some(2 << 20));
        assert_eq!(s.async_reclaim, Some(3 << 20));
        assert_eq!(s.direct_reclaim, Some(4 << 20));
        assert_eq!(s.hugetlb_allocations, Some(5));
        assert_eq!(s.hugetlb_failures, Some(1));
        assert_eq!(s.swap_out, Some(8192));
        assert_eq!(s.unknown_tags, 0);
    }

    #[test]
    fn any_value_is_taken_as_sent_and_a_repeated_tag_keeps_the_last() {
        let mut buf = entry(11, u64::MAX);
        buf.extend(entry(11, 5));
        buf.extend(entry(10, u64::MAX));
        let s = parse(&buf, 0);
        assert_eq!(s.alloc_stalls, Some(5));
        assert_eq!(s.oom_kills, Some(u64::MAX));
    }
}
