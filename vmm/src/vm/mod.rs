//! A VM: built from a [`VmConfig`] by a [`VmmBuilder`] into a [`Vmm`] that
//! owns its devices and vCPU threads, runs until the guest stops, and then
//! stops and joins every vCPU.

pub mod builder;
pub mod stop_watcher;
pub mod vmm;

use kvm_ioctls::{Cap, Kvm};
use memtide_devices::serial::GuestFault;

pub use builder::VmmBuilder;
pub use vmm::Vmm;

use crate::arch::x86_64::boot::BootError;
use crate::arch::x86_64::setup::SetupError;
use crate::config::VmConfig;
use crate::outcome::VmOutcome;

/// Errors from building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm missing.
    #[error("/dev/kvm does not exist: load the kvm module (kvm_intel or kvm_amd) or run on a host with virtualization")]
    NoKvm,
    /// /dev/kvm not accessible.
    #[error("permission denied opening /dev/kvm: run as root or add your user to the 'kvm' group")]
    KvmPermission,
    /// Other failure opening /dev/kvm.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// A capability memtide needs is missing.
    #[error("this host's KVM lacks a capability memtide needs: {0:?}")]
    MissingCap(Cap),
    /// A KVM ioctl failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// Guest RAM.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// Kernel, initramfs, zero page, MP table or boot tables.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// vCPU set-up.
    #[error("vCPU set-up: {0}")]
    VcpuSetup(#[from] SetupError),
    /// An eventfd or thread could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Creating or placing devices (including memory hot-add and ACPI).
    #[error(transparent)]
    Devices(#[from] crate::device_manager::DeviceManagerError),
    /// The control API.
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
    /// Device entries made the command line invalid.
    #[error("kernel command line: {0}")]
    CmdlineTooLong(#[from] crate::kernel_cmdline::CmdlineError),
    /// The in-process balancer.
    #[error(transparent)]
    Balance(#[from] crate::balance::BalanceError),
    /// Dropping capabilities or installing the seccomp filter.
    #[error("sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The event loop failed.
    #[error("event loop: {0}")]
    EventLoop(event_manager::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> VmError {
    move |source| VmError::Io { what, source }
}

/// How a VM run ended.
#[derive(Debug)]
pub struct RunReport {
    /// The outcome the vCPUs or devices reported.
    pub outcome: VmOutcome,
    /// Whether the guest kernel printed a panic on its console.
    pub panicked: bool,
    /// Guest processes that failed, as seen on the console: the `--cmd`
    /// command's non-zero status, processes a signal killed (first
    /// [`memtide_devices::serial::MAX_FAULTS`]).
    pub guest_faults: Vec<GuestFault>,
    /// How many more guest faults were seen than `guest_faults` holds.
    pub guest_faults_dropped: usize,
}

/// Opens /dev/kvm with errors a user can act on.
pub fn open_kvm() -> Result<Kvm, VmError> {
    Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => VmError::NoKvm,
        libc::EACCES | libc::EPERM => VmError::KvmPermission,
        _ => VmError::OpenKvm(e),
    })
}

/// Builds the VM described by `config`, boots it, and waits for it to stop.
pub fn run(config: &VmConfig) -> Result<RunReport, VmError> {
    VmmBuilder::new(config).build()?.run()
}
