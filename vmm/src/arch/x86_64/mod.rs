//! x86-64: the guest-physical address map ([`layout`]), the boot protocol
//! ([`boot`]: kernel, initramfs, zero page and e820, MP table) and the
//! initial vCPU state ([`setup`], [`gdt`]: CPUID, MSRs, FPU, LAPIC, GDT and
//! identity page tables for the 64-bit boot protocol).

pub mod boot;
pub mod gdt;
pub mod layout;
pub mod setup;
