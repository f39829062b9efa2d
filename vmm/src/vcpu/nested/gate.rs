//! The syscall gate of one vCPU: finds the guest kernel's page fault entry
//! and syscall MSRs, arms a hardware breakpoint on the entry, and at the
//! breakpoint finishes a broken `syscall` (see [`super::syscall_gate`]).

use std::time::{Duration, Instant};

use kvm_bindings::{kvm_guest_debug, kvm_msr_entry, Msrs};

use super::syscall_gate::{self, Gate, GateError};
use super::{kvm, GuestCpu, NestedError};
use crate::vcpu::insn::MAX_INSN_LEN;

/// `MSR_LSTAR`: the 64-bit `syscall` entry point.
const MSR_LSTAR: u32 = 0xc000_0082;
/// `MSR_SYSCALL_MASK`: RFLAGS bits `syscall` clears.
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
/// `EFER.LMA`: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// DR7: enable breakpoint 0 (local), execution, 1 byte; bit 10 reads as 1.
const DR7_BP0_EXEC: u64 = (1 << 0) | (1 << 10);
/// How often an unarmed syscall gate looks for the guest's entry points.
const GATE_PROBE_UNARMED: Duration = Duration::from_millis(20);
/// How often an armed gate checks that they have not moved.
const GATE_PROBE_ARMED: Duration = Duration::from_secs(1);

/// The syscall gate of one vCPU.
#[derive(Debug, Default)]
pub struct GateState {
    armed: Option<Gate>,
    last_probe: Option<Instant>,
    refused: bool,
}

impl GateState {
    /// Arms (or re-arms) the gate once the guest kernel has set up its page
    /// fault entry and `MSR_LSTAR`; rate-limited.
    pub fn probe(&mut self, cpu: &GuestCpu<'_>) -> Result<(), NestedError> {
        let every = if self.armed.is_some() {
            GATE_PROBE_ARMED
        } else {
            GATE_PROBE_UNARMED
        };
        if self.refused || self.last_probe.is_some_and(|t| t.elapsed() < every) {
            return Ok(());
        }
        self.last_probe = Some(Instant::now());
        let gate = match find_gate(cpu) {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(()),
            Err(e) => {
                log::warn!(
                    "vcpu{}: cannot complete guest system calls on this host: {e}",
                    cpu.id
                );
                self.refused = true;
                return Ok(());
            }
        };
        if self.armed == Some(gate) {
            return Ok(());
        }
        let mut dbg = kvm_guest_debug {
            control: kvm_bindings::KVM_GUESTDBG_ENABLE | kvm_bindings::KVM_GUESTDBG_USE_HW_BP,
            ..Default::default()
        };
        dbg.arch.debugreg[0] = gate.pf_entry;
        dbg.arch.debugreg[7] = DR7_BP0_EXEC;
        cpu.fd
            .set_guest_debug(&dbg)
            .map_err(kvm("set the syscall gate breakpoint"))?;
        log::info!(
            "vcpu{}: syscall gate armed: page fault entry {:#x}, LSTAR {:#x}",
            cpu.id,
            gate.pf_entry,
            gate.lstar
        );
        self.armed = Some(gate);
        Ok(())
    }

    /// The vCPU stopped at the gate's breakpoint: finish a broken
    /// `syscall`, or let an ordinary page fault go on.
    pub fn at_breakpoint(&self, cpu: &GuestCpu<'_>) -> Result<(), NestedError> {
        let Some(gate) = self.armed else {
            memtide_log_limit::warn_limited!("vcpu{}: debug exit without an armed gate", cpu.id);
            return Ok(());
        };
        let mut regs = cpu.fd.get_regs().map_err(kvm("get registers"))?;
        if regs.rip != gate.pf_entry {
            memtide_log_limit::warn_limited!(
                "vcpu{}: debug exit at {:#x}, not the gate",
                cpu.id,
                regs.rip
            );
            return Ok(());
        }
        let bytes = cpu.read_virt(regs.rsp, 48)?;
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
        cpu.fd.set_regs(&regs).map_err(kvm("set registers"))
    }
}

/// The guest's page fault entry and syscall MSRs, once it is in long mode
/// with both set up.
fn find_gate(cpu: &GuestCpu<'_>) -> Result<Option<Gate>, GateError> {
    let Ok(sregs) = cpu.fd.get_sregs() else {
        return Ok(None);
    };
    if sregs.efer & EFER_LMA == 0 || u32::from(sregs.idt.limit) < 15 * 16 - 1 {
        return Ok(None);
    }
    let mut desc = [0u8; 16];
    let Ok(bytes) = cpu.read_virt(sregs.idt.base.wrapping_add(14 * 16), 16) else {
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
    if cpu.fd.get_msrs(&mut msrs).ok() != Some(2) {
        return Ok(None);
    }
    let (lstar, sfmask) = (msrs.as_slice()[0].data, msrs.as_slice()[1].data);
    if lstar == 0 {
        return Ok(None);
    }
    let Ok(code) = cpu.read_virt(pf_entry, MAX_INSN_LEN) else {
        return Ok(None);
    };
    let step = syscall_gate::step_for(&code, pf_entry)?;
    Ok(Some(Gate {
        pf_entry,
        lstar,
        sfmask,
        step,
    }))
}
