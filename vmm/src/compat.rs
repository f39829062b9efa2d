//! Detection of hosts whose KVM needs the guest kernel's help, and the
//! command-line options that give it.
//!
//! On the nested `kvm_pvm` host the guest kernel runs under an instruction
//! emulator that rejects `xrstor`, `cmpxchg16b`, `popcnt` and more, and
//! CPUID masking does not reach guest kernel code. The reliable lever is
//! the guest command line: `noxsave` and `clearcpuid=`.

use std::path::Path;

/// Where the nested page-table KVM module shows up in sysfs.
pub const PVM_MODULE_PATH: &str = "/sys/module/kvm_pvm";

/// Guest command-line options for the nested host.
pub const NESTED_HOST_CMDLINE: &str = "noxsave clearcpuid=cx16,popcnt,rdrand,rdseed,fsgsbase,\
smap,smep,invpcid,pcid,avx,avx2,avx512f,erms,fsrm,rdpid,umip,xsaveopt,xsaves,xsavec,\
clflushopt,clwb";

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

    /// Whether memtide steps in when this host's KVM cannot emulate an
    /// instruction (the emulation fallback, `vcpu/emulate.rs`). Only the
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
        let extra = HostKvm::NestedPvm.guest_cmdline().expect("options");
        assert!(extra.contains("noxsave"));
        assert!(extra.contains("clearcpuid=cx16,popcnt"));
        assert!(!extra.contains(' ') || extra.split(' ').count() == 2);
    }

    #[test]
    fn only_the_nested_host_gets_the_emulation_fallback() {
        assert!(!HostKvm::Hardware.emulation_fallback());
        assert!(HostKvm::NestedPvm.emulation_fallback());
    }
}
