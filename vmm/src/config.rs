//! A validated VM configuration built from the command line.

use std::path::PathBuf;
use std::time::Duration;

use memtide_devices::virtio::balloon::host::DiscardMode;

use crate::arch::x86_64::boot::mptable::MAX_VCPUS;
use crate::cli::{DiscardArg, RunArgs};
use crate::kernel_cmdline::{CmdlineError, KernelCmdline, BASE_CMDLINE};
use crate::vcpu::nested::HostKvm;

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
    /// Complete guest system calls in the VMM (a nested `kvm_pvm` host
    /// whose `syscall` does not switch to kernel mode).
    pub complete_syscalls: bool,
    /// The virtio-vsock device, if any.
    pub vsock: Option<VsockConfig>,
    /// The balancer thread, if it runs.
    pub balancer: Option<BalancerConfig>,
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

/// Checks the balancer flags against the VM's memory.
fn balancer_config(
    args: &RunArgs,
    hotplug: Option<&HotplugConfig>,
) -> Result<BalancerConfig, ConfigError> {
    let startup = args.memory_mib;
    let maximum = hotplug.map_or(startup, |h| h.max_mib);
    let minimum = args.min_memory_mib.unwrap_or(startup / 2);
    let mut settings = memtide_balancer::VmSettings::new("vm", startup, minimum, maximum);
    settings.buffer_pct = args.buffer_pct;
    settings.weight = args.weight;
    settings.validate()?;
    if args.balancer_interval_ms == 0 {
        return Err(ConfigError::BalancerInterval);
    }
    Ok(BalancerConfig {
        startup_mib: startup,
        minimum_mib: minimum,
        maximum_mib: maximum,
        buffer_pct: args.buffer_pct,
        weight: args.weight,
        budget_mib: args.host_budget_mib.unwrap_or(maximum),
        interval_ms: args.balancer_interval_ms,
    })
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
            crate::memory::hotplug::HotplugLayout::new(
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
        let vsock = match &args.vsock_uds {
            Some(path) => {
                if args.guest_cid < 3 || args.guest_cid >= u64::from(u32::MAX) {
                    return Err(ConfigError::GuestCid(args.guest_cid));
                }
                if args.agent_port == 0 {
                    return Err(ConfigError::AgentPort);
                }
                if args.agent_port != DEFAULT_AGENT_PORT {
                    cmdline.push(&format!("memtide.agent_port={}", args.agent_port))?;
                }
                Some(VsockConfig {
                    guest_cid: args.guest_cid,
                    uds_path: path.clone(),
                    agent_port: args.agent_port,
                })
            }
            None => None,
        };
        let balancer = match (&vsock, args.no_balancer) {
            (Some(_), false) => Some(balancer_config(args, hotplug.as_ref())?),
            _ => None,
        };
        Ok(Self {
            kernel,
            complete_syscalls: host == HostKvm::NestedPvm
                && !args.no_compat
                && !args.no_syscall_gate,
            vsock,
            balancer,
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
        assert!(c.cmdline.as_str().contains("clearcpuid="));
        assert!(c.cmdline.as_str().ends_with("memtide.cmd=\"true\""));
        let c = VmConfig::from_args(&args(&["--no-compat"]), HostKvm::NestedPvm).expect("ok");
        assert!(!c.cmdline.as_str().contains("clearcpuid="));
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
    fn vsock_settings_are_checked() {
        let c =
            VmConfig::from_args(&args(&["--vsock-uds", "/tmp/v"]), HostKvm::Hardware).expect("ok");
        let v = c.vsock.expect("vsock");
        assert_eq!((v.guest_cid, v.agent_port), (3, DEFAULT_AGENT_PORT));
        assert!(!c.cmdline.as_str().contains("memtide.agent_port"));
        assert!(matches!(
            VmConfig::from_args(
                &args(&["--vsock-uds", "/tmp/v", "--guest-cid", "2"]),
                HostKvm::Hardware
            ),
            Err(ConfigError::GuestCid(2))
        ));
        let c = VmConfig::from_args(
            &args(&["--vsock-uds", "/tmp/v", "--agent-port", "6000"]),
            HostKvm::Hardware,
        )
        .expect("ok");
        assert!(c.cmdline.as_str().contains("memtide.agent_port=6000"));
        assert!(crate::cli::Cli::try_parse_from(["memtide", "run", "--guest-cid", "5"]).is_err());
    }

    #[test]
    fn the_balancer_runs_with_an_agent_channel_and_checks_its_settings() {
        let c = VmConfig::from_args(&args(&[]), HostKvm::Hardware).expect("ok");
        assert!(c.balancer.is_none(), "no agent channel, no balancer");
        let c = VmConfig::from_args(
            &args(&["--vsock-uds", "/tmp/v", "--hotplug-slots", "2"]),
            HostKvm::Hardware,
        )
        .expect("ok");
        let b = c.balancer.expect("balancer");
        assert_eq!(
            (b.startup_mib, b.minimum_mib, b.maximum_mib),
            (256, 128, 512)
        );
        assert_eq!(b.budget_mib, 512);
        let c = VmConfig::from_args(
            &args(&["--vsock-uds", "/tmp/v", "--no-balancer"]),
            HostKvm::Hardware,
        )
        .expect("ok");
        assert!(c.balancer.is_none());
        for bad in [
            &["--vsock-uds", "/tmp/v", "--min-memory-mib", "300"][..],
            &["--vsock-uds", "/tmp/v", "--weight", "0"],
            &["--vsock-uds", "/tmp/v", "--balancer-interval-ms", "0"],
        ] {
            assert!(
                VmConfig::from_args(&args(bad), HostKvm::Hardware).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_flags_are_a_parse_error() {
        assert!(crate::cli::Cli::try_parse_from(["memtide", "run", "--bogus"]).is_err());
    }
}
