//! A one-line description of the host, printed with every benchmark figure.

use crate::vcpu::nested::HostKvm;

/// What a benchmark ran on.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Host kernel release.
    pub kernel: String,
    /// KVM flavour.
    pub kvm: HostKvm,
}

impl HostInfo {
    /// Reads the description from /proc and sysfs.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown kernel".into());
        Self {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel,
            kvm: HostKvm::detect(),
        }
    }
}

impl std::fmt::Display for HostInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} x {}, Linux {}, {}",
            self.cpus,
            self.cpu_model,
            self.kernel,
            self.kvm.describe()
        )
    }
}
