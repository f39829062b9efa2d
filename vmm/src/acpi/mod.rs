//! ACPI tables: RSDP, XSDT, a hardware-reduced FADT, MADT and DSDT, built
//! with the `acpi_tables` crate and written into the reserved BIOS area
//! (0xe0000-0xfffff), which the e820 map already marks reserved. The kernel
//! finds the RSDP through `boot_params.acpi_rsdp_addr`.

pub mod dsdt;

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};
use zerocopy::IntoBytes;

pub use dsdt::{HotplugAml, VirtioMmioAml};

use crate::arch::x86_64::layout;
use crate::memory::GuestMemoryMmap;

/// Start of the area the tables go to.
pub const ACPI_START: u64 = 0xe_0000;
/// End (exclusive) of that area.
pub const ACPI_END: u64 = 0x10_0000;
/// I/O port of the FADT's sleep control register (and status, +1).
pub const SLEEP_CONTROL_PORT: u16 = 0x3c0;
const OEM_ID: [u8; 6] = *b"MEMTID";
const OEM_TABLE_ID: [u8; 8] = *b"MEMTIDE ";

/// Errors from building or writing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit the reserved area.
    #[error("ACPI tables need {0} bytes, more than the reserved area holds")]
    TooLarge(u64),
    /// Writing guest memory failed.
    #[error("cannot write ACPI tables: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// The tables, laid out from [`ACPI_START`]: (address, bytes) pairs, RSDP first.
pub fn build(
    vcpus: u8,
    hotplug: Option<&HotplugAml>,
    virtio: &[VirtioMmioAml],
) -> Result<Vec<(u64, Vec<u8>)>, AcpiError> {
    let mut out = Vec::new();
    let mut next = ACPI_START + 64; // the RSDP goes first, at ACPI_START
    let mut place = |bytes: Vec<u8>, out: &mut Vec<(u64, Vec<u8>)>| {
        let addr = next;
        next = (next + bytes.len() as u64).next_multiple_of(16);
        out.push((addr, bytes));
        addr
    };

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, 1);
    dsdt.append_slice(&dsdt::dsdt_body(hotplug, virtio));
    let dsdt_addr = place(dsdt.as_slice().to_vec(), &mut out);

    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1)
        .flag(Flags::HwReducedAcpi)
        .dsdt_64(dsdt_addr);
    let port = u64::from(SLEEP_CONTROL_PORT);
    fadt.sleep_control_reg = GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port);
    fadt.sleep_status_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::ByteAccess,
        port + 1,
    );
    let fadt_addr = place(bytes_of(&fadt.finalize()), &mut out);

    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        1,
        LocalInterruptController::Address(layout::APIC_START_U32),
    );
    for cpu in 0..vcpus {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(vcpus + 1, layout::IOAPIC_START_U32, 0));
    let madt_addr = place(bytes_of(&madt), &mut out);

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = place(bytes_of(&xsdt), &mut out);

    if next > ACPI_END {
        return Err(AcpiError::TooLarge(next - ACPI_START));
    }
    let rsdp = Rsdp::new(OEM_ID, xsdt_addr);
    out.insert(0, (ACPI_START, rsdp.as_bytes().to_vec()));
    Ok(out)
}

/// Writes the tables; returns the RSDP address for the zero page.
pub fn write(
    mem: &GuestMemoryMmap,
    vcpus: u8,
    hotplug: Option<&HotplugAml>,
    virtio: &[VirtioMmioAml],
) -> Result<u64, AcpiError> {
    for (addr, bytes) in build(vcpus, hotplug, virtio)? {
        mem.write_slice(&bytes, GuestAddress(addr))?;
    }
    Ok(ACPI_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn tables_have_valid_checksums_and_point_at_each_other() {
        let t = build(2, None, &[]).expect("build");
        let (rsdp_addr, rsdp) = &t[0];
        assert_eq!(*rsdp_addr, ACPI_START);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(rsdp), 0, "extended checksum");
        let xsdt_addr = u64::from_le_bytes(rsdp[24..32].try_into().expect("8 bytes"));
        let find = |addr: u64| {
            t.iter()
                .find(|(a, _)| *a == addr)
                .map(|(_, b)| b.clone())
                .expect("table")
        };
        let xsdt = find(xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        let sigs: Vec<[u8; 4]> = xsdt[36..]
            .chunks(8)
            .map(|c| {
                let b = find(u64::from_le_bytes(c.try_into().expect("8")));
                assert_eq!(sum(&b), 0);
                b[..4].try_into().expect("sig")
            })
            .collect();
        assert_eq!(sigs, vec![*b"FACP", *b"APIC"]);
        for (_, b) in &t[1..] {
            assert_eq!(
                sum(b),
                0,
                "checksum of {}",
                String::from_utf8_lossy(&b[..4])
            );
            let len = u32::from_le_bytes(b[4..8].try_into().expect("len")) as usize;
            assert_eq!(
                len,
                b.len(),
                "length of {}",
                String::from_utf8_lossy(&b[..4])
            );
        }
        assert!(t.iter().all(|(a, b)| a + b.len() as u64 <= ACPI_END));
    }

    #[test]
    fn fadt_is_hardware_reduced_and_points_at_the_dsdt() {
        let t = build(1, None, &[]).expect("build");
        let fadt = t.iter().find(|(_, b)| &b[..4] == b"FACP").expect("FADT");
        let flags = u32::from_le_bytes(fadt.1[112..116].try_into().expect("flags"));
        assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
        let x_dsdt = u64::from_le_bytes(fadt.1[140..148].try_into().expect("x_dsdt"));
        let dsdt = t
            .iter()
            .find(|(a, _)| *a == x_dsdt)
            .expect("DSDT at x_dsdt");
        assert_eq!(&dsdt.1[..4], b"DSDT");
    }
}
