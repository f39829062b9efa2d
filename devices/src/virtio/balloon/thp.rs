//! Balloon accounting per 2 MiB host block, and the `madvise` calls it
//! implies (pure logic: no system calls).
//!
//! Guest RAM is advised `MADV_HUGEPAGE`, so the host backs it with 2 MiB
//! transparent huge pages. Discarding 4 KiB of a huge page only splits its
//! PMD mapping, and khugepaged (with the default `max_ptes_none` of 511)
//! later collapses the block again, refilling the holes: scattered balloon
//! pages then stay resident. So, per 2 MiB-aligned block of a host mapping:
//!
//! * a block that becomes partly ballooned is advised `MADV_NOHUGEPAGE`
//!   first, so khugepaged leaves it alone, then its new pages are discarded;
//! * a block that becomes fully ballooned is discarded whole (which also
//!   frees a huge page that was collapsed before memtide saw the block) and
//!   advised `MADV_HUGEPAGE` again, so its mapping merges back with its
//!   neighbours (fewer VMAs; an empty block is never collapsed);
//! * on deflate, a full block that becomes partly ballooned is advised
//!   `MADV_NOHUGEPAGE`, a partly ballooned block that becomes empty
//!   `MADV_HUGEPAGE`;
//! * blocks cut by the edge of a mapping can never be huge: their pages are
//!   discarded and no advice is given.
//!
//! Only partly ballooned blocks carry `MADV_NOHUGEPAGE`, and neighbouring
//! blocks with the same advice are advised in one call, so the number of
//! mappings the kernel has to split stays small (`vm.max_map_count`).
//!
//! Positions are host page numbers (host virtual address / 4 KiB), so that
//! blocks are the host's huge pages whatever the guest layout, hot-added
//! regions included.

use std::collections::BTreeMap;

/// 4 KiB pages in a 2 MiB block.
pub const BLOCK_PAGES: u64 = 512;
const WORDS: usize = (BLOCK_PAGES / 64) as usize;

/// A run of host pages `[start, start + pages)`, in host page numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// First host page number.
    pub start: u64,
    /// Number of 4 KiB pages.
    pub pages: u64,
}

impl PageRun {
    /// One past the last page.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.pages)
    }

    fn intersect(&self, other: &PageRun) -> PageRun {
        let start = self.start.max(other.start);
        let end = self.end().min(other.end());
        PageRun {
            start,
            pages: end.saturating_sub(start),
        }
    }
}

/// What to ask the host kernel for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// `MADV_DONTNEED`: drop the pages.
    Discard,
    /// `MADV_NOHUGEPAGE`: keep khugepaged from refilling a partly ballooned block.
    NoHugePage,
    /// `MADV_HUGEPAGE`: the block is whole again (empty or fully ballooned).
    HugePage,
}

/// One `madvise` to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    /// Which advice.
    pub advice: Advice,
    /// Where.
    pub run: PageRun,
}

/// Errors from the tracker (each means a caller bug, not guest input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ThpError {
    /// A run that does not lie inside the mapping given with it.
    #[error("pages {run:?} are not inside mapping {mapping:?}")]
    OutsideMapping {
        /// The run.
        run: PageRun,
        /// The mapping.
        mapping: PageRun,
    },
}

/// The `madvise` calls for a batch, in the order to make them
/// (`MADV_NOHUGEPAGE`, then discards, then `MADV_HUGEPAGE`), with
/// neighbouring runs of the same advice merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    no_huge: Vec<PageRun>,
    discard: Vec<PageRun>,
    huge: Vec<PageRun>,
    /// Pages that changed state (newly ballooned, or newly given back).
    pub changed_pages: u64,
    /// 2 MiB blocks discarded whole.
    pub whole_blocks: u64,
}

fn push_merged(runs: &mut Vec<PageRun>, run: PageRun) {
    if run.pages == 0 {
        return;
    }
    match runs.last_mut() {
        Some(last) if last.end() == run.start => last.pages += run.pages,
        _ => runs.push(run),
    }
}

impl Plan {
    /// The calls, in order.
    pub fn actions(&self) -> impl Iterator<Item = Action> + '_ {
        let tag = |advice| move |&run| Action { advice, run };
        self.no_huge
            .iter()
            .map(tag(Advice::NoHugePage))
            .chain(self.discard.iter().map(tag(Advice::Discard)))
            .chain(self.huge.iter().map(tag(Advice::HugePage)))
    }

    /// Adds a discard of `run` on behalf of a caller that does not track
    /// it (free page reporting), counting the whole blocks it covers.
    pub fn discard_untracked(&mut self, run: PageRun) {
        let first = run.start.div_ceil(BLOCK_PAGES);
        let last = run.end() / BLOCK_PAGES;
        self.whole_blocks += last.saturating_sub(first);
        self.changed_pages += run.pages;
        push_merged(&mut self.discard, run);
    }
}

/// One block with at least one ballooned page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    /// Ballooned pages.
    count: u16,
    /// Which pages; `None` when every page of the block inside its mapping is.
    bits: Option<Box<[u64; WORDS]>>,
    /// Whether memtide advised `MADV_NOHUGEPAGE` on it.
    no_huge: bool,
}

impl Block {
    fn get(&self, i: u64) -> bool {
        match &self.bits {
            None => true,
            Some(b) => b[(i / 64) as usize] & (1 << (i % 64)) != 0,
        }
    }
}

/// Which host pages the guest has ballooned, per 2 MiB block. Memory is
/// proportional to the blocks with ballooned pages: a few bytes per full
/// block, 64 more per partly ballooned one.
#[derive(Debug, Default)]
pub struct BlockTracker {
    blocks: BTreeMap<u64, Block>,
    pages: u64,
}

impl BlockTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pages ballooned now.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Blocks partly ballooned now.
    pub fn partial_blocks(&self) -> u64 {
        self.blocks.values().filter(|b| b.bits.is_some()).count() as u64
    }

    /// Records that the guest ballooned `run` (inside host `mapping`) and
    /// adds the calls that return it to the host to `plan`.
    pub fn inflate(
        &mut self,
        run: PageRun,
        mapping: PageRun,
        plan: &mut Plan,
    ) -> Result<(), ThpError> {
        self.update(run, mapping, plan, true)
    }

    /// Records that the guest took `run` back, adding the advice that
    /// changes to `plan` (deflated pages need no call: the next guest
    /// access faults in a zero page).
    pub fn deflate(
        &mut self,
        run: PageRun,
        mapping: PageRun,
        plan: &mut Plan,
    ) -> Result<(), ThpError> {
        self.update(run, mapping, plan, false)
    }

    /// Forgets every ballooned page (device reset: the guest driver
    /// forgot them too) and returns the calls that give huge pages back to
    /// the blocks advised `MADV_NOHUGEPAGE`.
    pub fn reset(&mut self) -> Plan {
        let mut plan = Plan::default();
        for (&index, block) in &self.blocks {
            if block.no_huge {
                push_merged(
                    &mut plan.huge,
                    PageRun {
                        start: index * BLOCK_PAGES,
                        pages: BLOCK_PAGES,
                    },
                );
            }
        }
        plan.changed_pages = self.pages;
        self.blocks.clear();
        self.pages = 0;
        plan
    }

    fn update(
        &mut self,
        run: PageRun,
        mapping: PageRun,
        plan: &mut Plan,
        inflate: bool,
    ) -> Result<(), ThpError> {
        if run.pages == 0 {
            return Ok(());
        }
        if run.start < mapping.start || run.end() > mapping.end() || run.end() == u64::MAX {
            return Err(ThpError::OutsideMapping { run, mapping });
        }
        let mut index = run.start / BLOCK_PAGES;
        while index * BLOCK_PAGES < run.end() {
            let block = PageRun {
                start: index * BLOCK_PAGES,
                pages: BLOCK_PAGES,
            };
            let part = run.intersect(&block);
            let in_map = mapping.intersect(&block);
            if inflate {
                self.inflate_block(index, part, in_map, plan);
            } else {
                self.deflate_block(index, part, in_map, plan);
            }
            index += 1;
        }
        Ok(())
    }

    /// `part`: the pages of block `index` in the request; `in_map`: the
    /// pages of the block inside the mapping (512 unless at its edge).
    fn inflate_block(&mut self, index: u64, part: PageRun, in_map: PageRun, plan: &mut Plan) {
        let base = index * BLOCK_PAGES;
        let cap = block_count(in_map);
        let huge_capable = in_map.pages == BLOCK_PAGES;
        let block = self.blocks.entry(index).or_insert_with(|| Block {
            count: 0,
            bits: Some(Box::new([0; WORDS])),
            no_huge: false,
        });
        let old = block.count;
        if let Some(bits) = &mut block.bits {
            for p in part.start..part.end() {
                let i = p - base;
                let (w, m) = ((i / 64) as usize, 1u64 << (i % 64));
                if bits[w] & m == 0 {
                    bits[w] |= m;
                    block.count += 1;
                }
            }
        }
        let added = u64::from(block.count - old);
        self.pages += added;
        plan.changed_pages += added;
        if block.count == cap {
            // Full: one discard for the whole block frees its huge page,
            // whatever happened to it before.
            if block.bits.take().is_some() {
                plan.whole_blocks += 1;
            }
            push_merged(&mut plan.discard, in_map);
            if block.no_huge {
                block.no_huge = false;
                push_merged(&mut plan.huge, in_map);
            }
            return;
        }
        if huge_capable && old == 0 && block.count > 0 {
            block.no_huge = true;
            push_merged(&mut plan.no_huge, in_map);
        }
        push_merged(&mut plan.discard, part);
    }

    fn deflate_block(&mut self, index: u64, part: PageRun, in_map: PageRun, plan: &mut Plan) {
        let base = index * BLOCK_PAGES;
        let huge_capable = in_map.pages == BLOCK_PAGES;
        let Some(block) = self.blocks.get_mut(&index) else {
            return;
        };
        let old = block.count;
        if block.bits.is_none() {
            let mut bits = Box::new([0u64; WORDS]);
            for p in in_map.start..in_map.end() {
                let i = p - base;
                bits[(i / 64) as usize] |= 1 << (i % 64);
            }
            block.bits = Some(bits);
        }
        if let Some(bits) = &mut block.bits {
            for p in part.start..part.end() {
                let i = p - base;
                let (w, m) = ((i / 64) as usize, 1u64 << (i % 64));
                if bits[w] & m != 0 {
                    bits[w] &= !m;
                    block.count -= 1;
                }
            }
        }
        let removed = u64::from(old - block.count);
        self.pages -= removed;
        plan.changed_pages += removed;
        if block.count == 0 {
            if block.no_huge {
                push_merged(&mut plan.huge, in_map);
            }
            self.blocks.remove(&index);
        } else if removed > 0 && huge_capable && !block.no_huge {
            // Was full (or, at worst, never advised): partly ballooned now.
            block.no_huge = true;
            push_merged(&mut plan.no_huge, in_map);
        } else if removed == 0 && old == block.count && block.count == block_count(in_map) {
            // Nothing deflated from a full block: keep it compact.
            block.bits = None;
        }
    }

    /// Whether host page `page` is ballooned (for tests and debugging).
    pub fn is_ballooned(&self, page: u64) -> bool {
        self.blocks
            .get(&(page / BLOCK_PAGES))
            .is_some_and(|b| b.get(page % BLOCK_PAGES))
    }
}

/// The page count of `in_map`, a block's part inside the mapping.
#[allow(
    clippy::cast_possible_truncation,
    reason = "`in_map` lies inside one block: at most BLOCK_PAGES (512) pages"
)]
fn block_count(in_map: PageRun) -> u16 {
    debug_assert!(in_map.pages <= BLOCK_PAGES);
    in_map.pages as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAP: PageRun = PageRun {
        start: 0,
        pages: 4 * BLOCK_PAGES,
    };

    fn run(start: u64, pages: u64) -> PageRun {
        PageRun { start, pages }
    }

    fn actions(plan: &Plan) -> Vec<(Advice, u64, u64)> {
        plan.actions()
            .map(|a| (a.advice, a.run.start, a.run.pages))
            .collect()
    }

    #[test]
    fn a_partly_ballooned_block_is_kept_from_khugepaged() {
        let mut t = BlockTracker::new();
        let mut plan = Plan::default();
        t.inflate(run(3, 2), MAP, &mut plan).expect("inflate");
        t.inflate(run(10, 1), MAP, &mut plan).expect("inflate");
        assert_eq!(
            actions(&plan),
            vec![
                (Advice::NoHugePage, 0, 512),
                (Advice::Discard, 3, 2),
                (Advice::Discard, 10, 1),
            ]
        );
        assert_eq!((plan.changed_pages, plan.whole_blocks), (3, 0));
        assert_eq!((t.pages(), t.partial_blocks()), (3, 1));
        // More pages of the same block: discards only.
        let mut plan = Plan::default();
        t.inflate(run(20, 5), MAP, &mut plan).expect("inflate");
        assert_eq!(actions(&plan), vec![(Advice::Discard, 20, 5)]);
    }

    #[test]
    fn a_block_that_fills_up_is_discarded_whole_and_huge_again() {
        let mut t = BlockTracker::new();
        let mut plan = Plan::default();
        t.inflate(run(0, 500), MAP, &mut plan).expect("inflate");
        let mut plan = Plan::default();
        t.inflate(run(500, 12), MAP, &mut plan).expect("inflate");
        assert_eq!(
            actions(&plan),
            vec![(Advice::Discard, 0, 512), (Advice::HugePage, 0, 512)]
        );
        assert_eq!(
            (plan.whole_blocks, t.partial_blocks(), t.pages()),
            (1, 0, 512)
        );
        // A block ballooned whole in one go needs no advice at all, and
        // neighbouring whole blocks go in one call.
        let mut plan = Plan::default();
        t.inflate(run(512, 1024), MAP, &mut plan).expect("inflate");
        assert_eq!(actions(&plan), vec![(Advice::Discard, 512, 1024)]);
        assert_eq!(plan.whole_blocks, 2);
    }

    #[test]
    fn deflate_restores_advice_and_counts() {
        let mut t = BlockTracker::new();
        let mut plan = Plan::default();
        t.inflate(run(0, 512), MAP, &mut plan).expect("inflate");
        t.inflate(run(512, 7), MAP, &mut plan).expect("inflate");
        // Full -> partial: no huge pages while partly ballooned.
        let mut plan = Plan::default();
        t.deflate(run(0, 1), MAP, &mut plan).expect("deflate");
        assert_eq!(actions(&plan), vec![(Advice::NoHugePage, 0, 512)]);
        assert!(!t.is_ballooned(0) && t.is_ballooned(1));
        // Partial -> empty: huge pages again. Pages never ballooned are ignored.
        let mut plan = Plan::default();
        t.deflate(run(512, 100), MAP, &mut plan).expect("deflate");
        assert_eq!(actions(&plan), vec![(Advice::HugePage, 512, 512)]);
        assert_eq!(plan.changed_pages, 7);
        assert_eq!(t.pages(), 511);
        // Deflating what was never inflated changes nothing.
        let mut plan = Plan::default();
        t.deflate(run(1500, 10), MAP, &mut plan).expect("deflate");
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn blocks_at_a_mapping_edge_get_no_advice() {
        // A mapping that starts and ends inside blocks.
        let map = run(500, 600);
        let mut t = BlockTracker::new();
        let mut plan = Plan::default();
        t.inflate(run(500, 5), map, &mut plan).expect("inflate");
        assert_eq!(actions(&plan), vec![(Advice::Discard, 500, 5)]);
        // The first block has 12 pages in the mapping: full after 7 more.
        let mut plan = Plan::default();
        t.inflate(run(505, 7), map, &mut plan).expect("inflate");
        assert_eq!(actions(&plan), vec![(Advice::Discard, 500, 12)]);
        assert_eq!(plan.whole_blocks, 1);
        let mut plan = Plan::default();
        t.deflate(run(500, 3), map, &mut plan).expect("deflate");
        assert_eq!(actions(&plan), vec![]);
        assert_eq!(
            t.inflate(run(1090, 20), map, &mut Plan::default()),
            Err(ThpError::OutsideMapping {
                run: run(1090, 20),
                mapping: map
            })
        );
    }

    #[test]
    fn reset_forgets_everything_and_gives_huge_pages_back() {
        let mut t = BlockTracker::new();
        let mut plan = Plan::default();
        t.inflate(run(0, 512), MAP, &mut plan).expect("inflate");
        t.inflate(run(512, 3), MAP, &mut plan).expect("inflate");
        t.inflate(run(1024, 3), MAP, &mut plan).expect("inflate");
        let plan = t.reset();
        // The full block is huge-page eligible already; the two partly
        // ballooned neighbours are advised in one call.
        assert_eq!(actions(&plan), vec![(Advice::HugePage, 512, 1024)]);
        assert_eq!((t.pages(), t.partial_blocks()), (0, 0));
        assert!(!t.is_ballooned(0));
    }

    #[test]
    fn reported_free_blocks_count_whole_blocks() {
        let mut plan = Plan::default();
        plan.discard_untracked(run(512, 512));
        plan.discard_untracked(run(1024, 600));
        assert_eq!(actions(&plan), vec![(Advice::Discard, 512, 1112)]);
        assert_eq!(plan.whole_blocks, 2);
    }

    /// Page `p` as an index into the models.
    fn idx(p: u64) -> usize {
        usize::try_from(p).expect("page index")
    }

    /// Applies a plan to a model of the host: which pages hold memory and
    /// which blocks are advised `MADV_NOHUGEPAGE`.
    fn apply(plan: &Plan, no_huge: &mut [bool], resident: &mut [bool]) {
        for a in plan.actions() {
            for p in a.run.start..a.run.end() {
                match a.advice {
                    Advice::Discard => resident[idx(p)] = false,
                    Advice::NoHugePage => no_huge[(p / BLOCK_PAGES) as usize] = true,
                    Advice::HugePage => no_huge[(p / BLOCK_PAGES) as usize] = false,
                }
            }
        }
    }

    proptest! {
        #[test]
        fn tracker_matches_a_page_model(
            ops in proptest::collection::vec((any::<bool>(), 0u64..2048, 1u64..700), 1..40),
            reset_at in 0usize..60,
        ) {
            let mut t = BlockTracker::new();
            let mut model = vec![false; 2048];
            let mut resident = vec![true; 2048];
            let mut no_huge = vec![false; 4];
            for (i, (inflate, start, pages)) in ops.into_iter().enumerate() {
                if i == reset_at {
                    let plan = t.reset();
                    apply(&plan, &mut no_huge, &mut resident);
                    model.iter_mut().for_each(|m| *m = false);
                }
                let r = run(start, pages.min(2048 - start));
                let mut plan = Plan::default();
                if inflate {
                    t.inflate(r, MAP, &mut plan).expect("inflate");
                } else {
                    t.deflate(r, MAP, &mut plan).expect("deflate");
                }
                apply(&plan, &mut no_huge, &mut resident);
                for p in r.start..r.end() {
                    if inflate {
                        model[idx(p)] = true;
                    } else {
                        // The guest touches pages it takes back.
                        model[idx(p)] = false;
                        resident[idx(p)] = true;
                    }
                }
                // Every ballooned page is discarded; the counts agree.
                for p in 0..2048 {
                    prop_assert_eq!(t.is_ballooned(p), model[idx(p)]);
                    if model[idx(p)] {
                        prop_assert!(!resident[idx(p)], "page {} still resident", p);
                    }
                }
                prop_assert_eq!(t.pages(), model.iter().filter(|m| **m).count() as u64);
                // Exactly the partly ballooned blocks are kept from khugepaged.
                for b in 0..4usize {
                    let n = model[b * 512..(b + 1) * 512].iter().filter(|m| **m).count();
                    prop_assert_eq!(no_huge[b], n > 0 && n < 512, "block {} with {} pages", b, n);
                }
            }
        }
    }
}
