//! Memory hot-add, in one place: the window and its slot planning
//! ([`layout`], pure), the hot-plug controller device with its GED
//! interrupt ([`wiring`]), and the run-time hot-add that maps a slot and
//! registers it with KVM ([`hot_add`]).
//!
//! The controller's MMIO window and the GED IRQ number are placed by
//! `device_manager::acpi_platform`, and the guest learns of both from the
//! DSDT (`acpi/dsdt.rs`); the register interface itself is
//! `memtide_devices::memory_hotplug`.

pub mod hot_add;
pub mod layout;
pub mod wiring;

pub use hot_add::{HotAddError, HotplugStatus, MemoryHotplug, SlotStatus};
pub use layout::{plan_hot_add, HotplugError, HotplugLayout, BLOCK_MIB};
pub use wiring::{HotplugSetup, HotplugSetupError};
