//! vCPUs: one host thread each, running `KVM_RUN` and dispatching exits.

pub mod emulate;
pub mod gdt;
pub mod pagewalk;
pub mod profile;
pub mod setup;
pub mod snapshot;
pub mod syscall_gate;
pub mod xstate;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use iced_x86::Register;
use kvm_bindings::{
    kvm_guest_debug, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, Msrs,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use memtide_devices::bus::Bus;
use vm_memory::{Bytes, GuestAddress};

use crate::compat::HostKvm;
use crate::memory::GuestMemoryMmap;
use crate::outcome::{ExitSignal, VmOutcome};

/// `KVM_INTERNAL_ERROR_EMULATION`: the host could not emulate an instruction.
const INTERNAL_ERROR_EMULATION: u32 = 1;
/// The zero flag in RFLAGS.
const RFLAGS_ZF: u64 = 1 << 6;
/// `MSR_LSTAR`: the 64-bit `syscall` entry point.
const MSR_LSTAR: u32 = 0xc000_0082;
/// `MSR_SYSCALL_MASK`: RFLAGS bits `syscall` clears.
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// `EFER.LMA`: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// `CR0.WP`: supervisor writes honour read-only pages.
const CR0_WP: u64 = 1 << 16;
/// `CR4.OSXSAVE`: the XSAVE instructions are enabled.
const CR4_OSXSAVE: u64 = 1 << 18;
/// Vector of the invalid-opcode exception (#UD).
const VECTOR_UD: u8 = 6;
/// Vector of the general-protection exception (#GP).
const VECTOR_GP: u8 = 13;
/// Vector of the page-fault exception (#PF).
const VECTOR_PF: u8 = 14;
/// DR7: enable breakpoint 0 (local), execution, 1 byte; bit 10 reads as 1.
const DR7_BP0_EXEC: u64 = (1 << 0) | (1 << 10);
/// How often an unarmed syscall gate looks for the guest's entry points.
const GATE_PROBE_UNARMED: Duration = Duration::from_millis(20);
/// How often an armed gate checks that they have not moved.
const GATE_PROBE_ARMED: Duration = Duration::from_secs(1);
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
    /// The host's KVM failed to emulate an instruction and memtide did not
    /// (or could not) step in.
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

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |source| VcpuError::Kvm { what, source }
}

/// The value of a 64-bit general-purpose register, or of the FS/GS base,
/// for resolving a memory operand.
fn register_value(regs: &kvm_regs, sregs: &kvm_sregs, r: Register) -> Option<u64> {
    Some(match r {
        Register::RAX => regs.rax,
        Register::RBX => regs.rbx,
        Register::RCX => regs.rcx,
        Register::RDX => regs.rdx,
        Register::RSI => regs.rsi,
        Register::RDI => regs.rdi,
        Register::RSP => regs.rsp,
        Register::RBP => regs.rbp,
        Register::R8 => regs.r8,
        Register::R9 => regs.r9,
        Register::R10 => regs.r10,
        Register::R11 => regs.r11,
        Register::R12 => regs.r12,
        Register::R13 => regs.r13,
        Register::R14 => regs.r14,
        Register::R15 => regs.r15,
        Register::FS => sregs.fs.base,
        Register::GS => sregs.gs.base,
        _ => return None,
    })
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
    gate: Option<GateState>,
    /// Decides whether the emulation fallback may run ([`emulate::decide`]).
    host: HostKvm,
    /// Where the XSAVE components lie, from this vCPU's CPUID (read at the
    /// first emulated `xsave64`/`xrstor64`).
    xstate_layout: Option<xstate::Layout>,
}

/// The syscall gate of one vCPU (see [`syscall_gate`]).
#[derive(Debug, Default)]
struct GateState {
    armed: Option<syscall_gate::Gate>,
    last_probe: Option<Instant>,
    refused: bool,
}

impl Vcpu {
    /// Wraps a configured vCPU file descriptor on a host of kind `host`
    /// (only [`HostKvm::NestedPvm`] gets the emulation fallback).
    pub fn new(
        id: u8,
        fd: VcpuFd,
        mem: GuestMemoryMmap,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        exit: Arc<ExitSignal>,
        host: HostKvm,
    ) -> Self {
        Self {
            id,
            fd,
            mem,
            pio,
            mmio,
            exit,
            profile: None,
            gate: None,
            host,
            xstate_layout: None,
        }
    }

    /// Completes the guest's system calls on a host whose `syscall` does not
    /// switch to kernel mode (the nested `kvm_pvm` host; see
    /// [`syscall_gate`]).
    pub fn complete_syscalls(&mut self) {
        self.gate = Some(GateState::default());
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
        let exit_is_debug = matches!(exit, VcpuExit::Debug(_));
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
            VcpuExit::Shutdown => {
                return Ok(Some(VmOutcome::TripleFault {
                    vcpu: self.id,
                    state: self.snapshot(),
                }))
            }
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
        if exit_is_debug {
            self.at_breakpoint()?;
        } else {
            self.probe_gate()?;
        }
        Ok(None)
    }

    /// Arms (or re-arms) the syscall gate once the guest kernel has set up
    /// its page fault entry and `MSR_LSTAR`; rate-limited.
    fn probe_gate(&mut self) -> Result<(), VcpuError> {
        let Some(state) = &self.gate else {
            return Ok(());
        };
        let every = if state.armed.is_some() {
            GATE_PROBE_ARMED
        } else {
            GATE_PROBE_UNARMED
        };
        if state.refused || state.last_probe.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        let found = self.find_gate();
        let Some(state) = &mut self.gate else {
            return Ok(());
        };
        state.last_probe = Some(Instant::now());
        let gate = match found {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(()),
            Err(e) => {
                log::warn!(
                    "vcpu{}: cannot complete guest system calls on this host: {e}",
                    self.id
                );
                state.refused = true;
                return Ok(());
            }
        };
        if state.armed == Some(gate) {
            return Ok(());
        }
        let mut dbg = kvm_guest_debug {
            control: kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_USE_HW_BP,
            ..Default::default()
        };
        dbg.arch.debugreg[0] = gate.pf_entry;
        dbg.arch.debugreg[7] = DR7_BP0_EXEC;
        self.fd
            .set_guest_debug(&dbg)
            .map_err(kvm("set the syscall gate breakpoint"))?;
        log::info!(
            "vcpu{}: syscall gate armed: page fault entry {:#x}, LSTAR {:#x}",
            self.id,
            gate.pf_entry,
            gate.lstar
        );
        state.armed = Some(gate);
        Ok(())
    }

    /// The guest's page fault entry and syscall MSRs, once it is in long
    /// mode with both set up.
    fn find_gate(&self) -> Result<Option<syscall_gate::Gate>, syscall_gate::GateError> {
        let Ok(sregs) = self.fd.get_sregs() else {
            return Ok(None);
        };
        if sregs.efer & EFER_LMA == 0 || u32::from(sregs.idt.limit) < 15 * 16 - 1 {
            return Ok(None);
        }
        let mut desc = [0u8; 16];
        let Ok(bytes) = self.read_virt(sregs.idt.base.wrapping_add(14 * 16), 16) else {
            return Ok(None);
        };
        if bytes.len() < 16 {
            return Ok(None);
        }
        desc.copy_from_slice(&bytes[..16]);
        let pf_entry = syscall_gate::gate_target(&desc);
        // Only a kernel-half address is the real handler.
        if pf_entry < 0xffff_8000_0000_0000 {
            return Ok(None);
        }
        let Ok(mut msrs) = Msrs::from_entries(&[
            kvm_msr_entry {
                index: MSR_LSTAR,
                ..Default::default()
            },
            kvm_msr_entry {
                index: MSR_SYSCALL_MASK,
                ..Default::default()
            },
        ]) else {
            return Ok(None);
        };
        if self.fd.get_msrs(&mut msrs).ok() != Some(2) {
            return Ok(None);
        }
        let (lstar, sfmask) = (msrs.as_slice()[0].data, msrs.as_slice()[1].data);
        if lstar == 0 {
            return Ok(None);
        }
        let Ok(code) = self.read_virt(pf_entry, emulate::MAX_INSN_LEN) else {
            return Ok(None);
        };
        let step = syscall_gate::step_for(&code, pf_entry)?;
        Ok(Some(syscall_gate::Gate {
            pf_entry,
            lstar,
            sfmask,
            step,
        }))
    }

    /// The vCPU stopped at the gate's breakpoint: finish a broken
    /// `syscall`, or let an ordinary page fault go on.
    fn at_breakpoint(&mut self) -> Result<(), VcpuError> {
        let Some(gate) = self.gate.as_ref().and_then(|g| g.armed) else {
            log::warn!("vcpu{}: debug exit without an armed gate", self.id);
            return Ok(());
        };
        let mut regs = self.fd.get_regs().map_err(kvm("get registers"))?;
        if regs.rip != gate.pf_entry {
            log::warn!(
                "vcpu{}: debug exit at {:#x}, not the gate",
                self.id,
                regs.rip
            );
            return Ok(());
        }
        let bytes = self.read_virt(regs.rsp, 48)?;
        let mut words = [0u64; 6];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        let frame = syscall_gate::FaultFrame::from_words(&words);
        match syscall_gate::resume(&gate, &frame, regs.rflags) {
            syscall_gate::Resume::Syscall { rip, rsp, rflags } => {
                regs.rip = rip;
                regs.rsp = rsp;
                regs.rflags = rflags;
            }
            syscall_gate::Resume::Fault { rip, rflags } => {
                regs.rip = rip;
                regs.rflags = rflags;
            }
        }
        self.fd.set_regs(&regs).map_err(kvm("set registers"))
    }

    /// The vCPU's registers and pending exception, for a crash report
    /// (`None` if KVM cannot return them).
    fn snapshot(&self) -> Option<snapshot::CpuSnapshot> {
        let regs = self.fd.get_regs().ok()?;
        let sregs = self.fd.get_sregs().ok()?;
        let events = self.fd.get_vcpu_events().ok();
        Some(snapshot::CpuSnapshot::new(&regs, &sregs, events.as_ref()))
    }

    /// Handles an instruction the host's KVM could not emulate: steps in on
    /// the nested host, reports it (and so stops the VM) anywhere else.
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
        let bytes = self
            .read_virt(linear, emulate::MAX_INSN_LEN)
            .map_err(|_| VcpuError::InstructionNotMapped { rip: regs.rip })?;
        let ctx = emulate::CpuContext {
            rip: regs.rip,
            bitness,
            fpu_status: fpu.fsw,
            fpu_control: fpu.fcw,
        };
        let plan = emulate::decide(self.host, &bytes, ctx)?;
        log::debug!("vcpu{}: fallback {plan:?} at {:#x}", self.id, regs.rip);
        if let emulate::Fallback::Xstate { len, restore, mem } = plan {
            return self.emulate_xstate(regs, &sregs, len, restore, mem);
        }
        let (len, vector) = match plan {
            emulate::Fallback::SkipAndInject { len, vector } => (len, Some(vector)),
            emulate::Fallback::Skip { len } => (len, None),
            emulate::Fallback::SkipSetZf { len } => {
                regs.rflags |= RFLAGS_ZF;
                (len, None)
            }
            emulate::Fallback::Inject { vector } => (0, Some(vector)),
            emulate::Fallback::Xstate { .. } => (0, None),
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
        self.inject_fault(vector, None)
    }

    /// Injects exception `vector` with `error_code`, RIP unchanged.
    fn inject_fault(&self, vector: u8, error_code: Option<u32>) -> Result<(), VcpuError> {
        let mut events: kvm_vcpu_events =
            self.fd.get_vcpu_events().map_err(kvm("get vCPU events"))?;
        events.exception.injected = 1;
        events.exception.nr = vector;
        events.exception.has_error_code = u8::from(error_code.is_some());
        events.exception.error_code = error_code.unwrap_or(0);
        self.fd
            .set_vcpu_events(&events)
            .map_err(kvm("inject an exception"))
    }

    /// Injects a page fault at `addr` (CR2) with `error_code`.
    fn inject_page_fault(
        &self,
        sregs: &kvm_sregs,
        addr: u64,
        error_code: u32,
    ) -> Result<(), VcpuError> {
        let mut sregs = *sregs;
        sregs.cr2 = addr;
        self.fd
            .set_sregs(&sregs)
            .map_err(kvm("set CR2 for a page fault"))?;
        self.inject_fault(VECTOR_PF, Some(error_code))
    }

    /// Carries out the guest's `xsave64` (`restore` false) or `xrstor64`
    /// at `regs.rip` with save area `mem`: moves the components EDX:EAX &
    /// XCR0 selects between KVM's XSAVE state and guest memory
    /// ([`xstate::save`], [`xstate::restore`]) and advances RIP by `len`,
    /// or raises in the guest the fault the CPU would (#UD, #GP, #PF).
    fn emulate_xstate(
        &mut self,
        mut regs: kvm_regs,
        sregs: &kvm_sregs,
        len: u64,
        restore: bool,
        mem: emulate::MemOperand,
    ) -> Result<(), VcpuError> {
        let what = if restore { "xrstor64" } else { "xsave64" };
        let rip = regs.rip;
        let fail = |reason: String| VcpuError::Xstate { what, rip, reason };
        if sregs.cr4 & CR4_OSXSAVE == 0 {
            return self.inject_fault(VECTOR_UD, None);
        }
        let addr = mem
            .address(|r| register_value(&regs, sregs, r))
            .ok_or_else(|| {
                fail(format!(
                    "its operand uses a register memtide does not read ({mem:?})"
                ))
            })?;
        if addr % xstate::ALIGN != 0 {
            return self.inject_fault(VECTOR_GP, Some(0));
        }
        let xcrs = self.fd.get_xcrs().map_err(kvm("get XCR0"))?;
        let xcr0 = xcrs
            .xcrs
            .iter()
            .take(xcrs.nr_xcrs as usize)
            .find(|x| x.xcr == 0)
            .map(|x| x.value)
            .ok_or_else(|| fail("KVM reports no XCR0".into()))?;
        let rfbm = ((regs.rdx << 32) | (regs.rax & 0xffff_ffff)) & xcr0;
        let layout = self.xstate_layout()?;
        let area_len = layout.area_len(rfbm).map_err(|e| fail(e.to_string()))?;
        // The guest-physical pieces of the area, each within one page.
        let access = pagewalk::Access {
            write: !restore,
            user: sregs.cs.selector & 3 == 3,
            write_protect: sregs.cr0 & CR0_WP != 0,
        };
        let end = addr.wrapping_add(area_len as u64);
        let mut pieces = Vec::new();
        let mut va = addr;
        while va != end {
            let read = |gpa: u64| self.mem.read_obj::<u64>(GuestAddress(gpa)).ok();
            let gpa = match pagewalk::translate(sregs.cr3, va, access, read) {
                Ok(gpa) => gpa,
                Err(pagewalk::WalkError::PageFault { error_code }) => {
                    log::debug!(
                        "vcpu{}: {what} at {rip:#x}: page fault at {va:#x}, error code {error_code:#x}",
                        self.id
                    );
                    return self.inject_page_fault(sregs, va, error_code);
                }
                Err(pagewalk::WalkError::NonCanonical) => {
                    return self.inject_fault(VECTOR_GP, Some(0));
                }
                Err(e) => return Err(fail(e.to_string())),
            };
            let n = (0x1000 - (va & 0xfff)).min(end.wrapping_sub(va));
            pieces.push((GuestAddress(gpa), n as usize));
            va = va.wrapping_add(n);
        }
        let mut area = vec![0u8; area_len];
        let mut at = 0;
        for &(gpa, n) in &pieces {
            self.mem
                .read_slice(&mut area[at..at + n], gpa)
                .map_err(|e| fail(format!("the save area is not in guest RAM: {e}")))?;
            at += n;
        }
        let mut kvm_state = self.fd.get_xsave().map_err(kvm("get the XSAVE state"))?;
        let mut state = [0u8; xstate::KVM_REGION_LEN];
        for (chunk, word) in state.chunks_exact_mut(4).zip(kvm_state.region.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let done = if restore {
            xstate::restore(&layout, &mut state, &area, rfbm, xcr0)
        } else {
            xstate::save(&layout, &state, &mut area, rfbm)
        };
        match done {
            Ok(()) => {}
            Err(e) if e.is_guest_fault() => {
                log::debug!("vcpu{}: {what} at {rip:#x} faults: {e}", self.id);
                return self.inject_fault(VECTOR_GP, Some(0));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
        if restore {
            for (word, chunk) in kvm_state.region.iter_mut().zip(state.chunks_exact(4)) {
                let mut b = [0u8; 4];
                b.copy_from_slice(chunk);
                *word = u32::from_le_bytes(b);
            }
            // SAFETY: `kvm_state` is a whole `kvm_xsave` (4096 bytes), and
            // KVM reads no more than that: memtide never enables dynamic
            // XSTATE features (AMX) for its guests, so the guest's XSAVE
            // state fits the traditional region.
            unsafe { self.fd.set_xsave(&kvm_state) }.map_err(kvm("set the XSAVE state"))?;
        } else {
            let mut at = 0;
            for &(gpa, n) in &pieces {
                self.mem
                    .write_slice(&area[at..at + n], gpa)
                    .map_err(|e| fail(format!("the save area is not in guest RAM: {e}")))?;
                at += n;
            }
        }
        regs.rip = regs.rip.wrapping_add(len);
        self.fd.set_regs(&regs).map_err(kvm("set registers"))
    }

    /// The XSAVE layout from this vCPU's CPUID leaf 0xD (cached).
    fn xstate_layout(&mut self) -> Result<xstate::Layout, VcpuError> {
        if let Some(layout) = &self.xstate_layout {
            return Ok(layout.clone());
        }
        let cpuid = self
            .fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("get CPUID"))?;
        let layout = xstate::Layout::from_cpuid(
            cpuid
                .as_slice()
                .iter()
                .map(|e| (e.function, e.index, e.eax, e.ebx)),
        );
        self.xstate_layout = Some(layout.clone());
        Ok(layout)
    }

    /// Reads up to `len` bytes at guest-virtual `linear`, following the
    /// guest's page tables page by page (fewer if a page is not mapped).
    fn read_virt(&self, linear: u64, len: usize) -> Result<Vec<u8>, VcpuError> {
        let mut out = Vec::with_capacity(len);
        let mut va = linear;
        while out.len() < len {
            let tr = match self.fd.translate_gva(va) {
                Ok(tr) if tr.valid != 0 => tr,
                _ => break,
            };
            let in_page = 0x1000 - (va & 0xfff) as usize;
            let want = in_page.min(len - out.len());
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
            return Err(VcpuError::NotMapped { addr: linear });
        }
        Ok(out)
    }
}
