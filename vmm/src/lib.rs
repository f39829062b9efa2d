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
pub mod arch;
pub mod balance;
pub mod config;
pub mod device_manager;
pub mod host_info;
pub mod kernel_cmdline;
pub mod memory;
pub mod outcome;
pub mod sandbox;
pub mod vcpu;
pub mod vm;
