//! Which KVM this host offers (hardware, or the nested `kvm_pvm` that needs
//! the guest kernel's help), and the guest command-line options that help.
//! (Not to be confused with `host_info.rs`, the one-line host description
//! printed with benchmark figures.)
//!
//! On the nested `kvm_pvm` host the guest kernel runs under an instruction
//! emulator that rejects `xrstor`, `cmpxchg16b`, `popcnt` and more, and
//! CPUID masking does not reach guest kernel code. The reliable lever is
//! the guest command line: `clearcpuid=`.
//!
//! The guest kernel keeps XSAVE on (no `noxsave`): guest user code on that
//! host runs natively with the host's `XCR0`, so it can use AVX and
//! AVX-512 whatever the guest kernel enables, and only a kernel that saves
//! those registers on a context switch keeps one process's vector state
//! from leaking into the next (docs/nested-host.md). memtide carries out
//! the kernel's `xsave64`/`xrstor64` itself (`vcpu/nested/xstate.rs`), in the
//! standard form: `xsaveopt`, `xsavec` and `xsaves` are cleared, and so is
//! `amx_tile` (AMX state does not fit KVM's 4096-byte XSAVE region).

use std::path::Path;

/// Where the nested page-table KVM module shows up in sysfs.
pub const PVM_MODULE_PATH: &str = "/sys/module/kvm_pvm";

/// Guest command-line options for the nested host. The kernel reads at most
/// 127 characters of `clearcpuid=`'s value (and only the last
/// `clearcpuid=`).
pub const NESTED_HOST_CMDLINE: &str = "clearcpuid=cx16,popcnt,rdrand,rdseed,fsgsbase,\
smap,smep,invpcid,pcid,erms,fsrm,rdpid,umip,xsaveopt,xsaves,xsavec,clflushopt,clwb,amx_tile";

/// The guest agent's report interval memtide asks for on the nested host,
/// ms (the agent's own default is 250). Each report makes the guest kernel
/// produce `/proc/meminfo`, `/proc/pressure/memory` and `/proc/uptime`,
/// which that host emulates: a 128 MiB guest doing nothing else spent 54 %
/// of a host core on its agent at 250 ms (2026-12-03, nested-intel-b,
/// `docs/nested-host.md`), slowing every workload beside it. The balancer
/// ticks every 500 ms and takes a report as stale after 5 s.
pub const NESTED_HOST_AGENT_INTERVAL_MS: u64 = 1000;

/// The kind of KVM this host offers, as far as memtide cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKvm {
    /// Hardware virtualization (VT-x or AMD-V), or anything not known to need help.
    Hardware,
    /// The nested page-table KVM (`kvm_pvm`).
    NestedPvm,
}

impl HostKvm {
    /// Detects the host's KVM flavour from sysfs.
    pub fn detect() -> Self {
        Self::detect_at(Path::new(PVM_MODULE_PATH))
    }

    /// Detection against an explicit sysfs path (for tests).
    pub fn detect_at(pvm_module: &Path) -> Self {
        if pvm_module.exists() {
            HostKvm::NestedPvm
        } else {
            HostKvm::Hardware
        }
    }

    /// Extra guest command-line options this host needs, if any.
    pub fn guest_cmdline(self) -> Option<&'static str> {
        match self {
            HostKvm::Hardware => None,
            HostKvm::NestedPvm => Some(NESTED_HOST_CMDLINE),
        }
    }

    /// The guest agent's report interval to ask for on this host, ms, if
    /// not the agent's default.
    pub fn agent_interval_ms(self) -> Option<u64> {
        match self {
            HostKvm::Hardware => None,
            HostKvm::NestedPvm => Some(NESTED_HOST_AGENT_INTERVAL_MS),
        }
    }

    /// Whether memtide steps in when this host's KVM cannot emulate an
    /// instruction (the emulation fallback, `vcpu/nested/emulate.rs`). Only the
    /// nested host: anywhere else such an instruction stops the VM with an
    /// error naming it.
    pub fn emulation_fallback(self) -> bool {
        match self {
            HostKvm::Hardware => false,
            HostKvm::NestedPvm => true,
        }
    }

    /// A short description for logs and benchmark reports.
    pub fn describe(self) -> &'static str {
        match self {
            HostKvm::Hardware => "hardware KVM",
            HostKvm::NestedPvm => "nested KVM (kvm_pvm)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_follows_the_module_directory() {
        let dir = std::env::temp_dir().join(format!("memtide-compat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(HostKvm::detect_at(&dir), HostKvm::NestedPvm);
        assert_eq!(HostKvm::detect_at(&dir.join("absent")), HostKvm::Hardware);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn only_the_nested_host_changes_the_command_line() {
        assert_eq!(HostKvm::Hardware.guest_cmdline(), None);
        assert_eq!(HostKvm::Hardware.agent_interval_ms(), None);
        assert_eq!(HostKvm::NestedPvm.agent_interval_ms(), Some(1000));
        let extra = HostKvm::NestedPvm.guest_cmdline().expect("options");
        assert!(extra.contains("clearcpuid=cx16,popcnt"));
        assert!(!extra.contains(' '));
    }

    #[test]
    fn the_guest_kernel_keeps_xsave_in_its_standard_form() {
        let extra = HostKvm::NestedPvm.guest_cmdline().expect("options");
        assert!(!extra.contains("noxsave"), "{extra}");
        let list = extra.strip_prefix("clearcpuid=").expect("clearcpuid only");
        // The kernel keeps only the first 127 characters of the list.
        assert!(list.len() <= 127, "{} characters", list.len());
        let cleared: Vec<&str> = list.split(',').collect();
        for feature in ["xsaveopt", "xsavec", "xsaves", "amx_tile"] {
            assert!(cleared.contains(&feature), "{feature} must be cleared");
        }
        for feature in ["avx", "avx2", "avx512f"] {
            assert!(
                !cleared.contains(&feature),
                "{feature} must stay on so the kernel saves its registers"
            );
        }
    }

    #[test]
    fn only_the_nested_host_gets_the_emulation_fallback() {
        assert!(!HostKvm::Hardware.emulation_fallback());
        assert!(HostKvm::NestedPvm.emulation_fallback());
    }
}
