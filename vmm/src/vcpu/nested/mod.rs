//! Every assist the nested `kvm_pvm` host needs from memtide, behind one
//! hook: a vCPU holds an `Option<NestedAssist>` that is `None` on standard
//! KVM, so the hardware run loop in `vcpu/mod.rs` never reaches this code
//! there.
//!
//! - [`host_kvm`]: detecting the nested host, and the guest command-line
//!   options it needs;
//! - [`gate`] with [`syscall_gate`]: completing guest system calls whose
//!   `syscall` does not switch to kernel mode (gate probe, breakpoint);
//! - [`fallback`] with [`emulate`], [`xstate`] and [`pagewalk`]: the
//!   emulation fallback for instructions the host's KVM cannot emulate.

pub mod emulate;
pub mod fallback;
pub mod gate;
pub mod host_kvm;
pub mod pagewalk;
pub mod syscall_gate;
pub mod xstate;

pub use host_kvm::HostKvm;

use kvm_ioctls::VcpuFd;

use crate::memory::GuestMemoryMmap;

/// Errors from the nested host's assists; each stops the vCPU.
#[derive(Debug, thiserror::Error)]
pub enum NestedError {
    /// A register access failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// The fallback has no way past the instruction.
    #[error(transparent)]
    Emulation(#[from] emulate::EmulationError),
    /// Guest memory at a virtual address memtide needed to read is not in
    /// guest RAM.
    #[error("guest virtual address {addr:#x} does not map to guest RAM")]
    NotMapped {
        /// The guest-virtual address.
        addr: u64,
    },
    /// KVM could not emulate an instruction whose bytes memtide cannot read.
    #[error(
        "KVM could not emulate the instruction at guest RIP {rip:#x}, and its bytes are not in \
         guest RAM"
    )]
    InstructionNotMapped {
        /// Guest RIP.
        rip: u64,
    },
    /// memtide could not carry out the guest kernel's `xsave64` or
    /// `xrstor64` (see [`xstate`]).
    #[error("cannot emulate {what} at guest RIP {rip:#x}: {reason}")]
    Xstate {
        /// The instruction.
        what: &'static str,
        /// Guest RIP.
        rip: u64,
        /// Why not.
        reason: String,
    },
}

/// The error constructor for a failed KVM call doing `what`.
fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> NestedError {
    move |source| NestedError::Kvm { what, source }
}

/// The vCPU an assist works on.
#[derive(Debug)]
pub struct GuestCpu<'a> {
    /// The vCPU index, for logs.
    pub id: u8,
    /// Its KVM file descriptor.
    pub fd: &'a VcpuFd,
    /// Guest RAM.
    pub mem: &'a GuestMemoryMmap,
}

impl GuestCpu<'_> {
    /// Reads up to `len` bytes at guest-virtual `linear`.
    fn read_virt(&self, linear: u64, len: usize) -> Result<Vec<u8>, NestedError> {
        crate::vcpu::guest_virt::read_virt(self.fd, self.mem, linear, len)
            .ok_or(NestedError::NotMapped { addr: linear })
    }
}

/// The nested host's assists for one vCPU.
#[derive(Debug, Default)]
pub struct NestedAssist {
    /// The syscall gate, if guest system calls are completed here.
    gate: Option<gate::GateState>,
    /// The emulation fallback's cached state.
    fallback: fallback::FallbackState,
}

impl NestedAssist {
    /// The assists for a vCPU on host `host`: `None` on anything but the
    /// nested `kvm_pvm` host. `complete_syscalls` arms the syscall gate.
    pub fn for_host(host: HostKvm, complete_syscalls: bool) -> Option<Self> {
        host.emulation_fallback().then(|| Self {
            gate: complete_syscalls.then(gate::GateState::default),
            fallback: fallback::FallbackState::default(),
        })
    }

    /// After an ordinary exit: arms (or re-arms) the syscall gate once the
    /// guest kernel is ready for it (rate-limited).
    pub fn after_exit(&mut self, cpu: &GuestCpu<'_>) -> Result<(), NestedError> {
        match &mut self.gate {
            Some(gate) => gate.probe(cpu),
            None => Ok(()),
        }
    }

    /// After a debug exit: the vCPU stopped at the gate's breakpoint.
    pub fn at_breakpoint(&mut self, cpu: &GuestCpu<'_>) -> Result<(), NestedError> {
        match &self.gate {
            Some(gate) => gate.at_breakpoint(cpu),
            None => {
                memtide_log_limit::warn_limited!(
                    "vcpu{}: debug exit without an armed gate",
                    cpu.id
                );
                Ok(())
            }
        }
    }

    /// The host's KVM could not emulate the instruction at RIP: step in.
    pub fn emulation_fallback(&mut self, cpu: &GuestCpu<'_>) -> Result<(), NestedError> {
        self.fallback.run(cpu)
    }
}
