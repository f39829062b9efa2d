//! An instruction the host's KVM cannot emulate: on standard KVM memtide
//! reports it (bytes, mnemonic, guest RIP) and stops the VM with exit 1; it
//! patches nothing. Only on the nested `kvm_pvm` host does the emulation
//! fallback look at it, and it has no fallback for this one either.
//!
//! The "kernel" is a tiny ELF built here: in the 64-bit boot state memtide
//! gives every kernel, it executes `crc32 eax, dword [rbx]` on an address
//! inside the boot identity map but outside guest RAM (MMIO). KVM must
//! emulate an MMIO access, and its instruction emulator has no `crc32`
//! (the F2-prefixed 0F 38 F1 opcode), so `KVM_RUN` ends with an emulation
//! failure.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use std::time::Duration;

use memtide_test_support::{require_kvm, run_memtide};

/// Guest-physical load address of the test ELF's one segment.
const LOAD: u64 = 0x20_0000;
/// An address in the boot identity map (1 GiB) above the guest's 128 MiB.
const MMIO: u64 = 0x3000_0000;
/// Size of the ELF header plus one program header.
const HEADERS: u64 = 64 + 56;

/// `mov rbx, MMIO; crc32 eax, dword [rbx]; hlt; jmp hlt`.
fn code() -> Vec<u8> {
    let mut c = vec![0x48, 0xbb];
    c.extend_from_slice(&MMIO.to_le_bytes());
    c.extend_from_slice(&[0xf2, 0x0f, 0x38, 0xf1, 0x03]);
    c.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
    c
}

/// A static ELF64 executable whose single segment holds the headers and
/// `code`, loaded at [`LOAD`], entered at the code.
fn tiny_elf(code: &[u8]) -> Vec<u8> {
    let size = HEADERS + code.len() as u64;
    let mut e = Vec::new();
    e.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(LOAD + HEADERS).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // program headers
    e.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    e.extend_from_slice(&0u32.to_le_bytes());
    for half in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&half.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, LOAD, LOAD, size, size, 0x1000] {
        e.extend_from_slice(&word.to_le_bytes());
    }
    assert_eq!(e.len() as u64, HEADERS);
    e.extend_from_slice(code);
    e
}

#[test]
fn the_test_elf_is_well_formed() {
    let elf = tiny_elf(&code());
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf.len() as u64, HEADERS + code().len() as u64);
    let entry = u64::from_le_bytes(elf[24..32].try_into().expect("8 bytes"));
    assert_eq!(entry, LOAD + HEADERS);
    let headers = usize::try_from(HEADERS).expect("header size");
    assert_eq!(
        &elf[headers + 10..headers + 15],
        [0xf2, 0x0f, 0x38, 0xf1, 0x03]
    );
}

#[test]
fn an_instruction_kvm_cannot_emulate_stops_the_vm_and_is_named() {
    if !require_kvm() {
        return;
    }
    let path = std::env::temp_dir().join(format!("memtide-crc32-{}.elf", std::process::id()));
    std::fs::write(&path, tiny_elf(&code())).expect("write the test ELF");
    let p = path.to_str().expect("utf-8").to_string();
    let r = run_memtide(
        &[
            "run",
            "--kernel",
            &p,
            "--no-initramfs",
            "--memory-mib",
            "128",
        ],
        Duration::from_secs(60),
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.status.code(), Some(1), "memtide must stop the VM: {r:?}");
    assert!(
        !r.stderr.contains("panicked at"),
        "memtide itself panicked:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("f2 0f 38 f1 03") && r.stderr.to_lowercase().contains("crc32"),
        "the error must name the instruction and its bytes:\n{}",
        r.stderr
    );
    let rip = format!("{:#x}", LOAD + HEADERS + 10);
    assert!(
        r.stderr.contains(&rip),
        "the error must name guest RIP {rip}:\n{}",
        r.stderr
    );
    if !memtide_test_support::on_nested_pvm_host() {
        assert!(
            r.stderr.contains("KVM could not emulate")
                && r.stderr.contains("only on the nested kvm_pvm host"),
            "on standard KVM no assist may run:\n{}",
            r.stderr
        );
    }
}
