//! The legacy port-I/O devices every VM has: the 16550 serial console on
//! COM1 (output to stdout, input from stdin, IRQ 4 through an irqfd) and
//! the i8042 whose reset line is memtide's stop signal.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use memtide_devices::bus::Bus;
use memtide_devices::i8042::I8042;
use memtide_devices::serial::{
    ConsoleOutput, GuestWatch, SerialConsole, COM1_IRQ, COM1_PORT, COM1_PORT_COUNT,
};
use vmm_sys_util::eventfd::EventFd;

use super::DeviceManagerError;

/// i8042 data port; the command port is at +4.
pub const I8042_PORT: u16 = 0x60;

/// Creates the serial console and the i8042 on a new port-I/O bus; the
/// i8042 writes `reset_evt` when the guest resets, the console reports to
/// `watch` what it sees on the guest's output.
pub fn build(
    vm: &VmFd,
    reset_evt: &EventFd,
    watch: &Arc<GuestWatch>,
) -> Result<(Bus, Arc<Mutex<SerialConsole>>), DeviceManagerError> {
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DeviceManagerError::Io {
        what: "create serial irqfd",
        source,
    })?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(|source| DeviceManagerError::Kvm {
            what: "register the serial irqfd",
            source,
        })?;
    let output = ConsoleOutput::new(Box::new(std::io::stdout()), watch.clone());
    let console = Arc::new(Mutex::new(SerialConsole::new(serial_irq, output)));
    let reset = reset_evt
        .try_clone()
        .map_err(|source| DeviceManagerError::Io {
            what: "clone reset eventfd",
            source,
        })?;
    let i8042 = Arc::new(Mutex::new(I8042::new(reset)));
    let mut pio = Bus::new();
    pio.insert(COM1_PORT.into(), COM1_PORT_COUNT.into(), console.clone())?;
    pio.insert(I8042_PORT.into(), 5, i8042)?;
    Ok((pio, console))
}
