//! vCPUs: one host thread each, running `KVM_RUN` and dispatching exits.

pub mod emulate;
pub mod gdt;
pub mod profile;
pub mod setup;

use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::kvm_vcpu_events;
use kvm_ioctls::{VcpuExit, VcpuFd};
use memtide_devices::bus::Bus;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;
use crate::outcome::{ExitSignal, VmOutcome};

/// `KVM_INTERNAL_ERROR_EMULATION`: the host could not emulate an instruction.
const INTERNAL_ERROR_EMULATION: u32 = 1;
/// The zero flag in RFLAGS.
const RFLAGS_ZF: u64 = 1 << 6;
/// KVM system event types.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const SYSTEM_EVENT_RESET: u32 = 2;

/// Errors that stop a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// `KVM_RUN` itself failed.
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
    /// A register access around the emulation fallback failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being done.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// The host's KVM failed to emulate an instruction and so did memtide.
    #[error(transparent)]
    Emulation(#[from] emulate::EmulationError),
    /// The instruction bytes at RIP are not in guest RAM.
    #[error("guest RIP {rip:#x} does not map to guest RAM")]
    RipNotMapped {
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

/// A configured vCPU, ready to run on its own thread.
pub struct Vcpu {
    id: u8,
    fd: VcpuFd,
    mem: GuestMemoryMmap,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    exit: Arc<ExitSignal>,
    profile: Option<Arc<profile::GuestProfile>>,
}

impl Vcpu {
    /// Wraps a configured vCPU file descriptor.
    pub fn new(
        id: u8,
        fd: VcpuFd,
        mem: GuestMemoryMmap,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        exit: Arc<ExitSignal>,
    ) -> Self {
        Self {
            id,
            fd,
            mem,
            pio,
            mmio,
            exit,
            profile: None,
        }
    }

    /// Records the guest RIP whenever the profiler interrupts this vCPU.
    pub fn set_profile(&mut self, profile: Arc<profile::GuestProfile>) {
        self.profile = Some(profile);
    }

    /// Starts the vCPU on a thread named `vcpuN`.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .spawn(move || self.run())
    }

    /// Runs until the VM stops or this vCPU fails; reports the outcome.
    fn run(mut self) {
        let id = self.id;
        let outcome = loop {
            match self.run_once() {
                Ok(None) => continue,
                Ok(Some(outcome)) => break outcome,
                Err(error) => break VmOutcome::VcpuFailed { vcpu: id, error },
            }
        };
        self.exit.report(outcome);
    }

    /// One `KVM_RUN`; returns an outcome when the VM must stop.
    fn run_once(&mut self) -> Result<Option<VmOutcome>, VcpuError> {
        let exit = match self.fd.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                if let Some(profile) = &self.profile {
                    if let Ok(regs) = self.fd.get_regs() {
                        profile.record(regs.rip);
                    }
                }
                return Ok(None);
            }
            Err(e) => return Err(VcpuError::Run(e)),
        };
        match exit {
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
            VcpuExit::Shutdown => return Ok(Some(VmOutcome::TripleFault { vcpu: self.id })),
            VcpuExit::SystemEvent(SYSTEM_EVENT_SHUTDOWN, _) => {
                return Ok(Some(VmOutcome::PowerOff))
            }
            VcpuExit::SystemEvent(SYSTEM_EVENT_RESET, _) => return Ok(Some(VmOutcome::Reset)),
            VcpuExit::FailEntry(reason, _) => return Err(VcpuError::FailEntry { reason }),
            VcpuExit::InternalError => {
                // SAFETY: KVM filled the `internal` member of the exit union
                // for a KVM_EXIT_INTERNAL_ERROR exit, which this is.
                let suberror = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                if suberror != INTERNAL_ERROR_EMULATION {
                    return Err(VcpuError::Internal { suberror });
                }
                self.emulation_fallback()?;
            }
            other => return Err(VcpuError::UnexpectedExit(format!("{other:?}"))),
        }
        Ok(None)
    }

    /// Handles an instruction the host's KVM could not emulate.
    fn emulation_fallback(&mut self) -> Result<(), VcpuError> {
        let mut regs = self.fd.get_regs().map_err(kvm("get registers"))?;
        let sregs = self.fd.get_sregs().map_err(kvm("get special registers"))?;
        let fpu = self.fd.get_fpu().map_err(kvm("get FPU state"))?;
        let bitness = emulate::bitness(sregs.cs.l, sregs.cs.db);
        let linear = if bitness == 64 {
            regs.rip
        } else {
            sregs.cs.base.wrapping_add(regs.rip)
        };
        let bytes = self.read_code(linear)?;
        let ctx = emulate::CpuContext {
            rip: regs.rip,
            bitness,
            fpu_status: fpu.fsw,
            fpu_control: fpu.fcw,
        };
        let plan = emulate::plan(&bytes, ctx)?;
        log::debug!("vcpu{}: fallback {plan:?} at {:#x}", self.id, regs.rip);
        let (len, vector) = match plan {
            emulate::Fallback::SkipAndInject { len, vector } => (len, Some(vector)),
            emulate::Fallback::Skip { len } => (len, None),
            emulate::Fallback::SkipSetZf { len } => {
                regs.rflags |= RFLAGS_ZF;
                (len, None)
            }
            emulate::Fallback::Inject { vector } => (0, Some(vector)),
        };
        if len > 0 {
            regs.rip = regs.rip.wrapping_add(len);
            self.fd.set_regs(&regs).map_err(kvm("set registers"))?;
        }
        if let Some(vector) = vector {
            self.inject_exception(vector)?;
        }
        Ok(())
    }

    fn inject_exception(&self, vector: u8) -> Result<(), VcpuError> {
        let mut events: kvm_vcpu_events =
            self.fd.get_vcpu_events().map_err(kvm("get vCPU events"))?;
        events.exception.injected = 1;
        events.exception.nr = vector;
        events.exception.has_error_code = 0;
        events.exception.error_code = 0;
        self.fd
            .set_vcpu_events(&events)
            .map_err(kvm("inject an exception"))
    }

    /// Reads up to [`emulate::MAX_INSN_LEN`] bytes at guest-virtual `linear`,
    /// following the guest's page tables page by page.
    fn read_code(&self, linear: u64) -> Result<Vec<u8>, VcpuError> {
        let mut out = Vec::with_capacity(emulate::MAX_INSN_LEN);
        let mut va = linear;
        while out.len() < emulate::MAX_INSN_LEN {
            let tr = match self.fd.translate_gva(va) {
                Ok(tr) if tr.valid != 0 => tr,
                _ => break,
            };
            let in_page = 0x1000 - (va & 0xfff) as usize;
            let want = in_page.min(emulate::MAX_INSN_LEN - out.len());
            let mut buf = vec![0u8; want];
            if self
                .mem
                .read_slice(&mut buf, GuestAddress(tr.physical_address))
                .is_err()
            {
                break;
            }
            out.extend_from_slice(&buf);
            va = va.wrapping_add(want as u64);
        }
        if out.is_empty() {
            return Err(VcpuError::RipNotMapped { rip: linear });
        }
        Ok(out)
    }
}
