//! memtide-vmm: the VMM library behind the `memtide` binary. It boots
//! unmodified Linux guests on /dev/kvm and gives them memory dynamically
//! (virtio-balloon, ACPI memory hot-add, a vsock guest agent and a
//! balancer).
//!
//! The library has no command-line parsing and prints nothing to stdout
//! (the guest's serial console excepted): build a [`config::VmConfig`],
//! check it with [`config::VmConfig::validate`], and call [`vm::run`].
//! The control API's types and client are in the `memtide-api` crate.

pub mod acpi;
pub mod api;
pub mod balance;
pub mod boot;
pub mod compat;
pub mod config;
pub mod guest_channel;
pub mod host;
pub mod hot_add;
pub mod hotplug;
pub mod kernel_cmdline;
pub mod layout;
pub mod memory;
pub mod mmio_devices;
pub mod outcome;
pub mod platform_acpi;
pub mod vcpu;
pub mod vm;
