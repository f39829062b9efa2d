//! The 16550A serial console on COM1 (ports 0x3f8-0x3ff, IRQ 4).
//!
//! The UART itself is `vm_superio::Serial`; this module wires it to the
//! host: output goes through [`ConsoleOutput`] (which also watches for a
//! guest kernel panic and for failed guest processes, [`GuestFault`]), input
//! comes from [`StdinInput`], and the interrupt is
//! an eventfd the VMM registers as a KVM irqfd.

mod console_output;
mod guest_fault;
mod stdin_input;

pub use console_output::{ConsoleOutput, GuestWatch, MAX_FAULTS, PANIC_MARKER};
pub use guest_fault::{signal_name, GuestFault};
pub use stdin_input::StdinInput;

use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// First I/O port of COM1.
pub const COM1_PORT: u16 = 0x3f8;
/// Number of ports a 16550 decodes.
pub const COM1_PORT_COUNT: u16 = 8;
/// The legacy interrupt line of COM1.
pub const COM1_IRQ: u32 = 4;

/// An interrupt line backed by an eventfd (registered as a KVM irqfd).
#[derive(Debug)]
pub struct IrqTrigger(EventFd);

impl IrqTrigger {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }
}

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// COM1 as seen on the port-I/O bus.
#[derive(Debug)]
pub struct SerialConsole {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleOutput>,
}

impl SerialConsole {
    /// Creates the console; `irq` is signalled on every UART interrupt.
    pub fn new(irq: EventFd, out: ConsoleOutput) -> Self {
        Self {
            uart: Serial::new(IrqTrigger::new(irq), out),
        }
    }

    /// Queues host input for the guest; returns how many bytes fit in the
    /// receive FIFO (the rest is dropped, as a real UART would).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(e) => {
                memtide_log_limit::warn_limited!("serial: input dropped: {e}");
                0
            }
        }
    }
}

impl BusDevice for SerialConsole {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = u8::try_from(offset).map_or(0xff, |off| self.uart.read(off));
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Ok(off), Some(&value)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        if let Err(e) = self.uart.write(off, value) {
            memtide_log_limit::warn_limited!("serial: write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            crate::bus::lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn transmit_reaches_output_and_receive_raises_irq() {
        let sink = Sink::default();
        let watch = Arc::new(GuestWatch::default());
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let out = ConsoleOutput::new(Box::new(sink.clone()), watch);
        let mut console = SerialConsole::new(irq.try_clone().expect("clone"), out);
        for b in b"hi\n" {
            console.write(0, &[*b]);
        }
        assert_eq!(&*crate::bus::lock(&sink.0), b"hi\n");
        // Enable the received-data interrupt (IER bit 0), then feed a byte.
        console.write(1, &[1]);
        assert_eq!(console.enqueue_input(b"x"), 1);
        assert!(irq.read().is_ok());
        let mut lsr = [0u8];
        console.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        console.read(0, &mut rbr);
        assert_eq!(rbr, [b'x']);
    }
}
