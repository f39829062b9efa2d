//! vCPUs: one host thread each, running `KVM_RUN` and dispatching exits
//! (the hardware path). What the nested `kvm_pvm` host needs on top lies
//! in [`nested`], reached through one `Option<NestedAssist>` hook.

pub mod guest_virt;
pub mod handle;
pub mod insn;
pub mod kick;
pub mod nested;
pub mod profile;
pub mod snapshot;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{
    KVM_INTERNAL_ERROR_EMULATION, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use memtide_devices::bus::Bus;

pub use handle::VcpuHandle;
use nested::{GuestCpu, NestedAssist, NestedError};

use crate::memory::GuestMemoryMmap;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};

/// Errors that stop a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// `KVM_RUN` itself failed.
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
    /// A register access failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// The host's KVM failed to emulate an instruction, on a host where
    /// memtide does not step in.
    #[error(transparent)]
    NotEmulated(#[from] insn::NotEmulated),
    /// An assist of the nested host failed (or had no way past an
    /// instruction).
    #[error(transparent)]
    Nested(#[from] NestedError),
    /// KVM could not emulate an instruction whose bytes memtide cannot read.
    #[error(
        "KVM could not emulate the instruction at guest RIP {rip:#x}, and its bytes are not in \
         guest RAM"
    )]
    InstructionNotMapped {
        /// Guest RIP.
        rip: u64,
    },
    /// KVM reported an internal error other than an emulation failure.
    #[error("KVM internal error, suberror {suberror}")]
    Internal {
        /// KVM's suberror code.
        suberror: u32,
    },
    /// The hardware refused to enter the guest.
    #[error("VM entry failed, hardware reason {reason:#x}")]
    FailEntry {
        /// Hardware entry failure reason.
        reason: u64,
    },
    /// An exit memtide does not handle.
    #[error("unexpected vCPU exit: {0}")]
    UnexpectedExit(String),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Kvm { what, source }
}

/// Why a vCPU stopped the VM.
#[derive(Debug)]
pub enum VcpuStop {
    /// The guest reset the machine (KVM reset event).
    Reset,
    /// The guest powered off (KVM shutdown event).
    PowerOff,
    /// The vCPU triple-faulted; its registers, if KVM returned them.
    TripleFault(Option<snapshot::CpuSnapshot>),
    /// The vCPU failed.
    Failed(VcpuError),
}

/// Where a vCPU reports that the VM must stop (implemented by the VM's
/// outcome signal, `outcome::ExitSignal`).
pub trait StopSink: Send + Sync {
    /// vCPU `vcpu` stopped the VM for `stop`.
    fn vcpu_stopped(&self, vcpu: u8, stop: VcpuStop);
}

/// A configured vCPU, ready to run on its own thread.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    /// All guest RAM, hot-added and virtio-mem memory included: the
    /// guest's page tables may lie anywhere in it.
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    sink: Arc<dyn StopSink>,
    profile: Option<Arc<profile::GuestProfile>>,
    /// The nested host's assists; `None` on standard KVM.
    nested: Option<NestedAssist>,
    /// Set by [`VcpuHandle::kick`]: leave the loop at the next `EINTR`.
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Vcpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The stop sink is a trait object without `Debug`.
        f.debug_struct("Vcpu")
            .field("id", &self.id)
            .field("fd", &self.fd)
            .field("profile", &self.profile)
            .field("nested", &self.nested)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl Vcpu {
    /// Wraps a configured vCPU file descriptor; `nested` carries the nested
    /// host's assists (`None` on standard KVM).
    pub fn new(
        id: u8,
        fd: VcpuFd,
        mem: GuestMemoryAtomic<GuestMemoryMmap>,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        sink: Arc<dyn StopSink>,
        nested: Option<NestedAssist>,
    ) -> Self {
        Self {
            id,
            fd,
            mem,
            pio,
            mmio,
            sink,
            profile: None,
            nested,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records the guest RIP whenever the profiler interrupts this vCPU.
    pub fn set_profile(&mut self, profile: Arc<profile::GuestProfile>) {
        self.profile = Some(profile);
    }

    /// Starts the vCPU on a thread named `vcpuN` ([`kick::install_handler`]
    /// must have run).
    pub fn spawn(self) -> std::io::Result<VcpuHandle> {
        let (id, stop) = (self.id, self.stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || self.run())?;
        Ok(VcpuHandle::new(id, thread, stop))
    }

    /// Runs until the VM stops, this vCPU fails, or it is kicked to stop;
    /// reports why it stopped the VM.
    fn run(mut self) {
        let target = kick::KickTarget::publish(&mut self.fd);
        let stop = loop {
            match self.run_once() {
                Ok(Step::Continue) => continue,
                Ok(Step::Kicked) => break None,
                Ok(Step::Stop(stop)) => break Some(stop),
                Err(error) => break Some(VcpuStop::Failed(error)),
            }
        };
        drop(target);
        if let Some(stop) = stop {
            self.sink.vcpu_stopped(self.id, stop);
        }
    }

    /// One `KVM_RUN` and the handling of its exit.
    fn run_once(&mut self) -> Result<Step, VcpuError> {
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // Clear before looking at `stop`, so a kick that lands
                // after the look still makes the next KVM_RUN return.
                self.fd.set_kvm_immediate_exit(0);
                if self.stop.load(Ordering::SeqCst) {
                    return Ok(Step::Kicked);
                }
                if let Some(profile) = &self.profile {
                    if let Ok(regs) = self.fd.get_regs() {
                        profile.record(regs.rip);
                    }
                }
                return Ok(Step::Continue);
            }
            Err(e) => return Err(VcpuError::Run(e)),
        };
        let exit_is_debug = matches!(exit, VcpuExit::Debug(_));
        let mut emulation_failed = false;
        match exit {
            VcpuExit::Debug(_) => {}
            VcpuExit::IoOut(port, data) => {
                self.pio.write(port.into(), data);
            }
            VcpuExit::IoIn(port, data) => {
                self.pio.read(port.into(), data);
            }
            VcpuExit::MmioRead(addr, data) => {
                if !self.mmio.read(addr, data) {
                    log::debug!("vcpu{}: read of unmapped MMIO {addr:#x}", self.id);
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                if !self.mmio.write(addr, data) {
                    log::debug!("vcpu{}: write to unmapped MMIO {addr:#x}", self.id);
                }
            }
            VcpuExit::Hlt => {}
            VcpuExit::Shutdown => return Ok(Step::Stop(VcpuStop::TripleFault(self.snapshot()))),
            VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, _) => {
                return Ok(Step::Stop(VcpuStop::PowerOff))
            }
            VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, _) => {
                return Ok(Step::Stop(VcpuStop::Reset))
            }
            VcpuExit::FailEntry(reason, _) => return Err(VcpuError::FailEntry { reason }),
            VcpuExit::InternalError => {
                // SAFETY: KVM filled the `internal` member of the exit union
                // for a KVM_EXIT_INTERNAL_ERROR exit, which this is.
                let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                if suberror != KVM_INTERNAL_ERROR_EMULATION {
                    return Err(VcpuError::Internal { suberror });
                }
                emulation_failed = true;
            }
            other => return Err(VcpuError::UnexpectedExit(format!("{other:?}"))),
        }
        let Some(nested) = &mut self.nested else {
            if emulation_failed {
                return Err(self.not_emulated());
            }
            if exit_is_debug {
                memtide_log_limit::warn_limited!(
                    "vcpu{}: debug exit without an armed gate",
                    self.id
                );
            }
            return Ok(Step::Continue);
        };
        let mem = self.mem.memory();
        let cpu = GuestCpu {
            id: self.id,
            fd: &self.fd,
            mem: &mem,
        };
        if emulation_failed {
            nested.emulation_fallback(&cpu)?;
        }
        if exit_is_debug {
            nested.at_breakpoint(&cpu)?;
        } else {
            nested.after_exit(&cpu)?;
        }
        Ok(Step::Continue)
    }

    /// The error for an instruction the host's KVM could not emulate,
    /// naming it as far as its bytes can be read.
    fn not_emulated(&self) -> VcpuError {
        let regs = match self.fd.get_regs() {
            Ok(r) => r,
            Err(e) => return kvm("get registers")(e),
        };
        let sregs = match self.fd.get_sregs() {
            Ok(s) => s,
            Err(e) => return kvm("get special registers")(e),
        };
        let fpu = match self.fd.get_fpu() {
            Ok(f) => f,
            Err(e) => return kvm("get FPU state")(e),
        };
        let bitness = insn::bitness(sregs.cs.l, sregs.cs.db);
        let linear = if bitness == 64 {
            regs.rip
        } else {
            sregs.cs.base.wrapping_add(regs.rip)
        };
        let Some(bytes) =
            guest_virt::read_virt(&self.fd, &self.mem.memory(), linear, insn::MAX_INSN_LEN)
        else {
            return VcpuError::InstructionNotMapped { rip: regs.rip };
        };
        let ctx = insn::CpuContext {
            rip: regs.rip,
            bitness,
            fpu_status: fpu.fsw,
            fpu_control: fpu.fcw,
        };
        insn::not_emulated(&bytes, ctx).into()
    }

    /// The vCPU's registers and pending exception, for a crash report
    /// (`None` if KVM cannot return them).
    fn snapshot(&self) -> Option<snapshot::CpuSnapshot> {
        let regs = self.fd.get_regs().ok()?;
        let sregs = self.fd.get_sregs().ok()?;
        let events = self.fd.get_vcpu_events().ok();
        Some(snapshot::CpuSnapshot::new(&regs, &sregs, events.as_ref()))
    }
}

/// What the run loop does after one `KVM_RUN`.
enum Step {
    /// Run again.
    Continue,
    /// The VMM asked this vCPU to stop.
    Kicked,
    /// The VM must stop.
    Stop(VcpuStop),
}
