//! The emulation fallback: what the vCPU does when the nested host's KVM
//! could not emulate an instruction. [`emulate::plan`] decides (pure); this
//! module reads the instruction, applies the decision to the vCPU, and
//! carries out `xsave64`/`xrstor64` ([`xstate`], [`pagewalk`]).

use iced_x86::Register;
use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events, KVM_MAX_CPUID_ENTRIES};
use vm_memory::{Bytes, GuestAddress};

use super::{emulate, kvm, pagewalk, xstate, GuestCpu, NestedError};
use crate::vcpu::insn::{bitness, CpuContext, MAX_INSN_LEN};

/// The zero flag in RFLAGS.
const RFLAGS_ZF: u64 = 1 << 6;
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

/// The fallback's state for one vCPU.
#[derive(Debug, Default)]
pub struct FallbackState {
    /// Where the XSAVE components lie, from this vCPU's CPUID (read at the
    /// first emulated `xsave64`/`xrstor64`).
    xstate_layout: Option<xstate::Layout>,
}

impl FallbackState {
    /// Handles an instruction the host's KVM could not emulate: steps in
    /// for those [`emulate::plan`] knows, stops the vCPU for the others.
    pub fn run(&mut self, cpu: &GuestCpu<'_>) -> Result<(), NestedError> {
        let mut regs = cpu.fd.get_regs().map_err(kvm("get registers"))?;
        let sregs = cpu.fd.get_sregs().map_err(kvm("get special registers"))?;
        let fpu = cpu.fd.get_fpu().map_err(kvm("get FPU state"))?;
        let bitness = bitness(sregs.cs.l, sregs.cs.db);
        let linear = if bitness == 64 {
            regs.rip
        } else {
            sregs.cs.base.wrapping_add(regs.rip)
        };
        let bytes = cpu
            .read_virt(linear, MAX_INSN_LEN)
            .map_err(|_| NestedError::InstructionNotMapped { rip: regs.rip })?;
        let ctx = CpuContext {
            rip: regs.rip,
            bitness,
            fpu_status: fpu.fsw,
            fpu_control: fpu.fcw,
        };
        let plan = emulate::plan(&bytes, ctx)?;
        log::debug!("vcpu{}: fallback {plan:?} at {:#x}", cpu.id, regs.rip);
        if let emulate::Fallback::Xstate { len, restore, mem } = plan {
            return self.emulate_xstate(cpu, regs, &sregs, len, restore, mem);
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
            cpu.fd.set_regs(&regs).map_err(kvm("set registers"))?;
        }
        if let Some(vector) = vector {
            self.inject_exception(cpu, vector)?;
        }
        Ok(())
    }

    fn inject_exception(&self, cpu: &GuestCpu<'_>, vector: u8) -> Result<(), NestedError> {
        self.inject_fault(cpu, vector, None)
    }

    /// Injects exception `vector` with `error_code`, RIP unchanged.
    fn inject_fault(
        &self,
        cpu: &GuestCpu<'_>,
        vector: u8,
        error_code: Option<u32>,
    ) -> Result<(), NestedError> {
        let mut events: kvm_vcpu_events =
            cpu.fd.get_vcpu_events().map_err(kvm("get vCPU events"))?;
        events.exception.injected = 1;
        events.exception.nr = vector;
        events.exception.has_error_code = u8::from(error_code.is_some());
        events.exception.error_code = error_code.unwrap_or(0);
        cpu.fd
            .set_vcpu_events(&events)
            .map_err(kvm("inject an exception"))
    }

    /// Injects a page fault at `addr` (CR2) with `error_code`.
    fn inject_page_fault(
        &self,
        cpu: &GuestCpu<'_>,
        sregs: &kvm_sregs,
        addr: u64,
        error_code: u32,
    ) -> Result<(), NestedError> {
        let mut sregs = *sregs;
        sregs.cr2 = addr;
        cpu.fd
            .set_sregs(&sregs)
            .map_err(kvm("set CR2 for a page fault"))?;
        self.inject_fault(cpu, VECTOR_PF, Some(error_code))
    }

    /// Carries out the guest's `xsave64` (`restore` false) or `xrstor64`
    /// at `regs.rip` with save area `mem`: moves the components EDX:EAX &
    /// XCR0 selects between KVM's XSAVE state and guest memory
    /// ([`xstate::save`], [`xstate::restore`]) and advances RIP by `len`,
    /// or raises in the guest the fault the CPU would (#UD, #GP, #PF).
    fn emulate_xstate(
        &mut self,
        cpu: &GuestCpu<'_>,
        mut regs: kvm_regs,
        sregs: &kvm_sregs,
        len: u64,
        restore: bool,
        mem: emulate::MemOperand,
    ) -> Result<(), NestedError> {
        let what = if restore { "xrstor64" } else { "xsave64" };
        let rip = regs.rip;
        let fail = |reason: String| NestedError::Xstate { what, rip, reason };
        if sregs.cr4 & CR4_OSXSAVE == 0 {
            return self.inject_fault(cpu, VECTOR_UD, None);
        }
        let addr = mem
            .address(|r| register_value(&regs, sregs, r))
            .ok_or_else(|| {
                fail(format!(
                    "its operand uses a register memtide does not read ({mem:?})"
                ))
            })?;
        if addr % xstate::ALIGN != 0 {
            return self.inject_fault(cpu, VECTOR_GP, Some(0));
        }
        let xcrs = cpu.fd.get_xcrs().map_err(kvm("get XCR0"))?;
        let xcr0 = xcrs
            .xcrs
            .iter()
            .take(xcrs.nr_xcrs as usize)
            .find(|x| x.xcr == 0)
            .map(|x| x.value)
            .ok_or_else(|| fail("KVM reports no XCR0".into()))?;
        let rfbm = ((regs.rdx << 32) | (regs.rax & 0xffff_ffff)) & xcr0;
        let layout = self.xstate_layout(cpu)?;
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
            let read = |gpa: u64| cpu.mem.read_obj::<u64>(GuestAddress(gpa)).ok();
            let gpa = match pagewalk::translate(sregs.cr3, va, access, read) {
                Ok(gpa) => gpa,
                Err(pagewalk::WalkError::PageFault { error_code }) => {
                    log::debug!(
                        "vcpu{}: {what} at {rip:#x}: page fault at {va:#x}, error code {error_code:#x}",
                        cpu.id
                    );
                    return self.inject_page_fault(cpu, sregs, va, error_code);
                }
                Err(pagewalk::WalkError::NonCanonical) => {
                    return self.inject_fault(cpu, VECTOR_GP, Some(0));
                }
                Err(e) => return Err(fail(e.to_string())),
            };
            let n = (0x1000 - (va & 0xfff)).min(end.wrapping_sub(va));
            #[allow(
                clippy::cast_possible_truncation,
                reason = "at most 0x1000: the rest of one page"
            )]
            let len = n as usize;
            pieces.push((GuestAddress(gpa), len));
            va = va.wrapping_add(n);
        }
        let mut area = vec![0u8; area_len];
        let mut at = 0;
        for &(gpa, n) in &pieces {
            cpu.mem
                .read_slice(&mut area[at..at + n], gpa)
                .map_err(|e| fail(format!("the save area is not in guest RAM: {e}")))?;
            at += n;
        }
        let mut kvm_state = cpu.fd.get_xsave().map_err(kvm("get the XSAVE state"))?;
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
                log::debug!("vcpu{}: {what} at {rip:#x} faults: {e}", cpu.id);
                return self.inject_fault(cpu, VECTOR_GP, Some(0));
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
            unsafe { cpu.fd.set_xsave(&kvm_state) }.map_err(kvm("set the XSAVE state"))?;
        } else {
            let mut at = 0;
            for &(gpa, n) in &pieces {
                cpu.mem
                    .write_slice(&area[at..at + n], gpa)
                    .map_err(|e| fail(format!("the save area is not in guest RAM: {e}")))?;
                at += n;
            }
        }
        regs.rip = regs.rip.wrapping_add(len);
        cpu.fd.set_regs(&regs).map_err(kvm("set registers"))
    }

    /// The XSAVE layout from this vCPU's CPUID leaf 0xD (cached).
    fn xstate_layout(&mut self, cpu: &GuestCpu<'_>) -> Result<xstate::Layout, NestedError> {
        if let Some(layout) = &self.xstate_layout {
            return Ok(layout.clone());
        }
        let cpuid = cpu
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
}
