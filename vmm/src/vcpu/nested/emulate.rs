//! What to do when the host's KVM could not emulate an instruction
//! (`KVM_INTERNAL_ERROR_EMULATION`).
//!
//! On the nested `kvm_pvm` host, whose KVM cannot emulate every instruction
//! the guest kernel executes, memtide steps in for a few (the emulation
//! fallback, [`plan`]; see `docs/nested-host.md`). On any other host it never
//! does: the vCPU turns the exit into an error naming the instruction
//! ([`crate::vcpu::insn::not_emulated`]), and the VM stops.
//!
//! This module is pure: it decides what to do with the instruction bytes at
//! the guest's RIP. The vCPU loop reads the bytes and applies the decision.

use iced_x86::{
    Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter, Mnemonic, OpKind, Register,
};

use crate::vcpu::insn::{hex, mnemonic_name, CpuContext};

/// Vector of the breakpoint exception (#BP).
pub const VECTOR_BP: u8 = 3;
/// Vector of the x87 floating-point exception (#MF).
pub const VECTOR_MF: u8 = 16;

/// What the vCPU loop must do to get past the instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Advance RIP by `len` and inject exception `vector` (a trap, so the
    /// guest handler sees the address after the instruction).
    SkipAndInject {
        /// Instruction length.
        len: u64,
        /// Exception vector to inject.
        vector: u8,
    },
    /// Advance RIP by `len`: the instruction has no effect to reproduce.
    Skip {
        /// Instruction length.
        len: u64,
    },
    /// Advance RIP by `len` and set ZF (the result of `verw` on a writable
    /// selector).
    SkipSetZf {
        /// Instruction length.
        len: u64,
    },
    /// Inject exception `vector` without advancing RIP (a fault).
    Inject {
        /// Exception vector to inject.
        vector: u8,
    },
    /// `xsave64` or `xrstor64` (standard form): memtide moves the guest's
    /// extended state between KVM and the save area at `mem`
    /// ([`super::xstate`]), then advances RIP by `len`.
    Xstate {
        /// Instruction length.
        len: u64,
        /// `xrstor64` (else `xsave64`).
        restore: bool,
        /// The save area operand.
        mem: MemOperand,
    },
}

/// A memory operand, to be resolved against the vCPU's registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemOperand {
    /// Base register (`Register::None` if none; `RIP` for RIP-relative, in
    /// which case `displacement` is already the address).
    pub base: Register,
    /// Index register (`Register::None` if none).
    pub index: Register,
    /// Index scale: 1, 2, 4 or 8.
    pub scale: u32,
    /// Displacement (sign-extended), or the absolute address when RIP-relative.
    pub displacement: u64,
    /// The segment (only FS and GS have a base in 64-bit mode).
    pub segment: Register,
}

impl MemOperand {
    fn of(insn: &Instruction) -> Self {
        Self {
            base: insn.memory_base(),
            index: insn.memory_index(),
            scale: insn.memory_index_scale(),
            displacement: insn.memory_displacement64(),
            segment: insn.memory_segment(),
        }
    }

    /// The 64-bit linear address, given `value` of a general-purpose
    /// register or the base of segment FS/GS; `None` if `value` has no
    /// value for a register the operand uses.
    pub fn address(&self, value: impl Fn(Register) -> Option<u64>) -> Option<u64> {
        let base = match self.base {
            Register::None | Register::RIP => 0,
            r => value(r)?,
        };
        let index = match self.index {
            Register::None => 0,
            r => value(r)?.wrapping_mul(u64::from(self.scale)),
        };
        let segment = match self.segment {
            Register::FS | Register::GS => value(self.segment)?,
            _ => 0,
        };
        Some(
            self.displacement
                .wrapping_add(base)
                .wrapping_add(index)
                .wrapping_add(segment),
        )
    }
}

/// Why the fallback cannot handle an instruction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmulationError {
    /// A decodable instruction the fallback does not implement.
    #[error(
        "the host's KVM cannot emulate `{text}` ({mnemonic}, bytes {bytes}) at guest RIP {rip:#x}, \
         and memtide has no fallback for it"
    )]
    Unsupported {
        /// Guest RIP.
        rip: u64,
        /// The instruction's bytes in hex.
        bytes: String,
        /// iced-x86's mnemonic name.
        mnemonic: String,
        /// The instruction in Intel syntax.
        text: String,
    },
    /// The bytes do not decode.
    #[error("undecodable instruction bytes {bytes} at guest RIP {rip:#x}")]
    Undecodable {
        /// Guest RIP.
        rip: u64,
        /// The bytes read, in hex.
        bytes: String,
    },
    /// The CPU mode is not one the decoder knows.
    #[error("unknown code size {0}")]
    BadBitness(u32),
}

/// Decides how to get past the instruction in `bytes` (read at `ctx.rip`).
pub fn plan(bytes: &[u8], ctx: CpuContext) -> Result<Fallback, EmulationError> {
    if !matches!(ctx.bitness, 16 | 32 | 64) {
        return Err(EmulationError::BadBitness(ctx.bitness));
    }
    let mut decoder = Decoder::with_ip(ctx.bitness, bytes, ctx.rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return Err(EmulationError::Undecodable {
            rip: ctx.rip,
            bytes: hex(bytes),
        });
    }
    let len = insn.len() as u64;
    match insn.mnemonic() {
        Mnemonic::Int3 => Ok(Fallback::SkipAndInject {
            len,
            vector: VECTOR_BP,
        }),
        Mnemonic::Wait if x87_exception_pending(ctx.fpu_status, ctx.fpu_control) => {
            Ok(Fallback::Inject { vector: VECTOR_MF })
        }
        Mnemonic::Wait => Ok(Fallback::Skip { len }),
        // `verw` is executed on every return to user space by kernels with
        // the MDS/TAA mitigations, only for its side effect of flushing CPU
        // buffers. memtide cannot flush the host's buffers from here; the
        // architectural effect (ZF = whether the selector is writable) is
        // reported as writable, which holds for the kernel data selector
        // the mitigation uses.
        Mnemonic::Verw => Ok(Fallback::SkipSetZf { len }),
        // The guest kernel's context switch, signal delivery and return
        // (memtide boots it with XSAVE on so that it keeps every process's
        // AVX/AVX-512 state; the host's emulator cannot run these).
        Mnemonic::Xsave64 | Mnemonic::Xrstor64
            if ctx.bitness == 64 && insn.op0_kind() == OpKind::Memory =>
        {
            Ok(Fallback::Xstate {
                len,
                restore: insn.mnemonic() == Mnemonic::Xrstor64,
                mem: MemOperand::of(&insn),
            })
        }
        _ => Err(unsupported(&insn, bytes, ctx.rip)),
    }
}

/// An unmasked x87 exception is pending when a status flag (IE, DE, ZE, OE,
/// UE, PE) is set whose mask bit in the control word is clear.
fn x87_exception_pending(status: u16, control: u16) -> bool {
    (status & !control & 0x3f) != 0
}

fn unsupported(insn: &Instruction, bytes: &[u8], rip: u64) -> EmulationError {
    let mut text = String::new();
    IntelFormatter::new().format(insn, &mut text);
    EmulationError::Unsupported {
        rip,
        bytes: hex(&bytes[..insn.len().min(bytes.len())]),
        mnemonic: mnemonic_name(insn),
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(rip: u64) -> CpuContext {
        CpuContext {
            rip,
            bitness: 64,
            fpu_status: 0,
            fpu_control: 0x37f,
        }
    }

    #[test]
    fn int3_skips_and_injects_breakpoint() {
        assert_eq!(
            plan(&[0xcc, 0x90, 0x90], ctx(0xffff_ffff_8100_0000)),
            Ok(Fallback::SkipAndInject {
                len: 1,
                vector: VECTOR_BP
            })
        );
    }

    #[test]
    fn fwait_is_skipped_without_pending_exception() {
        assert_eq!(
            plan(&[0x9b, 0xc3], ctx(0x1000)),
            Ok(Fallback::Skip { len: 1 })
        );
    }

    #[test]
    fn fwait_with_unmasked_exception_raises_mf() {
        let mut c = ctx(0x1000);
        c.fpu_status = 0x0004; // ZE
        c.fpu_control = 0x037b; // ZE unmasked
        assert_eq!(plan(&[0x9b], c), Ok(Fallback::Inject { vector: VECTOR_MF }));
        c.fpu_control = 0x037f; // masked again
        assert_eq!(plan(&[0x9b], c), Ok(Fallback::Skip { len: 1 }));
    }

    #[test]
    fn verw_is_skipped_with_zf_set() {
        // verw [rip-0x1554] as emitted by CLEAR_CPU_BUFFERS
        assert_eq!(
            plan(
                &[0x0f, 0x00, 0x2d, 0xac, 0xea, 0xff, 0xff],
                ctx(0xffff_ffff_8140_158d)
            ),
            Ok(Fallback::SkipSetZf { len: 7 })
        );
    }

    #[test]
    fn other_instructions_are_named_in_the_error() {
        // xsave [rdi] without REX.W: the 32-bit layout, which Linux never uses.
        let err = plan(&[0x0f, 0xae, 0x27], ctx(0xffff_ffff_8102_0304))
            .expect_err("32-bit xsave is not handled");
        let msg = err.to_string();
        assert!(msg.contains("xsave"), "{msg}");
        assert!(msg.contains("0f ae 27"), "{msg}");
        assert!(msg.contains("0xffffffff81020304"), "{msg}");
    }

    #[test]
    fn xsave64_and_xrstor64_are_planned_with_their_operand() {
        // xrstor64 [rdi]
        let Ok(Fallback::Xstate { len, restore, mem }) =
            plan(&[0x48, 0x0f, 0xae, 0x2f], ctx(0xffff_ffff_818e_1e48))
        else {
            panic!("xrstor64 is emulated");
        };
        assert_eq!((len, restore), (4, true));
        let regs = |r: Register| match r {
            Register::RDI => Some(0xffff_8880_0123_4000),
            _ => None,
        };
        assert_eq!(mem.address(regs), Some(0xffff_8880_0123_4000));
        // xsave64 [rsp+rbx*2+0x40] with a GS override.
        let Ok(Fallback::Xstate { len, restore, mem }) = plan(
            &[0x65, 0x48, 0x0f, 0xae, 0x64, 0x5c, 0x40],
            ctx(0xffff_ffff_8101_0000),
        ) else {
            panic!("xsave64 is emulated");
        };
        assert_eq!((len, restore), (7, false));
        let regs = |r: Register| match r {
            Register::RSP => Some(0x1000),
            Register::RBX => Some(0x10),
            Register::GS => Some(0x10_0000),
            _ => None,
        };
        assert_eq!(mem.address(regs), Some(0x10_0000 + 0x1000 + 0x20 + 0x40));
        // A register the caller cannot resolve.
        assert_eq!(mem.address(|_| None), None);
        // RIP-relative: the displacement is the address.
        let Ok(Fallback::Xstate { mem, .. }) = plan(
            &[0x48, 0x0f, 0xae, 0x25, 0x00, 0x10, 0x00, 0x00],
            ctx(0xffff_ffff_8100_0000),
        ) else {
            panic!("rip-relative xsave64");
        };
        assert_eq!(mem.address(|_| None), Some(0xffff_ffff_8100_1008));
        // Not in 32-bit code.
        assert!(plan(
            &[0x0f, 0xae, 0x2f],
            CpuContext {
                bitness: 32,
                ..ctx(0x1000)
            }
        )
        .is_err());
    }

    #[test]
    fn garbage_is_undecodable() {
        let err = plan(&[0x0f, 0xff], ctx(0x10)).expect_err("invalid");
        assert!(matches!(err, EmulationError::Undecodable { rip: 0x10, .. }));
        assert!(plan(&[], ctx(0x10)).is_err());
    }

    #[test]
    fn unknown_code_sizes_are_refused() {
        assert!(plan(
            &[0xcc],
            CpuContext {
                bitness: 8,
                ..ctx(0)
            }
        )
        .is_err());
    }
}
