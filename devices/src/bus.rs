//! An address bus: maps ranges of x86 I/O ports or guest-physical MMIO
//! addresses to devices. Port numbers are used as addresses on the PIO bus.

use std::sync::{Arc, Mutex};

/// A device reachable through port I/O or MMIO.
pub trait BusDevice: Send {
    /// Handles a read of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write of `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors from building a [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus.
    #[error("range {base:#x}+{len:#x} overlaps an existing device")]
    Overlap {
        /// First address of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// The range is empty or wraps around.
    #[error("range {base:#x}+{len:#x} is empty or out of bounds")]
    BadRange {
        /// First address of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

/// A shared, lockable port-I/O device.
pub type SharedBusDevice = Arc<Mutex<dyn BusDevice>>;

struct Entry {
    base: u64,
    len: u64,
    device: SharedBusDevice,
}

/// Dispatches accesses to the device that owns the address.
///
/// Reads of addresses that no device owns return all ones, as on real
/// hardware; writes to them are dropped.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The devices are trait objects without `Debug`; their ranges are enough.
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.base..e.base + e.len))
            .finish()
    }
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at `base..base + len`.
    pub fn insert(&mut self, base: u64, len: u64, device: SharedBusDevice) -> Result<(), BusError> {
        let Some(end) = base.checked_add(len).filter(|_| len > 0) else {
            return Err(BusError::BadRange { base, len });
        };
        let overlaps = self
            .entries
            .iter()
            .any(|e| base < e.base + e.len && e.base < end);
        if overlaps {
            return Err(BusError::Overlap { base, len });
        }
        self.entries.push(Entry { base, len, device });
        self.entries.sort_by_key(|e| e.base);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Entry, u64)> {
        self.entries
            .iter()
            .find(|e| addr >= e.base && addr - e.base < e.len)
            .map(|e| (e, addr - e.base))
    }

    /// Performs a read; returns `false` when no device owns `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((entry, offset)) => {
                lock(&entry.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Performs a write; returns `false` when no device owns `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((entry, offset)) => {
                lock(&entry.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering it if a previous holder panicked: device state
/// is plain registers, so a poisoned lock carries nothing half-written that
/// would be worse than stopping the VM.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset.to_le_bytes()[0]);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset_and_rejects_overlap() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, dev.clone()).expect("insert");
        assert_eq!(
            bus.insert(0x3ff, 2, dev.clone()),
            Err(BusError::Overlap {
                base: 0x3ff,
                len: 2
            })
        );
        bus.insert(0x400, 1, dev.clone())
            .expect("adjacent range is fine");
        let mut buf = [0u8; 1];
        assert!(bus.read(0x3fb, &mut buf));
        assert_eq!(buf, [3]);
        assert!(bus.write(0x3f8, &[0x41]));
        assert!(!bus.write(0x80, &[1]));
        assert!(!bus.read(0x3f7, &mut buf));
        assert_eq!(buf, [0xff]);
        assert_eq!(lock(&dev).writes, vec![(0, vec![0x41])]);
    }

    #[test]
    fn rejects_empty_and_wrapping_ranges() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        assert!(bus.insert(0x10, 0, dev.clone()).is_err());
        assert!(bus.insert(u64::MAX - 4, 0x20, dev).is_err());
    }
}
