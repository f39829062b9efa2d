//! The virtio-mmio transport, version 2 (virtio 1.x §4.2.2): the register
//! file a driver uses to negotiate features, set up queues and drive the
//! device status, in front of any [`VirtioDevice`].

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::EventFd;

use super::{GuestMemory, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::bus::{lock, BusDevice};

/// Size of one device's register window.
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Offset of the QueueNotify register (the ioeventfd address).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4d54_4944; // "MTID"
const CONFIG_SPACE_OFFSET: u64 = 0x100;

/// Device status bits.
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error the driver must reset.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up.
    pub const FAILED: u32 = 128;
}

/// A virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_select: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
}

/// Errors from building a transport.
#[derive(Debug, thiserror::Error)]
pub enum MmioError {
    /// A queue size the virtio-queue crate refuses.
    #[error("invalid queue size: {0}")]
    Queue(virtio_queue::Error),
    /// No eventfd.
    #[error("cannot create a queue eventfd: {0}")]
    EventFd(std::io::Error),
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The device is a trait object without `Debug`.
        f.debug_struct("MmioTransport")
            .field("queues", &self.queues)
            .field("acked_features", &self.acked_features)
            .field("queue_select", &self.queue_select)
            .field("status", &self.status)
            .field("config_generation", &self.config_generation)
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// Wraps `device`; `interrupt` is its line to the guest.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemory,
        interrupt: Arc<Interrupt>,
    ) -> Result<Self, MmioError> {
        let sizes = lock(&device).queue_max_sizes();
        let queues = sizes
            .iter()
            .map(|&s| Queue::new(s).map_err(MmioError::Queue))
            .collect::<Result<Vec<_>, _>>()?;
        let queue_evts = sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(MmioError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            interrupt,
            queues,
            queue_evts,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_select: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        })
    }

    /// The per-queue notification eventfds, for KVM ioeventfds and the
    /// device's event loop (queue `i` is element `i`).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the driver has brought the device up.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Bumps the configuration generation (call before raising a
    /// configuration-change interrupt).
    pub fn bump_config_generation(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_select as usize)
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.queue_select = 0;
        self.status = 0;
        self.activated = false;
        self.interrupt.clear();
        lock(&self.device).reset();
    }

    fn write_status(&mut self, value: u32) {
        use status::*;
        if value == 0 {
            self.reset();
            return;
        }
        // The driver may only add bits, in order (virtio 1.x §3.1.1).
        if value & self.status != self.status {
            memtide_log_limit::warn_limited!(
                "virtio-mmio: driver cleared status bits ({:#x} -> {value:#x})",
                self.status
            );
            return;
        }
        let mut value = value;
        if value & FEATURES_OK != 0 && self.status & FEATURES_OK == 0 {
            let avail = lock(&self.device).avail_features();
            let ok = self.acked_features & !avail == 0
                && self.acked_features & (1 << VIRTIO_F_VERSION_1) != 0;
            if !ok {
                memtide_log_limit::warn_limited!(
                    "virtio-mmio: refusing features {:#x} (offered {avail:#x})",
                    self.acked_features
                );
                value &= !FEATURES_OK;
            }
        }
        self.status = value;
        if value & DRIVER_OK != 0 && value & FEATURES_OK != 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let ready: Vec<(usize, Queue)> = self
            .queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready() && q.is_valid(&*self.mem.memory()))
            .filter_map(|(i, q)| Queue::try_from(q.state()).ok().map(|q| (i, q)))
            .collect();
        let result = lock(&self.device).activate(
            self.acked_features,
            ready,
            self.mem.clone(),
            self.interrupt.clone(),
        );
        match result {
            Ok(()) => self.activated = true,
            Err(e) => {
                log::error!("virtio-mmio: activation failed: {e}");
                self.status |= status::DEVICE_NEEDS_RESET;
                self.bump_config_generation();
                let _ = self.interrupt.signal(super::interrupt::INT_CONFIG);
            }
        }
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => lock(&self.device).device_type(),
            0x0c => VENDOR_ID,
            0x10 => {
                let f = lock(&self.device).avail_features();
                match self.device_features_sel {
                    0 => (f & 0xffff_ffff) as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x34 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x44 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x60 => self.interrupt.status(),
            0x70 => self.status,
            0xfc => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, v: u32) {
        let queue_setup_allowed =
            self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0;
        match offset {
            0x14 => self.device_features_sel = v,
            0x20 => {
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                let mask = 0xffff_ffffu64 << shift;
                self.acked_features = (self.acked_features & !mask) | (u64::from(v) << shift);
            }
            0x24 => self.driver_features_sel = v,
            0x30 => self.queue_select = v,
            0x50 => {
                // Normally a KVM ioeventfd catches this write; without one,
                // forward it the same way.
                if let Some(evt) = self.queue_evts.get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            0x64 => self.interrupt.ack(v),
            0x70 => self.write_status(v),
            0x38 | 0x44 | 0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 if queue_setup_allowed => {
                let Some(q) = self.selected_queue() else {
                    return;
                };
                match offset {
                    // Saturated, not truncated: an oversized value must not
                    // wrap to a valid size; the queue refuses u16::MAX.
                    0x38 => q.set_size(u16::try_from(v).unwrap_or(u16::MAX)),
                    0x44 => q.set_ready(v == 1),
                    0x80 => q.set_desc_table_address(Some(v), None),
                    0x84 => q.set_desc_table_address(None, Some(v)),
                    0x90 => q.set_avail_ring_address(Some(v), None),
                    0x94 => q.set_avail_ring_address(None, Some(v)),
                    0xa0 => q.set_used_ring_address(Some(v), None),
                    _ => q.set_used_ring_address(None, Some(v)),
                }
            }
            _ => log::debug!(
                "virtio-mmio: ignored write {v:#x} to {offset:#x} (status {:#x})",
                self.status
            ),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let value = if data.len() == 4 {
            self.read_register(offset)
        } else {
            0
        };
        let bytes = value.to_le_bytes();
        for (d, s) in data
            .iter_mut()
            .zip(bytes.iter().chain(std::iter::repeat(&0)))
        {
            *d = *s;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            lock(&self.device).write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            memtide_log_limit::warn_limited!(
                "virtio-mmio: {}-byte write to register {offset:#x} ignored",
                data.len()
            );
            return;
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

    #[derive(Default)]
    struct Dummy {
        activated_with: Option<(u64, Vec<usize>)>,
        resets: u32,
        config: [u8; 8],
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> Vec<u16> {
            vec![16, 16]
        }
        fn avail_features(&self) -> u64 {
            (1 << VIRTIO_F_VERSION_1) | 0b11
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let o = usize::try_from(offset).expect("test offset");
            data.copy_from_slice(&self.config[o..o + data.len()]);
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            let o = usize::try_from(offset).expect("test offset");
            self.config[o..o + data.len()].copy_from_slice(data);
        }
        fn activate(
            &mut self,
            acked: u64,
            queues: Vec<(usize, Queue)>,
            _mem: GuestMemory,
            _i: Arc<Interrupt>,
        ) -> Result<(), super::super::ActivateError> {
            self.activated_with = Some((acked, queues.iter().map(|(i, _)| *i).collect()));
            Ok(())
        }
        fn reset(&mut self) {
            self.resets += 1;
        }
    }

    fn setup() -> (MmioTransport, Arc<Mutex<Dummy>>) {
        let mem = GuestMemoryAtomic::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("mem"),
        );
        let dev = Arc::new(Mutex::new(Dummy::default()));
        let irq = Arc::new(Interrupt::new(
            EventFd::new(libc::EFD_NONBLOCK).expect("evt"),
        ));
        let t = MmioTransport::new(dev.clone(), mem, irq).expect("transport");
        (t, dev)
    }

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    #[test]
    fn identification_registers() {
        let (mut t, _) = setup();
        assert_eq!(rd(&mut t, 0x00), MAGIC);
        assert_eq!(rd(&mut t, 0x04), 2);
        assert_eq!(rd(&mut t, 0x08), 42);
        wr(&mut t, 0x14, 1);
        assert_eq!(rd(&mut t, 0x10), 1, "VERSION_1 is bit 0 of page 1");
        wr(&mut t, 0x14, 0);
        assert_eq!(rd(&mut t, 0x10), 0b11);
    }

    fn negotiate(t: &mut MmioTransport, low: u32, high: u32) {
        wr(t, 0x70, status::ACKNOWLEDGE);
        wr(t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        wr(t, 0x24, 0);
        wr(t, 0x20, low);
        wr(t, 0x24, 1);
        wr(t, 0x20, high);
        wr(
            t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
    }

    fn ready_queue(t: &mut MmioTransport, index: u32, base: u32) {
        wr(t, 0x30, index);
        assert_eq!(rd(t, 0x34), 16);
        wr(t, 0x38, 8);
        wr(t, 0x80, base);
        wr(t, 0x90, base + 0x100);
        wr(t, 0xa0, base + 0x200);
        wr(t, 0x44, 1);
        assert_eq!(rd(t, 0x44), 1);
    }

    #[test]
    fn queue_size_above_16_bits_is_refused_not_truncated() {
        let (mut t, _) = setup();
        negotiate(&mut t, 0b01, 1);
        wr(&mut t, 0x30, 0);
        wr(&mut t, 0x38, 8);
        assert_eq!(t.queues[0].size(), 8);
        // 0x1_0004 truncated would be the valid size 4.
        wr(&mut t, 0x38, 0x1_0004);
        assert_eq!(t.queues[0].size(), 8, "refused, the size stays");
    }

    #[test]
    fn full_bring_up_activates_with_ready_queues_and_reset_undoes_it() {
        let (mut t, dev) = setup();
        negotiate(&mut t, 0b01, 1);
        assert_ne!(rd(&mut t, 0x70) & status::FEATURES_OK, 0);
        ready_queue(&mut t, 0, 0x1000);
        wr(
            &mut t,
            0x70,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        assert!(t.is_activated());
        let (acked, queues) = lock(&dev).activated_with.clone().expect("activated");
        assert_eq!(acked, (1 << 32) | 1);
        assert_eq!(queues, vec![0]);
        wr(&mut t, 0x70, 0);
        assert!(!t.is_activated());
        assert_eq!(rd(&mut t, 0x70), 0);
        assert_eq!(lock(&dev).resets, 1);
    }

    #[test]
    fn features_without_version_1_or_not_offered_are_refused() {
        let (mut t, _) = setup();
        negotiate(&mut t, 0b01, 0);
        assert_eq!(
            rd(&mut t, 0x70) & status::FEATURES_OK,
            0,
            "legacy driver refused"
        );
        let (mut t, _) = setup();
        negotiate(&mut t, 0b100, 1);
        assert_eq!(
            rd(&mut t, 0x70) & status::FEATURES_OK,
            0,
            "unoffered feature refused"
        );
    }

    #[test]
    fn queue_setup_is_ignored_before_features_ok_and_bad_selects_are_harmless() {
        let (mut t, _) = setup();
        wr(&mut t, 0x30, 0);
        wr(&mut t, 0x44, 1);
        assert_eq!(rd(&mut t, 0x44), 0, "not allowed before FEATURES_OK");
        negotiate(&mut t, 0, 1);
        wr(&mut t, 0x30, 99);
        assert_eq!(rd(&mut t, 0x34), 0, "no such queue");
        wr(&mut t, 0x44, 1);
        wr(&mut t, 0x50, 99);
        let mut short = [0u8; 2];
        t.read(0x00, &mut short);
        assert_eq!(short, [0, 0], "sub-word register reads return 0");
    }

    #[test]
    fn config_space_and_notify_forwarding() {
        let (mut t, dev) = setup();
        t.write(0x100 + 4, &[1, 2]);
        assert_eq!(&lock(&dev).config[4..6], &[1, 2]);
        let mut b = [0u8; 2];
        t.read(0x104, &mut b);
        assert_eq!(b, [1, 2]);
        wr(&mut t, 0x50, 1);
        assert_eq!(t.queue_evts()[1].read().expect("notified"), 1);
        assert_eq!(rd(&mut t, 0xfc), 0);
        t.bump_config_generation();
        assert_eq!(rd(&mut t, 0xfc), 1);
    }
}
