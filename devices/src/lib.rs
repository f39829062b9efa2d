//! Emulated devices for memtide.
//!
//! Each device is independent of KVM: it sees port or MMIO accesses through
//! [`bus::Bus`] and signals the guest through an [`vmm_sys_util::eventfd::EventFd`]
//! that the VMM registers as a KVM irqfd.

pub mod acpi_sleep;
pub mod bus;
pub mod i8042;
pub mod memory_hotplug;
pub mod serial;
pub mod virtio;
