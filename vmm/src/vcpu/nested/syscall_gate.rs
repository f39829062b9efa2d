//! Completing guest system calls on the nested `kvm_pvm` host (pure logic).
//!
//! There, a guest process's `syscall` lands at the kernel's entry point
//! (`MSR_LSTAR`) without the switch to kernel mode: the first instruction
//! of `entry_SYSCALL_64` then faults *in user mode*, and the guest kernel
//! would kill the process (docs/nested-host.md). RCX and R11 already hold
//! what `syscall` puts there (return address, user RFLAGS); only the
//! privilege switch is missing.
//!
//! memtide finishes the job: a hardware breakpoint on the guest's page
//! fault entry (IDT vector 14) stops every page fault before the guest
//! handles it. A fault whose exception frame says "user mode, RIP =
//! LSTAR" is that broken `syscall`: memtide drops the frame and resumes the
//! vCPU, already in kernel mode from the exception delivery, at LSTAR with
//! the user's stack pointer and `RFLAGS & ~SFMASK`, exactly the state a
//! working `syscall` leaves. Every other fault goes on to the guest's
//! handler: memtide steps over the entry's first instruction (which a
//! breakpoint would otherwise hit again) by emulating it; only the few
//! instructions Linux puts there (NOP/`ENDBR64` padding, `CLAC`, `CLD`) are
//! accepted.

use iced_x86::{Decoder, DecoderOptions, Mnemonic};

/// The direction flag.
const RFLAGS_DF: u64 = 1 << 10;
/// The alignment-check flag (what `CLAC` clears).
const RFLAGS_AC: u64 = 1 << 18;
/// RFLAGS bit 1, always set.
const RFLAGS_FIXED: u64 = 1 << 1;

/// What the guest's kernel set up for system calls and page faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    /// The page fault handler's entry (IDT vector 14).
    pub pf_entry: u64,
    /// `MSR_LSTAR`: the kernel's `syscall` entry.
    pub lstar: u64,
    /// `MSR_SYSCALL_MASK` (SFMASK): RFLAGS bits `syscall` clears.
    pub sfmask: u64,
    /// The first instruction at `pf_entry`, as memtide steps over it.
    pub step: Step,
}

/// How memtide executes the page fault entry's first instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Its length in bytes.
    pub len: u64,
    /// RFLAGS bits it clears.
    pub clears: u64,
}

/// Why a page fault entry cannot carry the breakpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The bytes at the entry do not decode.
    #[error("the page fault entry's first instruction does not decode")]
    Undecodable,
    /// An instruction memtide does not emulate.
    #[error("the page fault entry starts with {0}, which memtide does not step over")]
    Unsupported(String),
}

/// Decodes the page fault entry's first instruction (64-bit code at `rip`).
pub fn step_for(bytes: &[u8], rip: u64) -> Result<Step, GateError> {
    let mut decoder = Decoder::with_ip(64, bytes, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(GateError::Undecodable);
    }
    let len = insn.len() as u64;
    let clears = match insn.mnemonic() {
        Mnemonic::Nop | Mnemonic::Endbr64 => 0,
        Mnemonic::Cld => RFLAGS_DF,
        Mnemonic::Clac => RFLAGS_AC,
        other => return Err(GateError::Unsupported(format!("{other:?}"))),
    };
    Ok(Step { len, clears })
}

/// The target of a 64-bit IDT gate descriptor (16 bytes).
pub fn gate_target(desc: &[u8; 16]) -> u64 {
    let lo = u64::from(u16::from_le_bytes([desc[0], desc[1]]));
    let mid = u64::from(u16::from_le_bytes([desc[6], desc[7]]));
    let hi = u64::from(u32::from_le_bytes([desc[8], desc[9], desc[10], desc[11]]));
    lo | (mid << 16) | (hi << 32)
}

/// The exception frame the CPU pushed for a page fault with an error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultFrame {
    /// The page fault error code.
    pub error_code: u64,
    /// Where the fault happened.
    pub rip: u64,
    /// The code segment then (its low two bits: the privilege level).
    pub cs: u64,
    /// RFLAGS then.
    pub rflags: u64,
    /// The stack pointer then.
    pub rsp: u64,
}

impl FaultFrame {
    /// Parses the six words at the handler's stack pointer.
    pub fn from_words(w: &[u64; 6]) -> Self {
        Self {
            error_code: w[0],
            rip: w[1],
            cs: w[2],
            rflags: w[3],
            rsp: w[4],
        }
    }
}

/// What to do with the vCPU stopped at the page fault entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// A broken `syscall`: continue at LSTAR in kernel mode.
    Syscall {
        /// LSTAR.
        rip: u64,
        /// The user's stack pointer.
        rsp: u64,
        /// `user RFLAGS & ~SFMASK`.
        rflags: u64,
    },
    /// An ordinary page fault: step over the entry's first instruction.
    Fault {
        /// RIP after it.
        rip: u64,
        /// RFLAGS after it.
        rflags: u64,
    },
}

/// Decides, for a vCPU stopped at `gate.pf_entry` with `rflags`, given the
/// fault's frame.
pub fn resume(gate: &Gate, frame: &FaultFrame, rflags: u64) -> Resume {
    if frame.rip == gate.lstar && frame.cs & 3 == 3 {
        Resume::Syscall {
            rip: gate.lstar,
            rsp: frame.rsp,
            rflags: (frame.rflags & !gate.sfmask) | RFLAGS_FIXED,
        }
    } else {
        Resume::Fault {
            rip: gate.pf_entry.wrapping_add(gate.step.len),
            rflags: rflags & !gate.step.clears,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: u64 = 0xffff_ffff_8140_0aa0;
    const LSTAR: u64 = 0xffff_ffff_8140_0040;
    /// Linux's SFMASK: TF, DF, IF, IOPL, AC, NT.
    const SFMASK: u64 = 0x47700;

    fn gate() -> Gate {
        Gate {
            pf_entry: ENTRY,
            lstar: LSTAR,
            sfmask: SFMASK,
            step: Step { len: 3, clears: 0 },
        }
    }

    #[test]
    fn the_entry_instructions_linux_uses_are_stepped_over() {
        assert_eq!(
            step_for(&[0x0f, 0x1f, 0x00], ENTRY),
            Ok(Step { len: 3, clears: 0 })
        );
        assert_eq!(step_for(&[0x90], ENTRY), Ok(Step { len: 1, clears: 0 }));
        assert_eq!(
            step_for(&[0xfc], ENTRY),
            Ok(Step {
                len: 1,
                clears: RFLAGS_DF
            })
        );
        assert_eq!(
            step_for(&[0x0f, 0x01, 0xca], ENTRY),
            Ok(Step {
                len: 3,
                clears: RFLAGS_AC
            })
        );
        assert_eq!(
            step_for(&[0xf3, 0x0f, 0x1e, 0xfa], ENTRY),
            Ok(Step { len: 4, clears: 0 })
        );
        assert!(matches!(
            step_for(&[0x48, 0x89, 0xe7], ENTRY),
            Err(GateError::Unsupported(_))
        ));
        assert_eq!(step_for(&[0x0f], ENTRY), Err(GateError::Undecodable));
    }

    #[test]
    fn idt_gate_targets_are_reassembled() {
        // offset 0xffffffff81400aa0, selector 0x10, interrupt gate.
        let desc = [
            0xa0, 0x0a, 0x10, 0x00, 0x00, 0x8e, 0x40, 0x81, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ];
        assert_eq!(gate_target(&desc), ENTRY);
    }

    #[test]
    fn a_user_fault_at_lstar_resumes_as_the_system_call() {
        let frame =
            FaultFrame::from_words(&[15, LSTAR, 0x33, 0x246 | RFLAGS_DF, 0x7ffe_0000_1000, 0x2b]);
        assert_eq!(
            resume(&gate(), &frame, 0x82),
            Resume::Syscall {
                rip: LSTAR,
                rsp: 0x7ffe_0000_1000,
                rflags: 0x46,
            }
        );
    }

    #[test]
    fn other_faults_go_on_to_the_guest_handler() {
        // A user fault elsewhere, and a kernel fault at LSTAR's address.
        for (rip, cs) in [(0x40_1000, 0x33), (LSTAR, 0x10)] {
            let frame = FaultFrame::from_words(&[6, rip, cs, 0x246, 0x7ffe_0000_1000, 0x2b]);
            assert_eq!(
                resume(&gate(), &frame, 0x86),
                Resume::Fault {
                    rip: ENTRY + 3,
                    rflags: 0x86
                }
            );
        }
        let cld = Gate {
            step: Step {
                len: 1,
                clears: RFLAGS_DF,
            },
            ..gate()
        };
        let frame = FaultFrame::from_words(&[6, 0x40_1000, 0x33, 0x246, 0, 0x2b]);
        assert_eq!(
            resume(&cld, &frame, 0x486),
            Resume::Fault {
                rip: ENTRY + 1,
                rflags: 0x86
            }
        );
    }
}
