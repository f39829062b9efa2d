//! The architectural state of a vCPU at the moment the guest died, printed
//! with a triple fault so that a crash can be told apart: a guest bug, a
//! VMM set-up error, or the host's (or an emulator's) virtualization.

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events};

/// Registers and pending events of a vCPU that stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Flags.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2: the last page-fault address.
    pub cr2: u64,
    /// CR3: the page-table root.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// CS selector and its long-mode bit.
    pub cs: (u16, u8),
    /// IDT base and limit.
    pub idt: (u64, u16),
    /// The exception KVM had pending or injected, if any (vector, error code).
    pub exception: Option<(u8, Option<u32>)>,
}

impl CpuSnapshot {
    /// Builds a snapshot from what KVM returned.
    pub fn new(regs: &kvm_regs, sregs: &kvm_sregs, events: Option<&kvm_vcpu_events>) -> Self {
        let exception = events
            .filter(|e| e.exception.injected != 0 || e.exception.pending != 0)
            .map(|e| {
                let code = (e.exception.has_error_code != 0).then_some(e.exception.error_code);
                (e.exception.nr, code)
            });
        Self {
            rip: regs.rip,
            rsp: regs.rsp,
            rflags: regs.rflags,
            cr0: sregs.cr0,
            cr2: sregs.cr2,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
            cs: (sregs.cs.selector, sregs.cs.l),
            idt: (sregs.idt.base, sregs.idt.limit),
            exception,
        }
    }
}

impl CpuSnapshot {
    /// Whether this is the architectural reset state (CS:IP F000:FFF0,
    /// paging off): KVM on AMD SVM resets a vCPU when it reports a
    /// shutdown, so the state at the fault itself is gone.
    pub fn is_reset_state(&self) -> bool {
        self.rip == 0xfff0 && self.cs.0 == 0xf000 && self.cr0 & 1 == 0
    }
}

impl std::fmt::Display for CpuSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rip={:#x} rsp={:#x} rflags={:#x} cs={:#x}{} cr0={:#x} cr2={:#x} cr3={:#x} \
             cr4={:#x} efer={:#x} idt={:#x}/{:#x}",
            self.rip,
            self.rsp,
            self.rflags,
            self.cs.0,
            if self.cs.1 != 0 { "(64-bit)" } else { "" },
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.efer,
            self.idt.0,
            self.idt.1
        )?;
        match self.exception {
            Some((nr, Some(code))) => write!(f, " exception={nr} error_code={code:#x}")?,
            Some((nr, None)) => write!(f, " exception={nr}")?,
            None => {}
        }
        if self.is_reset_state() {
            write!(f, " (the reset state: this host's KVM reset the vCPU before reporting the shutdown, as KVM on AMD SVM does)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_registers_and_the_pending_exception() {
        let regs = kvm_regs {
            rip: 0xffff_ffff_8100_0000,
            rsp: 0x1000,
            rflags: 0x2,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr3: 0x9000,
            ..Default::default()
        };
        sregs.cs.selector = 0x10;
        sregs.cs.l = 1;
        let mut events = kvm_vcpu_events::default();
        events.exception.injected = 1;
        events.exception.nr = 14;
        events.exception.has_error_code = 1;
        events.exception.error_code = 2;
        let line = CpuSnapshot::new(&regs, &sregs, Some(&events)).to_string();
        assert!(
            line.starts_with("rip=0xffffffff81000000 rsp=0x1000"),
            "{line}"
        );
        assert!(line.contains("cs=0x10(64-bit)"), "{line}");
        assert!(line.contains("cr3=0x9000"), "{line}");
        assert!(line.ends_with("exception=14 error_code=0x2"), "{line}");
        let quiet = CpuSnapshot::new(&regs, &sregs, Some(&kvm_vcpu_events::default()));
        assert_eq!(quiet.exception, None);
        assert!(!quiet.is_reset_state());
    }

    #[test]
    fn the_reset_state_is_named() {
        let regs = kvm_regs {
            rip: 0xfff0,
            rflags: 0x2,
            ..Default::default()
        };
        let mut sregs = kvm_sregs {
            cr0: 0x10,
            ..Default::default()
        };
        sregs.cs.selector = 0xf000;
        let snap = CpuSnapshot::new(&regs, &sregs, None);
        assert!(snap.is_reset_state());
        assert!(snap.to_string().contains("the reset state"));
    }
}
