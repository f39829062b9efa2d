//! The guest-physical address map memtide gives an x86_64 guest.
//!
//! ```text
//! 0x0000_0500  GDT            0x0000_7000  boot_params (zero page)
//! 0x0000_0520  IDT            0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4           0x0000_a000  PDPT      0x0000_b000  PD
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  MP table (EBDA), RAM below it is usable
//! 0x000e_0000  ACPI tables (RSDP first), reserved in e820
//! 0x0010_0000  bzImage protected-mode code / ELF vmlinux (at its own paddr)
//!   ...        RAM up to min(size, 3 GiB); the initramfs sits at its top
//! 0xc000_0000  32-bit device window: virtio-mmio, hot-plug controller, IOAPIC, LAPIC
//! 0x1_0000_0000 RAM above 3 GiB continues here, then the hot-add window
//! ```

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Global descriptor table used for the 64-bit boot.
pub const BOOT_GDT_START: GuestAddress = GuestAddress(0x500);
/// Empty interrupt descriptor table used for the 64-bit boot.
pub const BOOT_IDT_START: GuestAddress = GuestAddress(0x520);
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: GuestAddress = GuestAddress(0x7000);
/// Initial stack pointer of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Top-level page table of the boot identity map.
pub const PML4_START: GuestAddress = GuestAddress(0x9000);
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: GuestAddress = GuestAddress(0xa000);
/// Page directory (2 MiB pages) of the boot identity map.
pub const PDE_START: GuestAddress = GuestAddress(0xb000);
/// Where the kernel command line is written.
pub const CMDLINE_START: GuestAddress = GuestAddress(0x20000);
/// Longest command line accepted (the x86 kernel's `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the extended BIOS data area; the MP table lives here.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory, where kernels load.
pub const HIMEM_START: GuestAddress = GuestAddress(0x10_0000);
/// Start of the 32-bit device window below 4 GiB.
pub const MMIO32_START: u64 = 0xc000_0000;
/// Size of the 32-bit device window.
pub const MMIO32_SIZE: u64 = 0x4000_0000;
/// Address of the I/O APIC.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Address of the local APICs.
pub const APIC_START: u64 = 0xfee0_0000;
/// [`IOAPIC_START`] as the 32-bit field of the MP and ACPI tables.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the I/O APIC lies below 4 GiB, asserted at compile time"
)]
pub const IOAPIC_START_U32: u32 = {
    assert!(IOAPIC_START >> 32 == 0);
    IOAPIC_START as u32
};
/// [`APIC_START`] as the 32-bit field of the MP and ACPI tables.
#[allow(
    clippy::cast_possible_truncation,
    reason = "the local APICs lie below 4 GiB, asserted at compile time"
)]
pub const APIC_START_U32: u32 = {
    assert!(APIC_START >> 32 == 0);
    APIC_START as u32
};
/// Address KVM uses for the TSS (three pages) on Intel hosts.
pub const KVM_TSS_ADDRESS: usize = 0xfffb_d000;
/// Highest IRQ line routed through the I/O APIC.
pub const IRQ_MAX: u8 = 23;

/// The first address above `ram_bytes` of boot RAM and the 32-bit device
/// window: where memory added at run time (hot-add slots, the virtio-mem
/// region) may start.
pub fn above_ram(ram_bytes: u64) -> u64 {
    let ram_end = ram_regions(ram_bytes)
        .iter()
        .map(|(start, len)| start.0 + len)
        .max()
        .unwrap_or(0);
    ram_end.max(MMIO32_START + MMIO32_SIZE)
}

/// Splits `ram_bytes` of guest RAM around the 32-bit device window.
///
/// Returns the (start, length) of each RAM region, lowest first.
pub fn ram_regions(ram_bytes: u64) -> Vec<(GuestAddress, u64)> {
    if ram_bytes <= MMIO32_START {
        vec![(GuestAddress(0), ram_bytes)]
    } else {
        vec![
            (GuestAddress(0), MMIO32_START),
            (
                GuestAddress(MMIO32_START + MMIO32_SIZE),
                ram_bytes - MMIO32_START,
            ),
        ]
    }
}

/// Bytes of RAM below the 32-bit device window.
pub fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().0 + r.len())
        .filter(|end| *end <= MMIO32_START)
        .max()
        .unwrap_or(0)
}

/// Total bytes of guest RAM.
pub fn ram_bytes(mem: &GuestMemoryMmap) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ram_is_one_region() {
        assert_eq!(ram_regions(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
    }

    #[test]
    fn large_ram_skips_the_device_window() {
        let r = ram_regions(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), 3 << 30));
        assert_eq!(r[1], (GuestAddress(4 << 30), 1 << 30));
        assert_eq!(r.iter().map(|x| x.1).sum::<u64>(), 4 << 30);
    }
}
