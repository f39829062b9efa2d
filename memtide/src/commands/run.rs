//! `memtide run`: the command line becomes a [`VmConfig`], which is
//! validated and booted with [`vm::run`].

use std::process::ExitCode;
use std::time::Duration;

use memtide_agent_proto::guest_command::runs_without_shell;
use memtide_devices::virtio::balloon::host::DiscardMode;
use memtide_vmm::arch::x86_64::boot::kernel::file_is_bzimage;
use memtide_vmm::config::{
    cache_dir, BalancerConfig, BalloonConfig, ConfigError, HotplugConfig, VirtioMemConfig,
    VmConfig, VsockConfig, DEFAULT_AGENT_PORT,
};
use memtide_vmm::kernel_cmdline::{KernelCmdline, BASE_CMDLINE};
use memtide_vmm::outcome::VmOutcome;
use memtide_vmm::vcpu::nested::HostKvm;
use memtide_vmm::vm;

use crate::cli::{DiscardArg, RunArgs};

/// The balancer's settings from the flags and the VM's memory: its
/// maximum is the hot-add maximum plus the virtio-mem region, if any.
fn balancer_config(
    args: &RunArgs,
    hotplug: Option<&HotplugConfig>,
    virtio_mem: Option<&VirtioMemConfig>,
) -> BalancerConfig {
    let startup = args.memory_mib;
    let maximum = hotplug.map_or(startup, |h| h.max_mib) + virtio_mem.map_or(0, |v| v.size_mib);
    BalancerConfig {
        startup_mib: startup,
        minimum_mib: args.min_memory_mib.unwrap_or(startup / 2),
        maximum_mib: maximum,
        buffer_pct: args.buffer_pct,
        weight: args.weight,
        budget_mib: args.host_budget_mib.unwrap_or(maximum),
        interval_ms: args.balancer_interval_ms,
        idle_reclaim_after_ms: args.idle_reclaim_after_s.map(|s| s.saturating_mul(1000)),
        calm_after_ms: args.calm_after_s.saturating_mul(1000),
        // Without --host-budget-mib the budget is the VM's own maximum,
        // not a host's memory shared with other VMs: no reserve to keep.
        host_reserve_pct: if args.host_budget_mib.is_some() {
            args.host_reserve_pct
        } else {
            0
        },
    }
}

/// The initramfs `memtide run` boots without `--initramfs`: the lean one
/// (no busybox; the guest kernel unpacks about 2 MiB less) when the guest
/// needs no shell, if it has been built, else the one with busybox.
pub(crate) fn default_initramfs(cache: &std::path::Path, cmd: Option<&str>) -> std::path::PathBuf {
    let lean = cache.join("initramfs-lean.cpio");
    let shell_free = cmd.is_none_or(runs_without_shell);
    if shell_free && lean.exists() {
        lean
    } else {
        cache.join("initramfs.cpio")
    }
}

/// Builds the VM configuration from `memtide run`'s flags for a host of
/// kind `host`, and validates it ([`VmConfig::validate`]).
pub fn config_from_args(args: &RunArgs, host: HostKvm) -> Result<VmConfig, ConfigError> {
    let kernel = match &args.kernel {
        Some(p) => p.clone(),
        None => cache_dir()?.join("vmlinux"),
    };
    // A file that cannot be read is left to the loader, which names it.
    if host == HostKvm::NestedPvm && !args.no_compat && file_is_bzimage(&kernel).unwrap_or(false) {
        return Err(ConfigError::BzImageOnNestedHost(kernel));
    }
    let initramfs = match (&args.initramfs, args.no_initramfs) {
        (_, true) => None,
        (Some(p), false) => Some(p.clone()),
        (None, false) => Some(default_initramfs(&cache_dir()?, args.cmd.as_deref())),
    };
    let mut cmdline = KernelCmdline::new(args.cmdline.as_deref().unwrap_or(BASE_CMDLINE))?;
    if !args.no_compat {
        if let Some(extra) = host.guest_cmdline() {
            cmdline.push(extra)?;
        }
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
    let hotplug = (args.hotplug_slots > 0).then(|| HotplugConfig {
        slots: args.hotplug_slots,
        slot_mib: args.slot_mib,
        max_mib: args
            .max_memory_mib
            .unwrap_or(args.memory_mib + u64::from(args.hotplug_slots) * args.slot_mib),
    });
    let virtio_mem = (args.virtio_mem_mib > 0).then_some(VirtioMemConfig {
        size_mib: args.virtio_mem_mib,
        block_mib: args.virtio_mem_block_mib,
    });
    if hotplug.is_some() || virtio_mem.is_some() {
        cmdline.push("memhp_default_state=online")?;
    }
    if virtio_mem.is_some() {
        // Plugged memory goes to ZONE_MOVABLE while the ratio to kernel
        // memory allows (301 % by default): only movable pages land there,
        // so the driver can always migrate them away and unplug. In
        // ZONE_NORMAL an unmovable kernel page blocks its 4 MiB subblock
        // and the driver retries only after 50 s (docs/virtio-mem.md).
        cmdline.push("memory_hotplug.online_policy=auto-movable")?;
    }
    let vsock = args.vsock_uds.as_ref().map(|path| VsockConfig {
        guest_cid: args.guest_cid,
        uds_path: path.clone(),
        agent_port: args.agent_port,
    });
    if vsock.is_some() && args.agent_port != DEFAULT_AGENT_PORT && args.agent_port != 0 {
        cmdline.push(&format!("memtide.agent_port={}", args.agent_port))?;
    }
    if let (Some(ms), Some(_), false) = (host.agent_interval_ms(), &vsock, args.no_compat) {
        cmdline.push(&format!("memtide.agent_interval_ms={ms}"))?;
    }
    // The user's arguments come after memtide's, so that a setting given in
    // both wins as the user's (the kernel takes the last of a repeated
    // parameter), e.g. `--append memhp_default_state=online_kernel`; the
    // guest command stays last.
    if let Some(extra) = &args.append {
        cmdline.push(extra)?;
    }
    if let Some(cmd) = &args.cmd {
        cmdline.push_guest_command(cmd)?;
    }
    let balancer = match (&vsock, args.no_balancer) {
        (Some(_), false) => Some(balancer_config(args, hotplug.as_ref(), virtio_mem.as_ref())),
        _ => None,
    };
    let config = VmConfig {
        kernel,
        complete_syscalls: host == HostKvm::NestedPvm && !args.no_compat && !args.no_syscall_gate,
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
        sandbox: !args.no_sandbox,
        virtio_mem,
    };
    config.validate()?;
    Ok(config)
}

/// `memtide run`'s exit code when the guest ran but its `--cmd` command
/// failed or a guest process died of a signal.
const EXIT_GUEST_FAILED: u8 = 3;

/// Runs the VM and maps its end to the exit code `memtide run` documents.
pub fn run(config: &VmConfig) -> ExitCode {
    let report = match vm::run(config) {
        Ok(r) => r,
        Err(e) => return crate::fail(&e),
    };
    for fault in &report.guest_faults {
        eprintln!("memtide: {fault}");
    }
    if report.guest_faults_dropped > 0 {
        eprintln!(
            "memtide: ... and {} more guest process failures (see the console output above)",
            report.guest_faults_dropped
        );
    }
    if report.panicked {
        eprintln!("memtide: the guest kernel panicked (see its console output above)");
        return ExitCode::from(1);
    }
    match report.outcome {
        VmOutcome::Reset | VmOutcome::PowerOff if report.guest_faults.is_empty() => {
            ExitCode::SUCCESS
        }
        VmOutcome::Reset | VmOutcome::PowerOff => ExitCode::from(EXIT_GUEST_FAILED),
        VmOutcome::TripleFault { vcpu, state } => {
            eprintln!("memtide: vCPU {vcpu} triple-faulted; the guest crashed");
            if let Some(state) = state {
                eprintln!("memtide: vCPU {vcpu} state at the triple fault: {state}");
            }
            ExitCode::from(1)
        }
        VmOutcome::VcpuFailed { vcpu, error } => {
            eprintln!("memtide: vCPU {vcpu} stopped: {error}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use memtide_vmm::config::{ConfigError, DEFAULT_AGENT_PORT};
    use memtide_vmm::kernel_cmdline::BASE_CMDLINE;

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
    fn the_lean_image_is_the_default_when_no_shell_is_needed() {
        let dir = std::env::temp_dir().join(format!("memtide-run-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let full = dir.join("initramfs.cpio");
        let lean = dir.join("initramfs-lean.cpio");
        // Not built yet: always the full image.
        assert_eq!(default_initramfs(&dir, None), full);
        std::fs::write(&lean, b"").expect("lean");
        assert_eq!(default_initramfs(&dir, None), lean);
        assert_eq!(default_initramfs(&dir, Some("memtide-hog 64:10")), lean);
        assert_eq!(default_initramfs(&dir, Some("sleep 5")), full);
        assert_eq!(default_initramfs(&dir, Some("memtide-hog 1:1; true")), full);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_are_one_vcpu_and_256_mib() {
        let c = config_from_args(&args(&[]), HostKvm::Hardware).expect("valid");
        assert_eq!((c.vcpus, c.memory_mib), (1, 256));
        assert_eq!(c.cmdline.as_str(), BASE_CMDLINE);
    }

    #[test]
    fn a_bzimage_is_refused_on_the_nested_host_only() {
        let dir = std::env::temp_dir().join(format!("memtide-bz-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bz = dir.join("bzImage");
        let mut head = vec![0u8; 0x400];
        head[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::write(&bz, &head).expect("bzImage");
        let with = |extra: &[&str]| {
            let mut a = args(extra);
            a.kernel = Some(bz.clone());
            a
        };
        match config_from_args(&with(&[]), HostKvm::NestedPvm) {
            Err(e @ ConfigError::BzImageOnNestedHost(_)) => {
                assert!(e.to_string().contains("vmlinux"), "{e}");
            }
            other => panic!("expected the bzImage refused: {other:?}"),
        }
        assert!(config_from_args(&with(&[]), HostKvm::Hardware).is_ok());
        assert!(config_from_args(&with(&["--no-compat"]), HostKvm::NestedPvm).is_ok());
        // An ELF, or a file that is not there (the loader names it), passes.
        assert!(config_from_args(&args(&[]), HostKvm::NestedPvm).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nested_host_adds_options_unless_disabled() {
        let c = config_from_args(&args(&["--cmd", "true"]), HostKvm::NestedPvm).expect("ok");
        assert!(c.cmdline.as_str().contains("clearcpuid="));
        assert!(c.cmdline.as_str().ends_with("memtide.cmd=\"true\""));
        let c = config_from_args(&args(&["--no-compat"]), HostKvm::NestedPvm).expect("ok");
        assert!(!c.cmdline.as_str().contains("clearcpuid="));
        // A slower agent on the nested host, only with an agent channel,
        // and a user's own setting comes later and wins.
        let vsock = [
            "--vsock-uds",
            "/tmp/v",
            "--append",
            "memtide.agent_interval_ms=250",
        ];
        let c = config_from_args(&args(&vsock), HostKvm::NestedPvm).expect("ok");
        let line = c.cmdline.as_str();
        let ours = line
            .find("memtide.agent_interval_ms=1000")
            .expect("nested interval");
        assert!(
            line.find("memtide.agent_interval_ms=250") > Some(ours),
            "{line}"
        );
        for (host, extra) in [
            (HostKvm::NestedPvm, &[][..]),
            (HostKvm::Hardware, &vsock[..2]),
            (
                HostKvm::NestedPvm,
                &["--vsock-uds", "/tmp/v", "--no-compat"][..],
            ),
        ] {
            let c = config_from_args(&args(extra), host).expect("ok");
            assert!(
                !c.cmdline.as_str().contains("agent_interval"),
                "{host:?} {extra:?}"
            );
        }
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(matches!(
            config_from_args(&args(&["--vcpus", "0"]), HostKvm::Hardware),
            Err(ConfigError::VcpuCount(0))
        ));
        assert!(matches!(
            config_from_args(&args(&["--memory-mib", "8"]), HostKvm::Hardware),
            Err(ConfigError::MemorySize(8))
        ));
    }

    #[test]
    fn vsock_settings_are_checked() {
        let c = config_from_args(&args(&["--vsock-uds", "/tmp/v"]), HostKvm::Hardware).expect("ok");
        let v = c.vsock.expect("vsock");
        assert_eq!((v.guest_cid, v.agent_port), (3, DEFAULT_AGENT_PORT));
        assert!(!c.cmdline.as_str().contains("memtide.agent_port"));
        assert!(matches!(
            config_from_args(
                &args(&["--vsock-uds", "/tmp/v", "--guest-cid", "2"]),
                HostKvm::Hardware
            ),
            Err(ConfigError::GuestCid(2))
        ));
        let c = config_from_args(
            &args(&["--vsock-uds", "/tmp/v", "--agent-port", "6000"]),
            HostKvm::Hardware,
        )
        .expect("ok");
        assert!(c.cmdline.as_str().contains("memtide.agent_port=6000"));
        assert!(crate::cli::Cli::try_parse_from(["memtide", "run", "--guest-cid", "5"]).is_err());
    }

    #[test]
    fn the_balancer_runs_with_an_agent_channel_and_checks_its_settings() {
        let c = config_from_args(&args(&[]), HostKvm::Hardware).expect("ok");
        assert!(c.balancer.is_none(), "no agent channel, no balancer");
        let c = config_from_args(
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
        let c = config_from_args(
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
                config_from_args(&args(bad), HostKvm::Hardware).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn appended_arguments_come_after_memtides_own() {
        let c = config_from_args(
            &args(&[
                "--virtio-mem-mib",
                "256",
                "--append",
                "memhp_default_state=online_kernel",
            ]),
            HostKvm::Hardware,
        )
        .expect("ok");
        let line = c.cmdline.as_str();
        let ours = line.find("memhp_default_state=online ").expect("memtide's");
        let user = line
            .find("memhp_default_state=online_kernel")
            .expect("the user's");
        assert!(ours < user, "{line}");
    }

    #[test]
    fn virtio_mem_flags_make_the_device_and_its_command_line() {
        let c = config_from_args(&args(&[]), HostKvm::Hardware).expect("ok");
        assert!(c.virtio_mem.is_none());
        assert!(!c.cmdline.as_str().contains("online_policy"));
        let c =
            config_from_args(&args(&["--virtio-mem-mib", "512"]), HostKvm::Hardware).expect("ok");
        let v = c.virtio_mem.expect("virtio-mem");
        assert_eq!((v.size_mib, v.block_mib), (512, 2));
        assert!(c
            .cmdline
            .as_str()
            .contains("memory_hotplug.online_policy=auto-movable"));
        let c = config_from_args(
            &args(&["--virtio-mem-mib", "256", "--vsock-uds", "/tmp/v"]),
            HostKvm::Hardware,
        )
        .expect("ok");
        let b = c.balancer.expect("balancer");
        assert_eq!(
            (b.maximum_mib, b.budget_mib),
            (512, 512),
            "the balancer may plug the whole region"
        );
        for bad in [
            &["--virtio-mem-mib", "100"][..],
            &["--virtio-mem-mib", "512", "--virtio-mem-block-mib", "3"],
        ] {
            assert!(
                config_from_args(&args(bad), HostKvm::Hardware).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unknown_flags_are_a_parse_error() {
        assert!(crate::cli::Cli::try_parse_from(["memtide", "run", "--bogus"]).is_err());
    }
}
