//! Just enough ELF reading to tell a static executable from a dynamic one.

/// `e_ident` magic.
const MAGIC: &[u8; 4] = b"\x7fELF";
/// `EI_CLASS` value of 64-bit files.
const CLASS_64: u8 = 2;
/// `EI_DATA` value of little-endian files.
const DATA_LSB: u8 = 1;
/// Program header type naming the dynamic loader.
const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Program header types of a 64-bit little-endian ELF file, or `None` if
/// `bytes` is not one (or is truncated).
fn program_header_types(bytes: &[u8]) -> Option<Vec<u32>> {
    if bytes.get(..4)? != MAGIC || *bytes.get(4)? != CLASS_64 || *bytes.get(5)? != DATA_LSB {
        return None;
    }
    let phoff = usize::try_from(u64_at(bytes, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(bytes, 0x36)?);
    let phnum = usize::from(u16_at(bytes, 0x38)?);
    (0..phnum)
        .map(|i| u32_at(bytes, phoff.checked_add(i.checked_mul(phentsize)?)?))
        .collect()
}

/// Whether `bytes` is a 64-bit ELF file that needs no dynamic loader, i.e.
/// has no `PT_INTERP` program header (a static-pie binary has `PT_DYNAMIC`
/// but no `PT_INTERP`, and runs without a loader too).
pub fn is_static_executable(bytes: &[u8]) -> bool {
    program_header_types(bytes).is_some_and(|types| !types.contains(&PT_INTERP))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header followed by program headers of `types`.
    fn elf_with(types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(MAGIC);
        b[4] = CLASS_64;
        b[5] = DATA_LSB;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a]
            .copy_from_slice(&u16::try_from(types.len()).expect("few types").to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&ph);
        }
        b
    }

    #[test]
    fn static_and_dynamic_executables() {
        let (load, dynamic) = (1, 2);
        assert!(is_static_executable(&elf_with(&[load, load])));
        assert!(
            is_static_executable(&elf_with(&[load, dynamic])),
            "static-pie"
        );
        assert!(!is_static_executable(&elf_with(&[
            PT_INTERP, load, dynamic
        ])));
    }

    #[test]
    fn rejects_non_elf_and_truncated_input() {
        assert!(!is_static_executable(b"#!/bin/sh\n"));
        assert!(!is_static_executable(&[]));
        let mut truncated = elf_with(&[1, 1]);
        truncated.truncate(100);
        assert!(!is_static_executable(&truncated));
    }
}
