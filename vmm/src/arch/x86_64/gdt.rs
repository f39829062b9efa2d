//! The flat GDT and identity-mapped page tables of the 64-bit boot
//! protocol, and the segment registers that go with them.

use kvm_bindings::kvm_segment;

/// Access byte + flags of a 64-bit code segment (present, ring 0, L=1, G=1).
pub const CODE64_FLAGS: u16 = 0xa09b;
/// Access byte + flags of a writable data segment (present, ring 0, D=1, G=1).
pub const DATA_FLAGS: u16 = 0xc093;
/// Access byte + flags of a 64-bit busy TSS.
pub const TSS_FLAGS: u16 = 0x808b;

/// The boot GDT: null, code, data, TSS.
pub fn boot_gdt() -> [u64; 4] {
    [
        0,
        descriptor(CODE64_FLAGS, 0, 0xfffff),
        descriptor(DATA_FLAGS, 0, 0xfffff),
        descriptor(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// Encodes a segment descriptor. `flags` holds the access byte in bits
/// 0..8 and the G/DB/L/AVL nibble in bits 12..16.
pub fn descriptor(flags: u16, base: u32, limit: u32) -> u64 {
    let base = u64::from(base);
    let limit = u64::from(limit);
    let flags = u64::from(flags);
    (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | ((flags & 0xff) << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((flags >> 12) & 0xf) << 52)
        | (((base >> 24) & 0xff) << 56)
}

/// Decodes GDT entry `index` into the form KVM takes.
pub fn segment(entry: u64, index: u16) -> kvm_segment {
    let access = (entry >> 40) & 0xff;
    let nibble = (entry >> 52) & 0xf;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "20 bits: 16 from the low word and 4 from bits 48-51"
    )]
    let raw_limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
    let granular = nibble & 0x8 != 0;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: if granular {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: (access & 0xf) as u8,
        s: ((access >> 4) & 1) as u8,
        dpl: ((access >> 5) & 3) as u8,
        present: ((access >> 7) & 1) as u8,
        avl: (nibble & 1) as u8,
        l: ((nibble >> 1) & 1) as u8,
        db: ((nibble >> 2) & 1) as u8,
        g: u8::from(granular),
        unusable: u8::from((access >> 7) & 1 == 0),
        padding: 0,
    }
}

/// Page-table entries identity-mapping the first GiB with 2 MiB pages:
/// returns the single PML4 entry, the single PDPT entry, and 512 PD entries.
pub fn identity_map(pdpt_addr: u64, pd_addr: u64) -> (u64, u64, Vec<u64>) {
    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE: u64 = 0x80;
    let pds = (0..512u64)
        .map(|i| (i << 21) | HUGE | PRESENT_WRITABLE)
        .collect();
    (
        pdpt_addr | PRESENT_WRITABLE,
        pd_addr | PRESENT_WRITABLE,
        pds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_round_trips() {
        let s = segment(descriptor(CODE64_FLAGS, 0, 0xfffff), 1);
        assert_eq!(s.selector, 8);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!((s.l, s.db, s.g, s.present, s.s, s.dpl), (1, 0, 1, 1, 1, 0));
        assert_eq!(s.type_, 0xb);
        assert_eq!(s.unusable, 0);
    }

    #[test]
    fn base_and_limit_bits_land_where_the_cpu_expects() {
        let e = descriptor(0x0093, 0x1234_5678, 0xabcde);
        assert_eq!(e & 0xffff, 0xbcde);
        assert_eq!((e >> 16) & 0xff_ffff, 0x34_5678);
        assert_eq!((e >> 56) & 0xff, 0x12);
        let s = segment(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde, "byte granular");
        assert_eq!(s.g, 0);
    }

    #[test]
    fn identity_map_covers_one_gib() {
        let (pml4, pdpt, pd) = identity_map(0xa000, 0xb000);
        assert_eq!(pml4, 0xa003);
        assert_eq!(pdpt, 0xb003);
        assert_eq!(pd.len(), 512);
        assert_eq!(pd[511] & !0xfff, 511 << 21);
    }
}
