//! The smallest i8042 keyboard controller a Linux guest needs: enough to
//! probe it and to reset the machine with command `0xfe`.
//!
//! Linux booted with `reboot=k` restarts through this port; memtide treats
//! the reset as the guest asking to stop.

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Offset of the command/status port (0x64) from the data port (0x60).
pub const COMMAND_OFFSET: u64 = 4;
/// Command byte that pulses the CPU reset line.
pub const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 controller: ports 0x60 (data) and 0x64 (status/command).
#[derive(Debug)]
pub struct I8042 {
    reset_evt: EventFd,
}

impl I8042 {
    /// Creates a controller that writes `reset_evt` when the guest resets.
    pub fn new(reset_evt: EventFd) -> Self {
        Self { reset_evt }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty, so the guest's
        // polling loops finish at once.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            if let Err(e) = self.reset_evt.write(1) {
                log::error!("i8042: cannot signal the reset: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals_and_other_writes_do_not() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let mut dev = I8042::new(evt.try_clone().expect("clone"));
        dev.write(0, &[CMD_RESET_CPU]);
        dev.write(COMMAND_OFFSET, &[0x20]);
        assert!(evt.read().is_err(), "no reset yet");
        dev.write(COMMAND_OFFSET, &[CMD_RESET_CPU]);
        assert_eq!(evt.read().expect("reset signalled"), 1);
        let mut status = [0xffu8];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
    }
}
