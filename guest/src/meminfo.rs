//! Parsing `/proc/meminfo` into the fields the memory agent reports.
//!
//! Each line is `Name:  <value> kB`. Lines that do not have that shape
//! (no colon, a value that is not a number, another unit or none, as in
//! `HugePages_Total:`) are ignored, and so are names the agent does not
//! use. `MemTotal`, `MemFree`, `MemAvailable` and `Committed_AS` are
//! required (every kernel since 3.14 has them); `CommitLimit`, `SwapTotal`
//! and `SwapFree` count as 0 when absent. A name that appears twice keeps
//! its first value.

/// Where the kernel publishes memory statistics.
pub const PATH: &str = "/proc/meminfo";

/// Why `/proc/meminfo` gave no usable statistics.
#[derive(Debug, thiserror::Error)]
pub enum MeminfoError {
    /// The file could not be read (proc not mounted?).
    #[error("{PATH}: {0}")]
    Read(#[from] std::io::Error),
    /// A required field is missing or malformed.
    #[error("{PATH}: no valid {0} line")]
    Missing(&'static str),
}

/// The `/proc/meminfo` fields the agent reports, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal` (required).
    pub mem_total_kib: u64,
    /// `MemFree` (required).
    pub mem_free_kib: u64,
    /// `MemAvailable` (required).
    pub mem_available_kib: u64,
    /// `Committed_AS` (required).
    pub committed_as_kib: u64,
    /// `CommitLimit` (0 when absent).
    pub commit_limit_kib: u64,
    /// `SwapTotal` (0 when absent).
    pub swap_total_kib: u64,
    /// `SwapFree` (0 when absent).
    pub swap_free_kib: u64,
}

/// One `Name: <value> kB` line as (name, value); `None` for any other shape.
fn kib_line(line: &str) -> Option<(&str, u64)> {
    let (name, rest) = line.split_once(':')?;
    let mut words = rest.split_whitespace();
    let value = words.next()?.parse().ok()?;
    match (words.next(), words.next()) {
        (Some("kB"), None) => Some((name.trim(), value)),
        _ => None,
    }
}

/// Parses the text of `/proc/meminfo`.
pub fn parse(text: &str) -> Result<MemInfo, MeminfoError> {
    let mut total = None;
    let mut free = None;
    let mut available = None;
    let mut committed = None;
    let mut limit = None;
    let mut swap_total = None;
    let mut swap_free = None;
    for (name, value) in text.lines().filter_map(kib_line) {
        let slot = match name {
            "MemTotal" => &mut total,
            "MemFree" => &mut free,
            "MemAvailable" => &mut available,
            "Committed_AS" => &mut committed,
            "CommitLimit" => &mut limit,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    Ok(MemInfo {
        mem_total_kib: total.ok_or(MeminfoError::Missing("MemTotal"))?,
        mem_free_kib: free.ok_or(MeminfoError::Missing("MemFree"))?,
        mem_available_kib: available.ok_or(MeminfoError::Missing("MemAvailable"))?,
        committed_as_kib: committed.ok_or(MeminfoError::Missing("Committed_AS"))?,
        commit_limit_kib: limit.unwrap_or(0),
        swap_total_kib: swap_total.unwrap_or(0),
        swap_free_kib: swap_free.unwrap_or(0),
    })
}

/// Reads and parses `/proc/meminfo`.
pub fn read() -> Result<MemInfo, MeminfoError> {
    parse(&std::fs::read_to_string(PATH)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/meminfo` as Linux 6.12 prints it for the memtide guest kernel
    /// config (no swap, THP, hugetlbfs or zswap, so those lines are
    /// absent): the line set and layout of 6.12's `fs/proc/meminfo.c`,
    /// with the numbers of a 256 MiB guest after boot.
    const GUEST_6_12: &str = "\
MemTotal:         214580 kB
MemFree:          176412 kB
MemAvailable:     183944 kB
Buffers:               0 kB
Cached:            14032 kB
SwapCached:            0 kB
Active:             3876 kB
Inactive:          12060 kB
Active(anon):       3876 kB
Inactive(anon):        0 kB
Active(file):          0 kB
Inactive(file):    12060 kB
Unevictable:       14032 kB
Mlocked:               0 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Dirty:                 0 kB
Writeback:             0 kB
AnonPages:          1904 kB
Mapped:             1540 kB
Shmem:             14032 kB
KReclaimable:       3120 kB
Slab:               9104 kB
SReclaimable:       3120 kB
SUnreclaim:         5984 kB
KernelStack:         688 kB
PageTables:          148 kB
SecPageTables:         0 kB
NFS_Unstable:          0 kB
Bounce:                0 kB
WritebackTmp:          0 kB
CommitLimit:      107288 kB
Committed_AS:       9428 kB
VmallocTotal:   34359738367 kB
VmallocUsed:        1236 kB
VmallocChunk:          0 kB
Percpu:               92 kB
DirectMap4k:        8064 kB
DirectMap2M:      245952 kB
DirectMap1G:           0 kB
";

    #[test]
    fn parses_a_6_12_guest() {
        let m = parse(GUEST_6_12).expect("valid meminfo");
        assert_eq!(
            m,
            MemInfo {
                mem_total_kib: 214_580,
                mem_free_kib: 176_412,
                mem_available_kib: 183_944,
                committed_as_kib: 9_428,
                commit_limit_kib: 107_288,
                swap_total_kib: 0,
                swap_free_kib: 0,
            }
        );
    }

    #[test]
    fn swap_and_unitless_lines() {
        let text = "MemTotal: 8000000 kB\nMemFree: 1000 kB\nMemAvailable: 2000 kB\n\
                    SwapTotal: 4194300 kB\nSwapFree: 4194000 kB\nCommitted_AS: 3000 kB\n\
                    HugePages_Total:       0\nHugepagesize:       2048 kB\n";
        let m = parse(text).expect("valid");
        assert_eq!((m.swap_total_kib, m.swap_free_kib), (4_194_300, 4_194_000));
        assert_eq!(m.commit_limit_kib, 0, "absent CommitLimit counts as 0");
    }

    #[test]
    fn bad_lines_are_ignored_and_the_first_value_wins() {
        let text = "garbage\nMemTotal: x kB\nMemTotal: 100 kB\nMemTotal: 200 kB\n\
                    MemFree: 5 MB\nMemFree: 50 kB extra\nMemFree: 60 kB\n\
                    MemAvailable: 70 kB\n: 1 kB\nCommitted_AS: 18446744073709551615 kB\n\
                    CommitLimit: 18446744073709551616 kB\n";
        let m = parse(text).expect("valid");
        assert_eq!(m.mem_total_kib, 100);
        assert_eq!(m.mem_free_kib, 60);
        assert_eq!(m.committed_as_kib, u64::MAX);
        assert_eq!(m.commit_limit_kib, 0, "an overflowing value is a bad line");
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["MemTotal", "MemFree", "MemAvailable", "Committed_AS"] {
            let text: String = GUEST_6_12
                .lines()
                .filter(|l| !l.starts_with(&format!("{field}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            match parse(&text) {
                Err(MeminfoError::Missing(f)) => assert_eq!(f, field),
                other => panic!("without {field}: {other:?}"),
            }
        }
        assert!(matches!(parse(""), Err(MeminfoError::Missing("MemTotal"))));
        assert_eq!(
            MeminfoError::Missing("MemTotal").to_string(),
            "/proc/meminfo: no valid MemTotal line"
        );
    }
}
