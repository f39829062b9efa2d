//! The VM configuration and its validation (the `memtide` binary builds
//! it from its command line).

use std::path::PathBuf;
use std::time::Duration;

use memtide_devices::virtio::balloon::host::DiscardMode;

use crate::arch::x86_64::boot::mptable::MAX_VCPUS;
#[cfg(test)]
use crate::kernel_cmdline::BASE_CMDLINE;
use crate::kernel_cmdline::{CmdlineError, KernelCmdline};

/// The host port the guest agent reports to unless told otherwise.
pub const DEFAULT_AGENT_PORT: u32 = 5100;
/// Smallest guest RAM accepted, in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Largest guest RAM accepted, in MiB (1 TiB).
pub const MAX_MEMORY_MIB: u64 = 1 << 20;

/// Errors in the VM configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// vCPU count out of range.
    #[error("--vcpus {0}: must be between 1 and {MAX_VCPUS}")]
    VcpuCount(u8),
    /// Memory out of range.
    #[error("--memory-mib {0}: must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}")]
    MemorySize(u64),
    /// A bad command line.
    #[error("kernel command line: {0}")]
    Cmdline(#[from] CmdlineError),
    /// Bad hot-add settings.
    #[error(transparent)]
    Hotplug(#[from] crate::memory::hotplug::HotplugError),
    /// A guest CID below 3 (0-2 are reserved).
    #[error("--guest-cid {0}: must be between 3 and 4294967294 (0-2 and 2^32-1 are reserved)")]
    GuestCid(u64),
    /// Balancer settings out of order or range.
    #[error("balancer settings: {0}")]
    Balancer(#[from] memtide_balancer::SettingsError),
    /// A balancer interval of 0.
    #[error("--balancer-interval-ms 0: must be 1 or more")]
    BalancerInterval,
    /// A vsock port of 0.
    #[error("--agent-port 0: must be 1 or more")]
    AgentPort,
    /// Hot-add without ACPI.
    #[error("--hotplug-slots needs ACPI; drop --no-acpi")]
    HotplugNeedsAcpi,
    /// A maximum below the boot memory.
    #[error("--max-memory-mib {max} is below --memory-mib {memory}")]
    MaxBelowMemory {
        /// The maximum given.
        max: u64,
        /// The boot memory.
        memory: u64,
    },
    /// Bad virtio-mem settings.
    #[error(transparent)]
    VirtioMem(#[from] crate::memory::virtio_mem::VirtioMemError),
    /// No default image location.
    #[error("neither $MEMTIDE_CACHE nor $HOME is set; pass --kernel and --initramfs")]
    NoCacheDir,
    /// A bzImage on the nested `kvm_pvm` host, where its decompressor
    /// never gets going.
    #[error(
        "{0} is a bzImage, which does not boot on this nested kvm_pvm host: its decompressor \
         spins inside the host's KVM and never prints a line (docs/nested-host.md). Boot the \
         uncompressed vmlinux built with it (`cargo xtask kernel` leaves both in \
         ~/.cache/memtide), or pass --no-compat to try anyway"
    )]
    BzImageOnNestedHost(PathBuf),
}

/// Everything needed to build and boot one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel image path.
    pub kernel: PathBuf,
    /// Initramfs path, if any.
    pub initramfs: Option<PathBuf>,
    /// vCPU count.
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// The complete kernel command line (devices add their entries).
    pub cmdline: KernelCmdline,
    /// The balloon, if any.
    pub balloon: Option<BalloonConfig>,
    /// Control API socket.
    pub api_sock: Option<PathBuf>,
    /// Make guest RAM resident before boot.
    pub prefault: bool,
    /// Memory hot-add, if any.
    pub hotplug: Option<HotplugConfig>,
    /// Describe the machine with ACPI tables (else an MP table and the
    /// command line).
    pub acpi: bool,
    /// Complete guest system calls in the VMM (a nested `kvm_pvm` host
    /// whose `syscall` does not switch to kernel mode).
    pub complete_syscalls: bool,
    /// The virtio-vsock device, if any.
    pub vsock: Option<VsockConfig>,
    /// The balancer thread, if it runs.
    pub balancer: Option<BalancerConfig>,
    /// Drop every capability before building the VM and run it under the
    /// seccomp filter (`sandbox`); off only for debugging.
    pub sandbox: bool,
    /// The virtio-mem device, if any.
    pub virtio_mem: Option<VirtioMemConfig>,
}

/// virtio-mem settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMemConfig {
    /// Size of the device region (the most it can plug), MiB.
    pub size_mib: u64,
    /// Device block size, MiB.
    pub block_mib: u64,
}

/// The balancer of a single VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalancerConfig {
    /// Boot memory, MiB.
    pub startup_mib: u64,
    /// Least memory, MiB.
    pub minimum_mib: u64,
    /// Most memory (boot plus hot-add), MiB.
    pub maximum_mib: u64,
    /// Buffer over committed memory, percent.
    pub buffer_pct: u32,
    /// Weight, 1..=10000.
    pub weight: u32,
    /// Host budget for the VM, MiB.
    pub budget_mib: u64,
    /// Decision interval, ms.
    pub interval_ms: u64,
    /// Idle reclaim after this long with low demand, ms (`None`: off).
    pub idle_reclaim_after_ms: Option<u64>,
    /// A guest without a memory stall this long (ms) is calm and may give
    /// back memory down to committed + 10 %.
    pub calm_after_ms: u64,
    /// The host reserve, percent of the budget, below which calm guests
    /// give back memory below their startup memory (0: off).
    pub host_reserve_pct: u64,
}

/// virtio-vsock settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID.
    pub guest_cid: u64,
    /// Base path of the host-side Unix sockets.
    pub uds_path: PathBuf,
    /// Host port the guest memory agent reports to.
    pub agent_port: u32,
}

/// Memory hot-add settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotplugConfig {
    /// Number of slots.
    pub slots: u32,
    /// MiB per slot.
    pub slot_mib: u64,
    /// Most memory the VM may reach, MiB.
    pub max_mib: u64,
}

/// Balloon settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalloonConfig {
    /// Statistics polling interval (`None`: no statistics queue).
    pub stats_interval: Option<Duration>,
    /// How inflated pages are returned.
    pub discard: DiscardMode,
    /// Offer free page reporting.
    pub free_page_reporting: bool,
}

/// The image cache: `$MEMTIDE_CACHE`, else `~/.cache/memtide`.
pub fn cache_dir() -> Result<PathBuf, ConfigError> {
    if let Some(dir) = std::env::var_os("MEMTIDE_CACHE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("memtide"))
        .ok_or(ConfigError::NoCacheDir)
}

impl VmConfig {
    /// Checks the configuration: vCPU count and memory in range, hot-add
    /// slots that fit (with ACPI), a usable vsock CID and port, and
    /// balancer settings in order. The messages name the `memtide run`
    /// flags that set each value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::MemorySize(self.memory_mib));
        }
        if let Some(h) = &self.hotplug {
            if !self.acpi {
                return Err(ConfigError::HotplugNeedsAcpi);
            }
            crate::memory::hotplug::HotplugLayout::new(self.memory_mib << 20, h.slots, h.slot_mib)?;
            if h.max_mib < self.memory_mib {
                return Err(ConfigError::MaxBelowMemory {
                    max: h.max_mib,
                    memory: self.memory_mib,
                });
            }
        }
        if let Some(v) = &self.vsock {
            if v.guest_cid < 3 || v.guest_cid >= u64::from(u32::MAX) {
                return Err(ConfigError::GuestCid(v.guest_cid));
            }
            if v.agent_port == 0 {
                return Err(ConfigError::AgentPort);
            }
        }
        if let Some(b) = &self.balancer {
            b.validate()?;
        }
        if let Some(vm) = &self.virtio_mem {
            crate::memory::virtio_mem::region(self.memory_mib, self.hotplug.as_ref(), vm)?;
        }
        Ok(())
    }
}

impl BalancerConfig {
    /// The balancer's settings for this VM (named `vm`).
    pub fn settings(&self) -> memtide_balancer::VmSettings {
        let mut s = memtide_balancer::VmSettings::new(
            "vm",
            self.startup_mib,
            self.minimum_mib,
            self.maximum_mib,
        );
        s.buffer_pct = self.buffer_pct;
        s.weight = self.weight;
        s
    }

    /// Checks the settings and the interval.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().validate()?;
        if self.interval_ms == 0 {
            return Err(ConfigError::BalancerInterval);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig {
            kernel: PathBuf::from("/k"),
            initramfs: None,
            vcpus: 1,
            memory_mib: 256,
            cmdline: KernelCmdline::new(BASE_CMDLINE).expect("cmdline"),
            balloon: None,
            api_sock: None,
            prefault: false,
            hotplug: None,
            acpi: true,
            complete_syscalls: false,
            vsock: None,
            balancer: None,
            sandbox: true,
            virtio_mem: None,
        }
    }

    #[test]
    fn a_default_config_is_valid() {
        config().validate().expect("valid");
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_flag_named() {
        let mut c = config();
        c.vcpus = 0;
        let e = c.validate().expect_err("0 vCPUs");
        assert!(matches!(e, ConfigError::VcpuCount(0)));
        assert!(e.to_string().contains("--vcpus 0"), "{e}");
        let mut c = config();
        c.memory_mib = 8;
        assert!(matches!(c.validate(), Err(ConfigError::MemorySize(8))));
    }

    #[test]
    fn hotplug_vsock_and_balancer_settings_are_checked() {
        let mut c = config();
        c.hotplug = Some(HotplugConfig {
            slots: 2,
            slot_mib: 128,
            max_mib: 512,
        });
        c.validate().expect("hot-add is fine");
        c.acpi = false;
        assert!(matches!(c.validate(), Err(ConfigError::HotplugNeedsAcpi)));
        c.acpi = true;
        c.hotplug = Some(HotplugConfig {
            slots: 2,
            slot_mib: 128,
            max_mib: 100,
        });
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MaxBelowMemory { max: 100, .. })
        ));
        let mut c = config();
        c.vsock = Some(VsockConfig {
            guest_cid: 2,
            uds_path: PathBuf::from("/tmp/v"),
            agent_port: DEFAULT_AGENT_PORT,
        });
        assert!(matches!(c.validate(), Err(ConfigError::GuestCid(2))));
        let mut c = config();
        let good = BalancerConfig {
            startup_mib: 256,
            minimum_mib: 128,
            maximum_mib: 512,
            buffer_pct: 20,
            weight: 5000,
            budget_mib: 512,
            interval_ms: 500,
            idle_reclaim_after_ms: None,
            calm_after_ms: 30_000,
            host_reserve_pct: 20,
        };
        c.balancer = Some(good);
        c.validate().expect("balancer is fine");
        c.balancer = Some(BalancerConfig {
            interval_ms: 0,
            ..good
        });
        assert!(matches!(c.validate(), Err(ConfigError::BalancerInterval)));
        c.balancer = Some(BalancerConfig {
            minimum_mib: 300,
            ..good
        });
        assert!(matches!(c.validate(), Err(ConfigError::Balancer(_))));
    }

    #[test]
    fn virtio_mem_sizes_are_checked() {
        let mut c = config();
        c.virtio_mem = Some(VirtioMemConfig {
            size_mib: 1024,
            block_mib: 2,
        });
        c.validate().expect("virtio-mem is fine");
        c.virtio_mem = Some(VirtioMemConfig {
            size_mib: 100,
            block_mib: 2,
        });
        let e = c.validate().expect_err("not 128 MiB blocks");
        assert!(e.to_string().contains("--virtio-mem-mib 100"), "{e}");
    }
}
