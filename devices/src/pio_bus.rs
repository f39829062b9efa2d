//! A port-I/O bus: maps x86 I/O port ranges to devices.

use std::sync::{Arc, Mutex};

/// A device reachable through x86 `in`/`out` instructions.
pub trait PioDevice: Send {
    /// Handles a read of `data.len()` bytes at `offset` from the device's base port.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Handles a write of `data` at `offset` from the device's base port.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// Errors from building a [`PioBus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PioBusError {
    /// The new range overlaps one already on the bus.
    #[error("port range {base:#x}+{len} overlaps an existing device")]
    Overlap {
        /// First port of the rejected range.
        base: u16,
        /// Length of the rejected range.
        len: u16,
    },
    /// The range is empty or runs past port 0xffff.
    #[error("port range {base:#x}+{len} is empty or out of bounds")]
    BadRange {
        /// First port of the rejected range.
        base: u16,
        /// Length of the rejected range.
        len: u16,
    },
}

/// A shared, lockable port-I/O device.
pub type SharedPioDevice = Arc<Mutex<dyn PioDevice>>;

struct Entry {
    base: u16,
    len: u16,
    device: SharedPioDevice,
}

/// Dispatches port accesses to the device that owns the port.
///
/// Reads of ports that no device owns return all ones, as on real hardware;
/// writes to them are dropped.
#[derive(Default)]
pub struct PioBus {
    entries: Vec<Entry>,
}

impl PioBus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at ports `base..base + len`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: SharedPioDevice,
    ) -> Result<(), PioBusError> {
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 0x1_0000 {
            return Err(PioBusError::BadRange { base, len });
        }
        let overlaps = self.entries.iter().any(|e| {
            let e_end = u32::from(e.base) + u32::from(e.len);
            u32::from(base) < e_end && u32::from(e.base) < end
        });
        if overlaps {
            return Err(PioBusError::Overlap { base, len });
        }
        self.entries.push(Entry { base, len, device });
        self.entries.sort_by_key(|e| e.base);
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&Entry, u16)> {
        self.entries
            .iter()
            .find(|e| port >= e.base && u32::from(port) < u32::from(e.base) + u32::from(e.len))
            .map(|e| (e, port - e.base))
    }

    /// Performs a port read; returns `false` when no device owns `port`.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port) {
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

    /// Performs a port write; returns `false` when no device owns `port`.
    pub fn write(&self, port: u16, data: &[u8]) -> bool {
        match self.find(port) {
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
        writes: Vec<(u16, Vec<u8>)>,
    }

    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_offset_and_rejects_overlap() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = PioBus::new();
        bus.insert(0x3f8, 8, dev.clone()).expect("insert");
        assert_eq!(
            bus.insert(0x3ff, 2, dev.clone()),
            Err(PioBusError::Overlap {
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
        let mut bus = PioBus::new();
        assert!(bus.insert(0x10, 0, dev.clone()).is_err());
        assert!(bus.insert(0xfff0, 0x20, dev).is_err());
    }
}
