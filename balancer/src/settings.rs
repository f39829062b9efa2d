//! Per-VM settings and the balancer's view of each VM's memory.

/// Errors in VM settings.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// minimum <= startup <= maximum does not hold.
    #[error(
        "VM {name}: need minimum <= startup <= maximum, got {minimum} / {startup} / {maximum} MiB"
    )]
    Order {
        /// VM name.
        name: String,
        /// Minimum, MiB.
        minimum: u64,
        /// Startup, MiB.
        startup: u64,
        /// Maximum, MiB.
        maximum: u64,
    },
    /// Weight outside 1..=10000.
    #[error("VM {name}: weight {weight} is outside 1..=10000")]
    Weight {
        /// VM name.
        name: String,
        /// The weight given.
        weight: u32,
    },
    /// Buffer outside 0..=2000 %.
    #[error("VM {name}: buffer {buffer}% is outside 0..=2000")]
    Buffer {
        /// VM name.
        name: String,
        /// The buffer given.
        buffer: u32,
    },
}

/// What the operator sets for a VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmSettings {
    /// Name used in decisions' reasons.
    pub name: String,
    /// Memory at boot, MiB.
    pub startup_mib: u64,
    /// Never go below this, MiB.
    pub minimum_mib: u64,
    /// Never go above this, MiB.
    pub maximum_mib: u64,
    /// Extra memory over committed, percent (default 20).
    pub buffer_pct: u32,
    /// Priority when memory is short, 1..=10000 (default 5000).
    pub weight: u32,
    /// This VM's hot-add slot size, MiB (`None`: the policy's
    /// [`crate::PolicyConfig::slot_mib`]). VMs under one balancer may have
    /// different slot sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_mib: Option<u64>,
    /// This VM's virtio-mem device, if it has one: the balancer then grows
    /// it by plugging blocks and shrinks it by unplugging them
    /// (`docs/virtio-mem.md`, "How the balancer chooses").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtio_mem: Option<VirtioMemSettings>,
}

/// A VM's virtio-mem device as the balancer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtioMemSettings {
    /// The device region: the most that can be plugged, MiB.
    pub region_mib: u64,
    /// The unit of plug and unplug, MiB (at least 1): the device's block
    /// size, or the guest driver's larger unit
    /// ([`VirtioMemSettings::for_linux_guest`]).
    pub block_mib: u64,
}

/// The least a Linux guest plugs or unplugs at a time, MiB: its
/// `virtio_mem` driver works in sub-blocks of at least `MAX_ORDER` pages
/// (4 MiB on x86-64 with Linux 6.12, "subblock size: 0x400000" in its log),
/// whatever the device's block size; a request between two sub-blocks is
/// never met (a 2 MiB device asked for 34 MiB plugs 32).
pub const LINUX_SUBBLOCK_MIB: u64 = 4;

impl VirtioMemSettings {
    /// The balancer's view of a device of `region_mib` with
    /// `device_block_mib` blocks in a Linux guest: it resizes in units of
    /// the larger of the device block and [`LINUX_SUBBLOCK_MIB`].
    pub fn for_linux_guest(region_mib: u64, device_block_mib: u64) -> Self {
        Self {
            region_mib,
            block_mib: device_block_mib.max(LINUX_SUBBLOCK_MIB),
        }
    }

    /// `mib` rounded down to whole blocks.
    pub fn floor_blocks(&self, mib: u64) -> u64 {
        let b = self.block_mib.max(1);
        mib / b * b
    }

    /// `mib` rounded up to whole blocks (saturating).
    pub fn ceil_blocks(&self, mib: u64) -> u64 {
        let b = self.block_mib.max(1);
        mib.div_ceil(b).saturating_mul(b)
    }
}

impl VmSettings {
    /// Settings with the default buffer (20 %) and weight (5000).
    pub fn new(name: &str, startup_mib: u64, minimum_mib: u64, maximum_mib: u64) -> Self {
        Self {
            name: name.to_string(),
            startup_mib,
            minimum_mib,
            maximum_mib,
            buffer_pct: 20,
            weight: 5000,
            slot_mib: None,
            virtio_mem: None,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(self.minimum_mib <= self.startup_mib && self.startup_mib <= self.maximum_mib) {
            return Err(SettingsError::Order {
                name: self.name.clone(),
                minimum: self.minimum_mib,
                startup: self.startup_mib,
                maximum: self.maximum_mib,
            });
        }
        if !(1..=10_000).contains(&self.weight) {
            return Err(SettingsError::Weight {
                name: self.name.clone(),
                weight: self.weight,
            });
        }
        if self.buffer_pct > 2000 {
            return Err(SettingsError::Buffer {
                name: self.name.clone(),
                buffer: self.buffer_pct,
            });
        }
        Ok(())
    }

    /// The memory this VM should have for `committed_mib`:
    /// `committed * (1 + buffer/100)`, within [minimum, maximum].
    pub fn target_mib(&self, committed_mib: u64) -> u64 {
        let with_buffer = committed_mib.saturating_add(
            committed_mib
                .saturating_mul(u64::from(self.buffer_pct))
                .div_ceil(100),
        );
        with_buffer.clamp(self.minimum_mib, self.maximum_mib)
    }
}

/// The balancer's view of a VM's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmState {
    /// Boot memory plus hot-added memory, MiB.
    pub plugged_mib: u64,
    /// Memory held by the balloon, MiB.
    pub balloon_mib: u64,
    /// When the last resize was decided (ms), if ever.
    pub last_change_ms: Option<u64>,
    /// When the VM last grew (ms), if ever.
    pub last_grow_ms: Option<u64>,
    /// virtio-mem: the size the balancer asked the device for (its
    /// requested size), MiB; counted as assigned. 0 without a device.
    pub vmem_requested_mib: u64,
    /// virtio-mem: what the device said was plugged at the last
    /// observation, MiB.
    pub vmem_plugged_mib: u64,
    /// virtio-mem: when the requested size last changed, or the plugged
    /// size last moved since (ms), if ever: a resize is settled (and a
    /// shortfall judged) only `vmem_settle_ms` after the guest's last
    /// progress.
    pub vmem_moved_at_ms: Option<u64>,
    /// virtio-mem: no balloon-to-unplug conversion before this time (ms),
    /// set when an unplug came up short.
    pub vmem_retry_after_ms: Option<u64>,
}

impl VmState {
    /// A VM just booted with `startup_mib` and an empty balloon.
    pub fn at_startup(settings: &VmSettings) -> Self {
        Self {
            plugged_mib: settings.startup_mib,
            ..Self::default()
        }
    }

    /// A virtio-mem resize came up short: asks for what the device has
    /// plugged, as of `now_ms`, so the guest stops trying. Returns the
    /// sizes (requested, plugged) it had, MiB.
    pub fn request_what_is_plugged(&mut self, now_ms: u64) -> (u64, u64) {
        let requested = self.vmem_requested_mib;
        self.vmem_requested_mib = self.vmem_plugged_mib;
        self.vmem_moved_at_ms = Some(now_ms);
        self.last_change_ms = Some(now_ms);
        (requested, self.vmem_plugged_mib)
    }

    /// Memory the guest may use now: boot plus hot-added plus the
    /// virtio-mem size requested, minus the balloon. Memory the balancer
    /// asked to unplug is never counted.
    pub fn assigned_mib(&self) -> u64 {
        self.plugged_mib
            .saturating_add(self.vmem_requested_mib)
            .saturating_sub(self.balloon_mib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(VmSettings::new("a", 512, 256, 1024).validate().is_ok());
        assert!(matches!(
            VmSettings::new("a", 128, 256, 1024).validate(),
            Err(SettingsError::Order { .. })
        ));
        let mut s = VmSettings::new("a", 512, 256, 1024);
        s.weight = 0;
        assert!(matches!(s.validate(), Err(SettingsError::Weight { .. })));
        s.weight = 5000;
        s.buffer_pct = 5000;
        assert!(matches!(s.validate(), Err(SettingsError::Buffer { .. })));
    }

    #[test]
    fn target_is_committed_plus_buffer_within_bounds() {
        let s = VmSettings::new("a", 512, 256, 1024);
        assert_eq!(s.target_mib(500), 600);
        assert_eq!(s.target_mib(10), 256, "never below minimum");
        assert_eq!(s.target_mib(2000), 1024, "never above maximum");
        assert_eq!(s.target_mib(1), 256);
        assert_eq!(s.target_mib(u64::MAX), 1024, "a lying report saturates");
    }
}
