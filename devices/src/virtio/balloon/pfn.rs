//! Turning the page frame numbers a guest hands the balloon into a few
//! host ranges.
//!
//! Linux sends at most 256 PFNs (1 MiB) per inflate request, usually in
//! ascending runs. Sorting, dropping duplicates and merging neighbours lets
//! the host return each run with one `madvise` instead of one per page.

/// A run of contiguous guest pages: `[start_pfn, start_pfn + pages)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfnRange {
    /// First page frame number.
    pub start_pfn: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
}

/// What [`compact`] made of a batch of PFNs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Merged, sorted, non-overlapping ranges of valid PFNs.
    pub ranges: Vec<PfnRange>,
    /// PFNs outside guest RAM (ignored).
    pub out_of_range: u64,
    /// PFNs repeated within the batch (counted once).
    pub duplicates: u64,
}

impl Compacted {
    /// Valid pages in all ranges.
    pub fn pages(&self) -> u64 {
        self.ranges.iter().map(|r| r.pages).sum()
    }
}

/// Validates `pfns` with `is_ram`, then sorts, dedupes and merges them.
pub fn compact(pfns: &[u32], is_ram: impl Fn(u64) -> bool) -> Compacted {
    let mut out = Compacted::default();
    let mut valid: Vec<u64> = Vec::with_capacity(pfns.len());
    for &pfn in pfns {
        let pfn = u64::from(pfn);
        if is_ram(pfn) {
            valid.push(pfn);
        } else {
            out.out_of_range += 1;
        }
    }
    valid.sort_unstable();
    let before = valid.len();
    valid.dedup();
    out.duplicates = (before - valid.len()) as u64;
    for pfn in valid {
        match out.ranges.last_mut() {
            Some(last) if last.start_pfn + last.pages == pfn => last.pages += 1,
            _ => out.ranges.push(PfnRange {
                start_pfn: pfn,
                pages: 1,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_runs_and_counts_rejects() {
        let c = compact(&[5, 3, 4, 4, 10, 1000, 11, 7], |p| p < 100);
        assert_eq!(
            c.ranges,
            vec![
                PfnRange {
                    start_pfn: 3,
                    pages: 3
                },
                PfnRange {
                    start_pfn: 7,
                    pages: 1
                },
                PfnRange {
                    start_pfn: 10,
                    pages: 2
                },
            ]
        );
        assert_eq!((c.out_of_range, c.duplicates, c.pages()), (1, 1, 6));
    }

    #[test]
    fn empty_and_all_invalid_batches() {
        assert_eq!(compact(&[], |_| true), Compacted::default());
        let c = compact(&[1, 2, 3], |_| false);
        assert!(c.ranges.is_empty());
        assert_eq!(c.out_of_range, 3);
    }

    proptest! {
        #[test]
        fn ranges_cover_exactly_the_valid_distinct_pfns(
            pfns in proptest::collection::vec(0u32..512, 0..300),
            limit in 0u64..600,
        ) {
            let c = compact(&pfns, |p| p < limit);
            let mut expected: Vec<u64> = pfns.iter().map(|&p| u64::from(p)).filter(|&p| p < limit).collect();
            expected.sort_unstable();
            expected.dedup();
            let covered: Vec<u64> = c.ranges.iter().flat_map(|r| r.start_pfn..r.start_pfn + r.pages).collect();
            prop_assert_eq!(&covered, &expected);
            // Ranges are sorted, non-empty and never touch (else they would have merged).
            for w in c.ranges.windows(2) {
                prop_assert!(w[0].start_pfn + w[0].pages < w[1].start_pfn);
            }
            prop_assert!(c.ranges.iter().all(|r| r.pages > 0));
            let valid_total = pfns.iter().filter(|&&p| u64::from(p) < limit).count() as u64;
            prop_assert_eq!(c.pages() + c.duplicates, valid_total);
            prop_assert_eq!(c.out_of_range + valid_total, pfns.len() as u64);
        }
    }
}
