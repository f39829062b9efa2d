//! The Intel MultiProcessor Specification 1.4 table, which tells the guest
//! how many CPUs it has and how the ISA interrupts reach the I/O APIC.
//!
//! The table sits in the EBDA (`layout::EBDA_START`), which the e820 map
//! marks reserved. Linux finds it by scanning for the `_MP_` signature.

use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::layout;
use vm_memory::GuestMemoryMmap;

/// Most vCPUs the table (and the 1 KiB EBDA) can describe.
pub const MAX_VCPUS: u8 = 32;

const FLOATING_POINTER_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// Family 6 signature and the FPU + APIC feature bits.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const ISA_BUS_ID: u8 = 0;

/// Errors from writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MpTableError {
    /// The vCPU count is zero or above [`MAX_VCPUS`].
    #[error("{0} vCPUs cannot be described by the MP table (1..={MAX_VCPUS})")]
    VcpuCount(u8),
    /// The table would not lie below 4 GiB, where its pointer can reach.
    #[error("the MP table at {0:#x} would not lie below 4 GiB")]
    Address(u64),
    /// Writing into guest memory failed.
    #[error("cannot write the MP table: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

/// Builds the MP floating pointer and configuration table for `vcpus` CPUs,
/// to be placed at guest address `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MpTableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MpTableError::VcpuCount(vcpus));
    }
    let ioapic_id = vcpus + 1;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..vcpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&layout::IOAPIC_START_U32.to_le_bytes());
    count += 1;
    for irq in 0..=layout::IRQ_MAX {
        // Conforming polarity and trigger: edge, active high for ISA.
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0]);
        entries.extend_from_slice(&[ISA_BUS_ID, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 of every local APIC is the PIC's ExtINT, LINT1 is NMI.
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_EXTINT, 0, 0]);
    entries.extend_from_slice(&[ISA_BUS_ID, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, INT_TYPE_NMI, 0, 0]);
    entries.extend_from_slice(&[ISA_BUS_ID, 0, 0xff, 1]);
    count += 2;

    let table_len = HEADER_LEN + entries.len();
    let mut header = Vec::with_capacity(table_len);
    header.extend_from_slice(b"PCMP");
    #[allow(
        clippy::cast_possible_truncation,
        reason = "at most MAX_VCPUS (32) processor entries: well under 64 KiB"
    )]
    let table_len_u16 = table_len as u16;
    header.extend_from_slice(&table_len_u16.to_le_bytes());
    header.extend_from_slice(&[SPEC_REV, 0]);
    header.extend_from_slice(b"MEMTIDE ");
    header.extend_from_slice(b"KVM GUEST   ");
    header.extend_from_slice(&[0; 4]); // OEM table pointer
    header.extend_from_slice(&[0; 2]); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&layout::APIC_START_U32.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum
    header.extend_from_slice(&entries);
    header[7] = checksum(&header);

    let table_addr = base + FLOATING_POINTER_LEN as u64;
    let table_addr = u32::try_from(table_addr).map_err(|_| MpTableError::Address(base))?;
    let mut out = Vec::with_capacity(FLOATING_POINTER_LEN + table_len);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&table_addr.to_le_bytes());
    out.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]);
    out[10] = checksum(&out);
    out.extend_from_slice(&header);
    Ok(out)
}

/// Writes the MP table for `vcpus` CPUs into the EBDA.
pub fn write(mem: &GuestMemoryMmap, vcpus: u8) -> Result<(), MpTableError> {
    let bytes = build(vcpus, layout::EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(layout::EBDA_START))?;
    Ok(())
}

/// The byte that makes `bytes` sum to zero modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    #[test]
    fn checksums_and_lengths_are_consistent() {
        for vcpus in [1u8, 2, 8, MAX_VCPUS] {
            let t = build(vcpus, layout::EBDA_START).expect("build");
            assert_eq!(&t[0..4], b"_MP_");
            assert_eq!(sum(&t[..16]), 0);
            let table = &t[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(sum(table), 0);
            let count = u16::from_le_bytes([table[34], table[35]]);
            // CPUs + bus + IOAPIC + 24 IRQs + 2 local interrupts.
            assert_eq!(count, u16::from(vcpus) + 2 + 24 + 2);
            assert!(t.len() <= 0x400, "fits in the 1 KiB EBDA");
        }
    }

    #[test]
    fn a_table_above_4_gib_is_refused_not_truncated() {
        assert!(matches!(
            build(1, 1 << 32),
            Err(MpTableError::Address(0x1_0000_0000))
        ));
    }

    #[test]
    fn only_the_first_cpu_is_the_bootstrap_processor() {
        let t = build(3, 0).expect("build");
        let first = 16 + HEADER_LEN;
        assert_eq!(t[first + 3], CPU_ENABLED | CPU_BOOTSTRAP);
        assert_eq!(t[first + 20 + 3], CPU_ENABLED);
        assert_eq!(t[first + 40 + 1], 2, "third CPU has APIC ID 2");
    }

    #[test]
    fn rejects_bad_cpu_counts() {
        assert!(build(0, 0).is_err());
        assert!(build(MAX_VCPUS + 1, 0).is_err());
    }
}
