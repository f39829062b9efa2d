//! Committed anonymous memory for `memtide-hog`: private writable mappings
//! that Committed_AS counts from the moment they are made, grown by new
//! mappings of at most [`MAX_MAPPING_MIB`] and shrunk by unmapping the
//! newest.
//!
//! Few system calls per resize: on the nested host, where memtide
//! completes the guest's system calls, each costs tens of milliseconds,
//! and the 1 MiB heap allocations this replaces made a 200 MiB phase take
//! more than 10 s to commit, so the guest's reported commit lagged the
//! phase it was meant to show (ci21's demo). A growth is split into
//! mappings of at most [`MAX_MAPPING_MIB`]: Linux's default overcommit
//! heuristic refuses one mapping larger than the guest's RAM, and a
//! workload must be able to commit more than RAM (that is how it asks
//! the balancer for memory).

use crate::sys::SysError;

/// Bytes per MiB.
pub const MIB: usize = 1 << 20;
/// The largest mapping a growth makes, MiB: below any guest's RAM.
pub const MAX_MAPPING_MIB: usize = 32;

/// One anonymous private mapping, whole MiB long.
#[derive(Debug)]
struct Mapping {
    /// Its first byte.
    addr: *mut u8,
    /// Its length, MiB.
    mib: usize,
}

impl Mapping {
    /// Maps `mib` MiB (more than 0), readable and writable; Committed_AS
    /// rises by that much now, while no page is resident yet.
    fn new(mib: usize) -> Result<Self, SysError> {
        let len = mib.checked_mul(MIB).ok_or_else(|| too_big(mib))?;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // no existing memory is touched.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(os_error(format!("mmap {mib} MiB")));
        }
        Ok(Mapping {
            addr: addr.cast(),
            mib,
        })
    }

    /// Unmaps all but the first `keep` MiB (`keep` below the length).
    fn shrink(&mut self, keep: usize) -> Result<(), SysError> {
        let drop_mib = self.mib - keep;
        // SAFETY: the range is the tail of this mapping, which this value
        // owns; nothing refers into it (the bytes are reached only through
        // `bytes`, whose borrows end before a resize).
        let rc = unsafe { libc::munmap(self.addr.add(keep * MIB).cast(), drop_mib * MIB) };
        if rc != 0 {
            return Err(os_error(format!("munmap {drop_mib} MiB")));
        }
        self.mib = keep;
        Ok(())
    }

    /// The mapping's bytes.
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `addr` starts a readable and writable mapping of
        // `mib` MiB that this value owns alone, for the borrow's length.
        unsafe { std::slice::from_raw_parts_mut(self.addr, self.mib * MIB) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the whole mapping, owned by this value, which goes now.
        unsafe { libc::munmap(self.addr.cast(), self.mib * MIB) };
    }
}

/// Committed memory held as mappings, oldest first.
#[derive(Debug, Default)]
pub struct Committed(Vec<Mapping>);

impl Committed {
    /// MiB held now.
    pub fn mib(&self) -> usize {
        self.0.iter().map(|m| m.mib).sum()
    }

    /// Holds exactly `mib` MiB: new mappings for the difference when
    /// growing, the newest mappings unmapped (the last one in part) when
    /// shrinking. Returns the mappings added, not yet touched.
    pub fn resize(&mut self, mib: usize) -> Result<Vec<&mut [u8]>, SysError> {
        let now = self.mib();
        if mib > now {
            mib.checked_mul(MIB).ok_or_else(|| too_big(mib))?;
            let first_new = self.0.len();
            let mut missing = mib - now;
            while missing > 0 {
                let step = missing.min(MAX_MAPPING_MIB);
                match Mapping::new(step) {
                    Ok(m) => self.0.push(m),
                    Err(e) => {
                        // All or nothing: the mappings of this growth go.
                        self.0.truncate(first_new);
                        return Err(e);
                    }
                }
                missing -= step;
            }
            return Ok(self.0[first_new..].iter_mut().map(Mapping::bytes).collect());
        }
        let mut excess = now - mib;
        while excess > 0 {
            let Some(last) = self.0.last_mut() else { break };
            if last.mib <= excess {
                excess -= last.mib;
                self.0.pop();
            } else {
                let keep = last.mib - excess;
                last.shrink(keep)?;
                excess = 0;
            }
        }
        Ok(Vec::new())
    }
}

fn too_big(mib: usize) -> SysError {
    SysError {
        what: format!("{mib} MiB"),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "too large"),
    }
}

fn os_error(what: String) -> SysError {
    SysError {
        what,
        source: std::io::Error::last_os_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's Committed_AS share is not observable alone, so the
    /// test checks the mappings: sizes, tails unmapped, contents kept.
    #[test]
    fn grows_by_bounded_mappings_and_shrinks_from_the_newest() {
        let mut c = Committed::default();
        let added = c.resize(3).expect("map 3 MiB");
        assert_eq!(added.iter().map(|m| m.len()).sum::<usize>(), 3 * MIB);
        added.into_iter().for_each(|m| m[0] = 7);
        let more = c.resize(MAX_MAPPING_MIB + 5).expect("map more");
        assert_eq!(more.len(), 2, "split at {MAX_MAPPING_MIB} MiB");
        assert_eq!(more[0].len(), MAX_MAPPING_MIB * MIB);
        assert_eq!((c.mib(), c.0.len()), (MAX_MAPPING_MIB + 5, 3));
        // Shrinking to 2 drops the newest mappings and the first's tail.
        assert!(c.resize(2).expect("unmap").is_empty());
        assert_eq!((c.mib(), c.0.len()), (2, 1));
        assert_eq!(c.0[0].bytes()[0], 7, "the kept memory keeps its bytes");
        assert!(c.resize(2).expect("no change").is_empty());
        assert!(c.resize(0).expect("unmap all").is_empty());
        assert_eq!((c.mib(), c.0.len()), (0, 0));
    }

    #[test]
    fn an_impossible_size_is_an_error_not_an_abort() {
        let mut c = Committed::default();
        assert!(c.resize(usize::MAX).is_err());
        assert_eq!(c.mib(), 0);
    }
}
