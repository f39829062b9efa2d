//! Parsing the guest's balloon statistics buffer: packed
//! `(le16 tag, le64 value)` entries (virtio 1.x §5.5.6.3).

/// Statistics the guest reported (bytes unless noted), `None` if absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStats {
    /// Pages swapped in.
    pub swap_in: Option<u64>,
    /// Pages swapped out.
    pub swap_out: Option<u64>,
    /// Major faults.
    pub major_faults: Option<u64>,
    /// Minor faults.
    pub minor_faults: Option<u64>,
    /// Free memory.
    pub free_memory: Option<u64>,
    /// Total memory (the guest's MemTotal).
    pub total_memory: Option<u64>,
    /// Available memory (MemAvailable).
    pub available_memory: Option<u64>,
    /// Disk caches.
    pub disk_caches: Option<u64>,
    /// Entries with tags this parser does not know.
    pub unknown_tags: u32,
    /// When the buffer arrived, milliseconds since the VMM started.
    pub updated_ms: u64,
}

/// Size of one packed entry.
const ENTRY_LEN: usize = 10;

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
        match tag {
            0 => s.swap_in = value,
            1 => s.swap_out = value,
            2 => s.major_faults = value,
            3 => s.minor_faults = value,
            4 => s.free_memory = value,
            5 => s.total_memory = value,
            6 => s.available_memory = value,
            7 => s.disk_caches = value,
            _ => s.unknown_tags += 1,
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
        buf.extend_from_slice(&[1, 2, 3]); // partial entry
        let s = parse(&buf, 7);
        assert_eq!(s.total_memory, Some(256 << 20));
        assert_eq!(s.free_memory, Some(100 << 20));
        assert_eq!(s.available_memory, Some(120 << 20));
        assert_eq!(s.swap_in, None);
        assert_eq!(s.unknown_tags, 1);
        assert_eq!(s.updated_ms, 7);
    }
}
