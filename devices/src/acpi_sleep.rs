//! The ACPI sleep control register of a hardware-reduced platform (FADT
//! `SLEEP_CONTROL_REG`): the guest writes `SLP_TYP | SLP_EN` to enter a
//! sleep state; memtide only implements S5 (soft off) and treats it as the
//! guest stopping.

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// SLP_EN: bit 5 of the sleep control register.
pub const SLP_EN: u8 = 1 << 5;
/// SLP_TYP occupies bits 2..5.
pub const SLP_TYP_SHIFT: u8 = 2;

/// Sleep control (offset 0) and status (offset 1) registers.
#[derive(Debug)]
pub struct AcpiSleep {
    off_evt: EventFd,
    s5_type: u8,
}

impl AcpiSleep {
    /// `off_evt` is written when the guest enters sleep type `s5_type`.
    pub fn new(off_evt: EventFd, s5_type: u8) -> Self {
        Self { off_evt, s5_type }
    }
}

impl BusDevice for AcpiSleep {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset == 0 && v & SLP_EN != 0 && (v >> SLP_TYP_SHIFT) & 0x7 == self.s5_type {
            if let Err(e) = self.off_evt.write(1) {
                log::error!("acpi: cannot signal power-off: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s5_with_slp_en_powers_off() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let mut d = AcpiSleep::new(evt.try_clone().expect("clone"), 5);
        d.write(0, &[5 << SLP_TYP_SHIFT]); // no SLP_EN
        d.write(0, &[(3 << SLP_TYP_SHIFT) | SLP_EN]); // S3
        d.write(1, &[(5 << SLP_TYP_SHIFT) | SLP_EN]); // status register
        assert!(evt.read().is_err());
        d.write(0, &[(5 << SLP_TYP_SHIFT) | SLP_EN]);
        assert_eq!(evt.read().expect("off"), 1);
    }
}
