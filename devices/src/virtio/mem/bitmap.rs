//! Which device blocks are plugged: one bit per block, and the checks that
//! map a driver's (addr, nb_blocks) onto blocks of the device region.

use std::ops::Range;

use super::request::BlockState;

/// Why a range given by the driver is not a range of device blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// `nb_blocks` is zero.
    #[error("a request for zero blocks")]
    Empty,
    /// `addr` is not a multiple of the block size.
    #[error("address {0:#x} is not aligned to the block size")]
    Unaligned(u64),
    /// The range leaves the usable region.
    #[error("range {addr:#x} + {blocks} blocks is outside the usable region")]
    Outside {
        /// Start the driver gave.
        addr: u64,
        /// Blocks the driver asked for.
        blocks: u16,
    },
}

/// The plugged state of every block of a device region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockBitmap {
    base: u64,
    block_size: u64,
    blocks: usize,
    words: Vec<u64>,
    plugged: usize,
}

impl BlockBitmap {
    /// A region of `blocks` blocks of `block_size` bytes at guest-physical
    /// `base`, all unplugged.
    pub fn new(base: u64, block_size: u64, blocks: usize) -> Self {
        Self {
            base,
            block_size,
            blocks,
            words: vec![0; blocks.div_ceil(64)],
            plugged: 0,
        }
    }

    /// Number of blocks in the region.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Number of plugged blocks.
    pub fn plugged_blocks(&self) -> usize {
        self.plugged
    }

    /// Plugged bytes.
    pub fn plugged_bytes(&self) -> u64 {
        (self.plugged as u64).saturating_mul(self.block_size)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Guest-physical address of block `index`.
    pub fn block_addr(&self, index: usize) -> u64 {
        self.base + index as u64 * self.block_size
    }

    /// The blocks `addr .. addr + nb_blocks * block_size` cover, if that
    /// range is non-empty, block aligned and inside the first
    /// `usable_blocks` blocks.
    pub fn range(
        &self,
        addr: u64,
        nb_blocks: u16,
        usable_blocks: usize,
    ) -> Result<Range<usize>, RangeError> {
        if nb_blocks == 0 {
            return Err(RangeError::Empty);
        }
        let outside = RangeError::Outside {
            addr,
            blocks: nb_blocks,
        };
        let offset = addr.checked_sub(self.base).ok_or(outside)?;
        if offset % self.block_size != 0 {
            return Err(RangeError::Unaligned(addr));
        }
        let first = usize::try_from(offset / self.block_size).map_err(|_| outside)?;
        let end = first.checked_add(usize::from(nb_blocks)).ok_or(outside)?;
        if end > usable_blocks.min(self.blocks) {
            return Err(outside);
        }
        Ok(first..end)
    }

    fn get(&self, i: usize) -> bool {
        self.words[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, on: bool) {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let was = self.words[w] & bit != 0;
        if on && !was {
            self.words[w] |= bit;
            self.plugged += 1;
        } else if !on && was {
            self.words[w] &= !bit;
            self.plugged -= 1;
        }
    }

    /// The state of `range` (from [`Self::range`]).
    pub fn state(&self, range: Range<usize>) -> BlockState {
        let plugged = range.clone().filter(|&i| self.get(i)).count();
        match plugged {
            0 => BlockState::Unplugged,
            n if n == range.len() => BlockState::Plugged,
            _ => BlockState::Mixed,
        }
    }

    /// Marks `range` (from [`Self::range`]) plugged.
    pub fn plug(&mut self, range: Range<usize>) {
        for i in range {
            self.set(i, true);
        }
    }

    /// Marks `range` (from [`Self::range`]) unplugged.
    pub fn unplug(&mut self, range: Range<usize>) {
        for i in range {
            self.set(i, false);
        }
    }

    /// Runs of consecutive plugged blocks, lowest first.
    pub fn plugged_runs(&self) -> Vec<Range<usize>> {
        let mut runs = Vec::new();
        let mut start = None;
        for i in 0..self.blocks {
            match (self.get(i), start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push(s..i);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            runs.push(s..self.blocks);
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x1_4000_0000;
    const BS: u64 = 2 << 20;

    #[test]
    fn ranges_must_be_non_empty_aligned_and_usable() {
        let b = BlockBitmap::new(BASE, BS, 100);
        assert_eq!(b.range(BASE, 1, 100), Ok(0..1));
        assert_eq!(b.range(BASE + 98 * BS, 2, 100), Ok(98..100));
        assert_eq!(b.range(BASE, 0, 100), Err(RangeError::Empty));
        assert_eq!(
            b.range(BASE + 4096, 1, 100),
            Err(RangeError::Unaligned(BASE + 4096))
        );
        for (addr, n, usable) in [
            (BASE - BS, 1, 100),
            (0, 1, 100),
            (BASE + 99 * BS, 2, 100),
            (BASE + 10 * BS, 1, 10),
            (BASE, 101, 200),
            (u64::MAX - BS + 1, u16::MAX, 100),
        ] {
            assert!(
                matches!(b.range(addr, n, usable), Err(RangeError::Outside { .. })),
                "{addr:#x} + {n} (usable {usable})"
            );
        }
    }

    #[test]
    fn plug_unplug_and_state_keep_the_count() {
        let mut b = BlockBitmap::new(BASE, BS, 130);
        assert_eq!(b.state(0..130), BlockState::Unplugged);
        b.plug(60..70);
        b.plug(65..75); // overlapping plugs count each block once
        assert_eq!(b.plugged_blocks(), 15);
        assert_eq!(b.plugged_bytes(), 15 * BS);
        assert_eq!(b.state(60..75), BlockState::Plugged);
        assert_eq!(b.state(59..61), BlockState::Mixed);
        assert_eq!(b.state(75..130), BlockState::Unplugged);
        b.plug(128..130);
        assert_eq!(b.plugged_runs(), vec![60..75, 128..130]);
        b.unplug(64..66);
        b.unplug(0..10); // unplugging unplugged blocks changes nothing
        assert_eq!(b.plugged_blocks(), 15);
        assert_eq!(b.plugged_runs(), vec![60..64, 66..75, 128..130]);
        b.unplug(0..130);
        assert_eq!(b.plugged_blocks(), 0);
        assert!(b.plugged_runs().is_empty());
        assert_eq!(b.block_addr(3), BASE + 3 * BS);
    }
}
