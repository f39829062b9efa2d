//! A guest page-table walk with the permission checks of a data access
//! (pure logic over a reader of guest-physical words).
//!
//! memtide stores into guest memory on the guest's behalf when it emulates
//! an instruction (`XSAVE` into a signal frame on a user stack, see
//! [`super::xstate`]). `KVM_TRANSLATE` gives the address but says nothing
//! of write permission, and a store to a write-protected page (copy on
//! write after `fork`) must fault for the guest kernel to handle, not
//! change a page another process shares. 4-level paging only (the guest
//! kernel is built without 5-level paging). Accessed and dirty bits are not
//! set.

/// Page-table entry: present.
const P: u64 = 1 << 0;
/// Page-table entry: writable.
const RW: u64 = 1 << 1;
/// Page-table entry: user-accessible.
const US: u64 = 1 << 2;
/// Page-table entry: maps a large page (1 GiB at level 3, 2 MiB at level 2).
const PS: u64 = 1 << 7;
/// The physical-address bits of an entry.
const ADDR: u64 = 0x000f_ffff_ffff_f000;

/// #PF error code: the page was present (a protection violation).
pub const PF_PRESENT: u32 = 1 << 0;
/// #PF error code: the access was a write.
pub const PF_WRITE: u32 = 1 << 1;
/// #PF error code: the access came from user mode.
pub const PF_USER: u32 = 1 << 2;

/// The access being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// A store (else a load).
    pub write: bool,
    /// From CPL 3.
    pub user: bool,
    /// CR0.WP: supervisor stores honour read-only pages.
    pub write_protect: bool,
}

/// Why the access cannot go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    /// The CPU would raise #PF with this error code (CR2 = the address).
    #[error("page fault, error code {error_code:#x}")]
    PageFault {
        /// The #PF error code.
        error_code: u32,
    },
    /// The address is not canonical: the CPU would raise #GP.
    #[error("non-canonical address")]
    NonCanonical,
    /// A page-table entry lies outside guest RAM.
    #[error("page table entry at {gpa:#x} is not in guest RAM")]
    TableNotInRam {
        /// Its guest-physical address.
        gpa: u64,
    },
}

/// Translates `va` under the 4-level page tables at `cr3`, checking
/// `access`; `read` returns the 64-bit word at a guest-physical address.
pub fn translate(
    cr3: u64,
    va: u64,
    access: Access,
    read: impl Fn(u64) -> Option<u64>,
) -> Result<u64, WalkError> {
    // Bits 63:47 must all equal bit 47.
    let top = va >> 47;
    if top != 0 && top != 0x1_ffff {
        return Err(WalkError::NonCanonical);
    }
    let mut table = cr3 & ADDR;
    let mut writable = true;
    let mut user = true;
    for level in (1..=4u32).rev() {
        let shift = 12 + 9 * (level - 1);
        let gpa = table + ((va >> shift) & 0x1ff) * 8;
        let entry = read(gpa).ok_or(WalkError::TableNotInRam { gpa })?;
        if entry & P == 0 {
            return Err(fault(access, false));
        }
        writable &= entry & RW != 0;
        user &= entry & US != 0;
        let leaf = level == 1 || (matches!(level, 2 | 3) && entry & PS != 0);
        if leaf {
            if access.user && !user {
                return Err(fault(access, true));
            }
            if access.write && !writable && (access.user || access.write_protect) {
                return Err(fault(access, true));
            }
            let page_mask = (1u64 << shift) - 1;
            return Ok((entry & ADDR & !page_mask) | (va & page_mask));
        }
        table = entry & ADDR;
    }
    unreachable!("level 1 is always a leaf")
}

fn fault(access: Access, present: bool) -> WalkError {
    let mut error_code = 0;
    if present {
        error_code |= PF_PRESENT;
    }
    if access.write {
        error_code |= PF_WRITE;
    }
    if access.user {
        error_code |= PF_USER;
    }
    WalkError::PageFault { error_code }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const KERNEL_WRITE: Access = Access {
        write: true,
        user: false,
        write_protect: true,
    };
    const KERNEL_READ: Access = Access {
        write: false,
        ..KERNEL_WRITE
    };

    /// Tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD), 0x4000 (PT).
    fn tables(pte: u64, pde_extra: u64) -> HashMap<u64, u64> {
        let mut m = HashMap::new();
        let va: u64 = 0x7fff_1234_5000;
        let i4 = (va >> 39) & 0x1ff;
        let i3 = (va >> 30) & 0x1ff;
        let i2 = (va >> 21) & 0x1ff;
        let i1 = (va >> 12) & 0x1ff;
        m.insert(0x1000 + i4 * 8, 0x2000 | P | RW | US);
        m.insert(0x2000 + i3 * 8, 0x3000 | P | RW | US);
        m.insert(0x3000 + i2 * 8, 0x4000 | P | RW | US | pde_extra);
        m.insert(0x4000 + i1 * 8, pte);
        m
    }

    fn walk(m: &HashMap<u64, u64>, va: u64, access: Access) -> Result<u64, WalkError> {
        translate(0x1000, va, access, |gpa| m.get(&gpa).copied())
    }

    #[test]
    fn a_writable_page_translates() {
        let m = tables(0x9_9000 | P | RW | US, 0);
        assert_eq!(walk(&m, 0x7fff_1234_5678, KERNEL_WRITE), Ok(0x9_9678));
        let user = Access {
            user: true,
            ..KERNEL_WRITE
        };
        assert_eq!(walk(&m, 0x7fff_1234_5678, user), Ok(0x9_9678));
    }

    #[test]
    fn a_read_only_page_faults_on_write_while_wp_is_set() {
        // Copy on write after fork: present, not writable.
        let m = tables(0x9_9000 | P | US, 0);
        assert_eq!(walk(&m, 0x7fff_1234_5000, KERNEL_READ), Ok(0x9_9000));
        assert_eq!(
            walk(&m, 0x7fff_1234_5000, KERNEL_WRITE),
            Err(WalkError::PageFault {
                error_code: PF_PRESENT | PF_WRITE
            })
        );
        let no_wp = Access {
            write_protect: false,
            ..KERNEL_WRITE
        };
        assert_eq!(walk(&m, 0x7fff_1234_5000, no_wp), Ok(0x9_9000));
    }

    #[test]
    fn a_missing_page_faults_with_the_access_in_the_code() {
        let m = tables(0, 0);
        assert_eq!(
            walk(&m, 0x7fff_1234_5000, KERNEL_WRITE),
            Err(WalkError::PageFault {
                error_code: PF_WRITE
            })
        );
        assert_eq!(
            walk(&m, 0x7fff_1234_5000, KERNEL_READ),
            Err(WalkError::PageFault { error_code: 0 })
        );
        // Nothing mapped at all in another PML4 slot.
        assert_eq!(
            walk(&m, 0x1000, KERNEL_READ),
            Err(WalkError::TableNotInRam { gpa: 0x1000 })
        );
    }

    #[test]
    fn user_access_needs_user_pages() {
        let m = tables(0x9_9000 | P | RW, 0);
        let user_read = Access {
            write: false,
            user: true,
            write_protect: true,
        };
        assert_eq!(
            walk(&m, 0x7fff_1234_5000, user_read),
            Err(WalkError::PageFault {
                error_code: PF_PRESENT | PF_USER
            })
        );
        assert_eq!(walk(&m, 0x7fff_1234_5000, KERNEL_READ), Ok(0x9_9000));
    }

    #[test]
    fn large_pages_end_the_walk() {
        // A 2 MiB page at 0x4000_0000.
        let m = tables(0, 0);
        let mut m2 = m.clone();
        let va: u64 = 0x7fff_1234_5678;
        let i2 = (va >> 21) & 0x1ff;
        m2.insert(0x3000 + i2 * 8, 0x4000_0000 | P | RW | PS);
        assert_eq!(
            walk(&m2, va, KERNEL_WRITE),
            Ok(0x4000_0000 | (va & 0x1f_ffff))
        );
        // A 1 GiB page in the kernel half.
        let kva: u64 = 0xffff_ffff_8123_4567;
        let mut m3 = HashMap::new();
        m3.insert(0x1000 + ((kva >> 39) & 0x1ff) * 8, 0x2000 | P | RW);
        m3.insert(
            0x2000 + ((kva >> 30) & 0x1ff) * 8,
            0x8000_0000 | P | RW | PS,
        );
        assert_eq!(
            translate(0x1000, kva, KERNEL_WRITE, |g| m3.get(&g).copied()),
            Ok(0x8000_0000 | (kva & 0x3fff_ffff))
        );
    }

    #[test]
    fn non_canonical_addresses_are_refused() {
        let m = tables(0x9_9000 | P | RW | US, 0);
        assert_eq!(
            walk(&m, 0x0000_8000_0000_0000, KERNEL_READ),
            Err(WalkError::NonCanonical)
        );
        assert_eq!(
            walk(&m, 0xffff_7fff_ffff_f000, KERNEL_READ),
            Err(WalkError::NonCanonical)
        );
    }
}
