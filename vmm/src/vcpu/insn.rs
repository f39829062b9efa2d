//! The instruction behind a `KVM_INTERNAL_ERROR_EMULATION` exit, named for
//! the error that stops the VM on standard KVM (pure: the vCPU reads the
//! bytes at the guest's RIP, this module decodes and describes them).

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

/// Longest x86 instruction.
pub const MAX_INSN_LEN: usize = 15;

/// The guest CPU state the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct CpuContext {
    /// Guest RIP of the failing instruction.
    pub rip: u64,
    /// Code size: 16, 32 or 64.
    pub bitness: u32,
    /// x87 status word (for `fwait`).
    pub fpu_status: u16,
    /// x87 control word (for `fwait`).
    pub fpu_control: u16,
}

/// KVM could not emulate an instruction on a host where memtide does not
/// step in (anything but the nested `kvm_pvm` host).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "KVM could not emulate {} at guest RIP {rip:#x}; memtide works around this only on \
     the nested kvm_pvm host, so the VM stops",
    describe(.mnemonic.as_deref(), .text.as_deref(), .bytes)
)]
pub struct NotEmulated {
    /// Guest RIP.
    pub rip: u64,
    /// The instruction's bytes in hex (all bytes read if it does not
    /// decode).
    pub bytes: String,
    /// iced-x86's mnemonic name, if the bytes decode.
    pub mnemonic: Option<String>,
    /// The instruction in Intel syntax, if the bytes decode.
    pub text: Option<String>,
}

/// "`text` (mnemonic, bytes ..)", or "an undecodable instruction (bytes ..)".
fn describe(mnemonic: Option<&str>, text: Option<&str>, bytes: &str) -> String {
    match (mnemonic, text) {
        (Some(m), Some(t)) => format!("`{t}` ({m}, bytes {bytes})"),
        (Some(m), None) => format!("an instruction ({m}, bytes {bytes})"),
        _ => format!("an undecodable instruction (bytes {bytes})"),
    }
}

/// The error for an instruction KVM could not emulate, naming it as far as
/// it decodes.
pub fn not_emulated(bytes: &[u8], ctx: CpuContext) -> NotEmulated {
    let insn = matches!(ctx.bitness, 16 | 32 | 64)
        .then(|| Decoder::with_ip(ctx.bitness, bytes, ctx.rip, DecoderOptions::NONE).decode())
        .filter(|insn| !insn.is_invalid());
    match insn {
        Some(insn) => {
            let mut text = String::new();
            IntelFormatter::new().format(&insn, &mut text);
            NotEmulated {
                rip: ctx.rip,
                bytes: hex(&bytes[..insn.len().min(bytes.len())]),
                mnemonic: Some(mnemonic_name(&insn)),
                text: Some(text),
            }
        }
        None => NotEmulated {
            rip: ctx.rip,
            bytes: hex(bytes),
            mnemonic: None,
            text: None,
        },
    }
}

/// iced-x86's mnemonic name of `insn`, lower case.
pub fn mnemonic_name(insn: &Instruction) -> String {
    format!("{:?}", insn.mnemonic()).to_lowercase()
}

/// `bytes` in hex, space-separated.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Code size of the current mode from CS's L and D/B bits.
pub fn bitness(cs_l: u8, cs_db: u8) -> u32 {
    match (cs_l, cs_db) {
        (1, _) => 64,
        (_, 1) => 32,
        _ => 16,
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
    fn other_hosts_never_patch_and_name_the_instruction() {
        // int3, fwait and verw are what the nested host's fallback handles;
        // elsewhere each stops the VM with the instruction named.
        for (bytes, mnemonic, hex_bytes) in [
            (&[0xcc, 0x90][..], "int3", "cc"),
            (&[0x9b, 0xc3][..], "wait", "9b"),
            (
                &[0x0f, 0x00, 0x2d, 0xac, 0xea, 0xff, 0xff][..],
                "verw",
                "0f 00 2d ac ea ff ff",
            ),
            (&[0x48, 0x0f, 0xae, 0x2f][..], "xrstor64", "48 0f ae 2f"),
        ] {
            let err = not_emulated(bytes, ctx(0xffff_ffff_8102_0304));
            assert!(err.mnemonic.as_deref() == Some(mnemonic), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains("KVM could not emulate"), "{msg}");
            assert!(
                msg.contains(&format!("({mnemonic}, bytes {hex_bytes})")),
                "{msg}"
            );
            assert!(msg.contains("guest RIP 0xffffffff81020304"), "{msg}");
        }
    }

    #[test]
    fn the_error_reads_as_one_sentence() {
        let err = not_emulated(&[0x48, 0x0f, 0xae, 0x2f], ctx(0xffff_ffff_8102_0304));
        assert_eq!(
            err.to_string(),
            "KVM could not emulate `xrstor64 [rdi]` (xrstor64, bytes 48 0f ae 2f) at guest RIP \
             0xffffffff81020304; memtide works around this only on the nested kvm_pvm host, so \
             the VM stops"
        );
    }

    #[test]
    fn other_hosts_report_undecodable_bytes_in_full() {
        // `push es` does not exist in 64-bit mode.
        let err = not_emulated(&[0x06, 0x90, 0x90], ctx(0x10));
        assert_eq!(
            err,
            NotEmulated {
                rip: 0x10,
                bytes: "06 90 90".into(),
                mnemonic: None,
                text: None,
            }
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("KVM could not emulate an undecodable instruction (bytes 06 90 90) at guest RIP 0x10;"),
            "{msg}"
        );
    }

    #[test]
    fn bitness_follows_cs() {
        assert_eq!(bitness(1, 0), 64);
        assert_eq!(bitness(0, 1), 32);
        assert_eq!(bitness(0, 0), 16);
    }
}
