//! A validated VM configuration built from the command line.

use std::path::PathBuf;
use std::time::Duration;

use memtide_devices::virtio::balloon::host::DiscardMode;

use crate::boot::mptable::MAX_VCPUS;
use crate::cli::{DiscardArg, RunArgs};
use crate::compat::HostKvm;
use crate::kernel_cmdline::{CmdlineError, KernelCmdline, BASE_CMDLINE};

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
    Hotplug(#[from] crate::hotplug::HotplugError),
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
    /// No default image location.
    #[error("neither $MEMTIDE_CACHE nor $HOME is set; pass --kernel and --initramfs")]
    NoCacheDir,
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
    /// Validates `args` for a host of kind `host`.
    pub fn from_args(args: &RunArgs, host: HostKvm) -> Result<Self, ConfigError> {
        if args.vcpus == 0 || args.vcpus > MAX_VCPUS {
            return Err(ConfigError::VcpuCount(args.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&args.memory_mib) {
            return Err(ConfigError::MemorySize(args.memory_mib));
        }
        let kernel = match &args.kernel {
            Some(p) => p.clone(),
            None => cache_dir()?.join("vmlinux"),
        };
        let initramfs = match (&args.initramfs, args.no_initramfs) {
            (_, true) => None,
            (Some(p), false) => Some(p.clone()),
            (None, false) => Some(cache_dir()?.join("initramfs.cpio")),
        };
        let mut cmdline = KernelCmdline::new(args.cmdline.as_deref().unwrap_or(BASE_CMDLINE))?;
        if !args.no_compat {
            if let Some(extra) = host.guest_cmdline() {
                cmdline.push(extra)?;
            }
        }
        if let Some(extra) = &args.append {
            cmdline.push(extra)?;
        }
        if let Some(cmd) = &args.cmd {
            cmdline.push_guest_command(cmd)?;
        }
        let balloon = args.balloon.then(|| BalloonConfig {
            stats_interval: (args.balloon_stats_ms > 0)
                .then(|| Duration::from_millis(args.balloon_stats_ms)),
            discard: match args.balloon_discard {
                DiscardArg::Ranges => DiscardMode::Ranges,
                DiscardArg::PerPage => DiscardMode::PerPage,
            },
            free_page_reporting: args.balloon_reporting,
        });
        if args.no_acpi && args.hotplug_slots > 0 {
            return Err(ConfigError::HotplugNeedsAcpi);
        }
        let hotplug = if args.hotplug_slots > 0 {
            crate::hotplug::HotplugLayout::new(
                args.memory_mib << 20,
                args.hotplug_slots,
                args.slot_mib,
            )?;
            let max_mib = args
                .max_memory_mib
                .unwrap_or(args.memory_mib + u64::from(args.hotplug_slots) * args.slot_mib);
            if max_mib < args.memory_mib {
                return Err(ConfigError::MaxBelowMemory {
                    max: max_mib,
                    memory: args.memory_mib,
                });
            }
            cmdline.push("memhp_default_state=online")?;
            Some(HotplugConfig {
                slots: args.hotplug_slots,
                slot_mib: args.slot_mib,
                max_mib,
            })
        } else {
            None
        };
        Ok(Self {
            kernel,
            initramfs,
            vcpus: args.vcpus,
            memory_mib: args.memory_mib,
            cmdline,
            hotplug,
            acpi: !args.no_acpi,
            balloon,
            api_sock: args.api_sock.clone(),
            prefault: args.prefault,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["memtide", "run", "--kernel", "/k", "--initramfs", "/i"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv)
            .expect("parse")
            .command
        {
            crate::cli::Command::Run(a) => a,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_are_one_vcpu_and_256_mib() {
        let c = VmConfig::from_args(&args(&[]), HostKvm::Hardware).expect("valid");
        assert_eq!((c.vcpus, c.memory_mib), (1, 256));
        assert_eq!(c.cmdline.as_str(), BASE_CMDLINE);
    }

    #[test]
    fn nested_host_adds_options_unless_disabled() {
        let c = VmConfig::from_args(&args(&["--cmd", "true"]), HostKvm::NestedPvm).expect("ok");
        assert!(c.cmdline.as_str().contains("noxsave"));
        assert!(c.cmdline.as_str().ends_with("memtide.cmd=\"true\""));
        let c = VmConfig::from_args(&args(&["--no-compat"]), HostKvm::NestedPvm).expect("ok");
        assert!(!c.cmdline.as_str().contains("noxsave"));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(matches!(
            VmConfig::from_args(&args(&["--vcpus", "0"]), HostKvm::Hardware),
            Err(ConfigError::VcpuCount(0))
        ));
        assert!(matches!(
            VmConfig::from_args(&args(&["--memory-mib", "8"]), HostKvm::Hardware),
            Err(ConfigError::MemorySize(8))
        ));
    }

    #[test]
    fn unknown_flags_are_a_parse_error() {
        assert!(crate::cli::Cli::try_parse_from(["memtide", "run", "--bogus"]).is_err());
    }
}
