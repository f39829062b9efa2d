//! The memory hot-plug controller: a small MMIO register window through
//! which the guest's ACPI methods (`_STA`, `_CRS`, `_OST` of each `PNP0C80`
//! memory device) learn which hot-plug slots are populated, where, and how
//! big, and report back when they are online.
//!
//! Register window (all 32-bit, little endian):
//!
//! | offset | name | access | meaning |
//! |---|---|---|---|
//! | 0x00 | SELECT | R/W | slot the other registers refer to |
//! | 0x04 | STATUS | R/W | bit 0 PRESENT, bit 1 INSERTING (write 1 to clear) |
//! | 0x08 | BASE_LO | R | guest-physical base of the selected slot |
//! | 0x0c | BASE_HI | R | |
//! | 0x10 | SIZE_LO | R | size in bytes |
//! | 0x14 | SIZE_HI | R | |
//! | 0x18 | OST_EVENT | W | `_OST` source event of the selected slot |
//! | 0x1c | OST_STATUS | W | `_OST` status code; writing it records the report |
//!
//! A slot selector out of range reads as an absent, empty slot.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::bus::BusDevice;

/// Size of the register window.
pub const WINDOW_SIZE: u64 = 0x20;
/// STATUS bit: the slot holds memory.
pub const STATUS_PRESENT: u32 = 1;
/// STATUS bit: the slot was just populated and the guest has not
/// acknowledged it yet.
pub const STATUS_INSERTING: u32 = 2;

/// One `_OST` report from the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OstReport {
    /// ACPI source event (1 = device check / insertion).
    pub event: u32,
    /// Status code (0 = success).
    pub status: u32,
    /// When it arrived.
    pub at: Instant,
}

/// One hot-plug slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Guest-physical base.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Populated.
    pub present: bool,
    /// Populated and not yet acknowledged by the guest.
    pub inserting: bool,
    /// The last `_OST` report.
    pub ost: Option<OstReport>,
    /// When memtide populated the slot.
    pub plugged_at: Option<Instant>,
}

/// Slot state shared between the controller and the VMM.
pub type SharedSlots = Arc<Mutex<Vec<Slot>>>;

/// The controller device.
#[derive(Debug)]
pub struct MemoryHotplugController {
    slots: SharedSlots,
    select: u32,
    ost_event: u32,
}

impl MemoryHotplugController {
    /// Creates the controller over `slots`.
    pub fn new(slots: SharedSlots) -> Self {
        Self {
            slots,
            select: 0,
            ost_event: 0,
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        if offset == 0x00 {
            return self.select;
        }
        let slots = crate::bus::lock(&self.slots);
        let Some(s) = slots.get(self.select as usize) else {
            return 0;
        };
        match offset {
            0x04 => {
                let mut status = 0;
                if s.present {
                    status |= STATUS_PRESENT;
                }
                if s.inserting {
                    status |= STATUS_INSERTING;
                }
                status
            }
            0x08 => (s.base & 0xffff_ffff) as u32,
            0x0c => (s.base >> 32) as u32,
            0x10 => (s.size & 0xffff_ffff) as u32,
            0x14 => (s.size >> 32) as u32,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        match offset {
            0x00 => self.select = value,
            0x04 => {
                if value & STATUS_INSERTING != 0 {
                    if let Some(s) = crate::bus::lock(&self.slots).get_mut(self.select as usize) {
                        s.inserting = false;
                    }
                }
            }
            0x18 => self.ost_event = value,
            0x1c => {
                if let Some(s) = crate::bus::lock(&self.slots).get_mut(self.select as usize) {
                    s.ost = Some(OstReport {
                        event: self.ost_event,
                        status: value,
                        at: Instant::now(),
                    });
                }
            }
            _ => log::debug!("memory hot-plug: ignored write {value:#x} at {offset:#x}"),
        }
    }
}

impl BusDevice for MemoryHotplugController {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = if data.len() == 4 {
            self.read_reg(offset)
        } else {
            0
        };
        for (d, s) in data
            .iter_mut()
            .zip(v.to_le_bytes().iter().chain(std::iter::repeat(&0)))
        {
            *d = *s;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Ok(b) = <[u8; 4]>::try_from(data) {
            self.write_reg(offset, u32::from_le_bytes(b));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(c: &mut MemoryHotplugController, off: u64) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(c: &mut MemoryHotplugController, off: u64, v: u32) {
        c.write(off, &v.to_le_bytes());
    }

    fn controller() -> (MemoryHotplugController, SharedSlots) {
        let slots: SharedSlots = Arc::new(Mutex::new(vec![
            Slot {
                base: 0x1_0000_0000,
                size: 128 << 20,
                present: false,
                inserting: false,
                ost: None,
                plugged_at: None,
            },
            Slot {
                base: 0x1_0800_0000,
                size: 128 << 20,
                present: true,
                inserting: true,
                ost: None,
                plugged_at: None,
            },
        ]));
        (MemoryHotplugController::new(slots.clone()), slots)
    }

    #[test]
    fn selected_slot_registers() {
        let (mut c, _) = controller();
        assert_eq!(rd(&mut c, 0x04), 0, "slot 0 empty");
        wr(&mut c, 0x00, 1);
        assert_eq!(rd(&mut c, 0x00), 1);
        assert_eq!(rd(&mut c, 0x04), STATUS_PRESENT | STATUS_INSERTING);
        assert_eq!(rd(&mut c, 0x08), 0x0800_0000);
        assert_eq!(rd(&mut c, 0x0c), 1);
        assert_eq!(rd(&mut c, 0x10), 128 << 20);
        assert_eq!(rd(&mut c, 0x14), 0);
    }

    #[test]
    fn acknowledging_insertion_and_ost_reports() {
        let (mut c, slots) = controller();
        wr(&mut c, 0x00, 1);
        wr(&mut c, 0x04, STATUS_INSERTING);
        assert_eq!(rd(&mut c, 0x04), STATUS_PRESENT);
        wr(&mut c, 0x18, 1);
        wr(&mut c, 0x1c, 0);
        let ost = crate::bus::lock(&slots)[1].ost.expect("recorded");
        assert_eq!((ost.event, ost.status), (1, 0));
    }

    #[test]
    fn out_of_range_selector_and_odd_sizes_are_harmless() {
        let (mut c, slots) = controller();
        wr(&mut c, 0x00, 7);
        assert_eq!(rd(&mut c, 0x04), 0);
        assert_eq!(rd(&mut c, 0x08), 0);
        wr(&mut c, 0x04, STATUS_INSERTING);
        wr(&mut c, 0x1c, 3);
        c.write(0x00, &[1, 2]);
        let mut two = [9u8; 2];
        c.read(0x04, &mut two);
        assert_eq!(two, [0, 0]);
        assert!(crate::bus::lock(&slots).iter().all(|s| s.ost.is_none()));
    }
}
