//! Emulated devices for memtide.
//!
//! Each device is independent of KVM: it sees port or MMIO accesses through
//! [`pio_bus::PioBus`] and signals the guest through an [`vmm_sys_util::eventfd::EventFd`]
//! that the VMM registers as a KVM irqfd.

pub mod i8042;
pub mod pio_bus;
pub mod serial;
