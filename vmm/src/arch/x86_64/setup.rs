//! Initial vCPU state: CPUID, MSRs, FPU, local APIC and the 64-bit boot
//! registers (long mode, paging on, `rsi` = zero page).

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, CpuId, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Address, Bytes, GuestAddress};

use super::gdt;
use crate::arch::x86_64::layout;
use vm_memory::GuestMemoryMmap;

/// Errors from setting up a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A KVM ioctl failed.
    #[error("cannot {what}: {source}")]
    Kvm {
        /// What was being set.
        what: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
    /// The MSR list could not be built.
    #[error("cannot build the MSR list: {0}")]
    MsrList(vmm_sys_util::fam::Error),
    /// KVM accepted fewer MSRs than given.
    #[error("KVM set {set} of {wanted} boot MSRs")]
    MsrsRejected {
        /// MSRs set.
        set: usize,
        /// MSRs given.
        wanted: usize,
    },
    /// Writing boot tables to guest memory failed.
    #[error("cannot write boot tables: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SetupError {
    move |source| SetupError::Kvm { what, source }
}

const CPUID_LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const CPUID_LEAF1_EDX_HTT: u32 = 1 << 28;

/// Adapts the host-supported CPUID table to vCPU `id` of `count`.
///
/// On the nested host the guest kernel sees the host's CPUID anyway (see
/// docs/nested-kvm-host notes); this still matters on bare metal.
pub fn adapt_cpuid(cpuid: &mut CpuId, id: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                entry.ecx |= CPUID_LEAF1_ECX_HYPERVISOR;
                if count > 1 {
                    entry.edx |= CPUID_LEAF1_EDX_HTT;
                }
            }
            0xb | 0x1f => entry.edx = u32::from(id),
            _ => {}
        }
    }
}

/// MSR values Linux expects at its 64-bit entry point.
pub fn boot_msr_entries() -> Vec<kvm_msr_entry> {
    const MSR_IA32_TSC: u32 = 0x10;
    const MSR_IA32_SYSENTER_CS: u32 = 0x174;
    const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
    const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
    const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
    const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
    const MSR_STAR: u32 = 0xc000_0081;
    const MSR_LSTAR: u32 = 0xc000_0082;
    const MSR_CSTAR: u32 = 0xc000_0083;
    const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
    const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    const MTRR_ENABLE_WRITEBACK: u64 = (1 << 11) | 6;
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WRITEBACK),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

/// Sets CPUID, MSRs, FPU and LAPIC of any vCPU.
pub fn configure_common(vcpu: &VcpuFd, cpuid: &CpuId) -> Result<(), SetupError> {
    vcpu.set_cpuid2(cpuid).map_err(kvm("set CPUID"))?;
    let entries = boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(SetupError::MsrList)?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm("set MSRs"))?;
    if set != entries.len() {
        return Err(SetupError::MsrsRejected {
            set,
            wanted: entries.len(),
        });
    }
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("set FPU"))?;
    configure_lapic(vcpu)
}

/// Wires LINT0 to ExtINT (the PIC) and LINT1 to NMI, as a BIOS would.
fn configure_lapic(vcpu: &VcpuFd) -> Result<(), SetupError> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const MODE_EXTINT: u32 = 0x7;
    const MODE_NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic().map_err(kvm("get LAPIC"))?;
    for (offset, mode) in [(APIC_LVT0, MODE_EXTINT), (APIC_LVT1, MODE_NMI)] {
        let reg = &mut lapic.regs[offset..offset + 4];
        let bytes: [u8; 4] = std::array::from_fn(|i| reg[i].to_ne_bytes()[0]);
        let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
        for (dst, src) in reg.iter_mut().zip(value.to_le_bytes()) {
            *dst = std::ffi::c_char::from_ne_bytes([src]);
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("set LAPIC"))
}

/// Writes the boot GDT, IDT and identity page tables into guest memory.
pub fn write_boot_tables(mem: &GuestMemoryMmap) -> Result<(), SetupError> {
    for (i, entry) in gdt::boot_gdt().iter().enumerate() {
        mem.write_obj(*entry, layout::BOOT_GDT_START.unchecked_add(i as u64 * 8))?;
    }
    mem.write_obj(0u64, layout::BOOT_IDT_START)?;
    let (pml4, pdpt, pds) = gdt::identity_map(layout::PDPTE_START.0, layout::PDE_START.0);
    mem.write_obj(pml4, layout::PML4_START)?;
    mem.write_obj(pdpt, layout::PDPTE_START)?;
    for (i, pd) in pds.iter().enumerate() {
        mem.write_obj(*pd, layout::PDE_START.unchecked_add(i as u64 * 8))?;
    }
    Ok(())
}

/// Puts the boot vCPU in 64-bit mode at `entry` with `rsi` pointing at the
/// zero page (the Linux 64-bit boot protocol).
pub fn configure_boot_registers(vcpu: &VcpuFd, entry: GuestAddress) -> Result<(), SetupError> {
    const CR0_PE: u64 = 1;
    const CR0_PG: u64 = 1 << 31;
    const CR4_PAE: u64 = 1 << 5;
    const EFER_LME: u64 = 1 << 8;
    const EFER_LMA: u64 = 1 << 10;

    let mut sregs = vcpu.get_sregs().map_err(kvm("get special registers"))?;
    let table = gdt::boot_gdt();
    let code = gdt::segment(table[1], 1);
    let data = gdt::segment(table[2], 2);
    let tss = gdt::segment(table[3], 3);
    sregs.gdt.base = layout::BOOT_GDT_START.0;
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the boot GDT is a few 8-byte entries: far below 64 KiB"
    )]
    let gdt_limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.gdt.limit = gdt_limit;
    sregs.idt.base = layout::BOOT_IDT_START.0;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.cr3 = layout::PML4_START.0;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(kvm("set special registers"))?;

    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry.0,
        rsp: layout::BOOT_STACK_POINTER,
        rbp: layout::BOOT_STACK_POINTER,
        rsi: layout::ZERO_PAGE_START.0,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(kvm("set registers"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn cpuid_gets_apic_id_count_and_hypervisor_bit() {
        let mut cpuid = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                edx: 7,
                ..Default::default()
            },
        ])
        .expect("cpuid");
        adapt_cpuid(&mut cpuid, 3, 4);
        let e = cpuid.as_slice();
        assert_eq!(e[0].ebx, (3 << 24) | (4 << 16) | 0x0800);
        assert_ne!(e[0].ecx & CPUID_LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & CPUID_LEAF1_EDX_HTT, 0);
        assert_eq!(e[1].edx, 3);
    }

    #[test]
    fn boot_msrs_enable_mtrr_writeback() {
        let e = boot_msr_entries();
        let mtrr = e.iter().find(|m| m.index == 0x2ff).expect("MTRR entry");
        assert_eq!(mtrr.data, 0x806);
    }
}
