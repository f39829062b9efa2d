//! The DSDT's AML: one `PNP0C80` memory device per hot-plug slot, backed by
//! the memory hot-plug controller's register window, an ACPI GED whose
//! event rescans the slots, and `\_S5` for power-off.

use acpi_tables::aml::{
    self, Acquire, Add, And, Arg, CreateQWordField, Device, EISAName, Equal, Field,
    FieldAccessType, FieldEntry, FieldLockRule, FieldUpdateRule, If, LessThan, Local, Method,
    MethodCall, Mutex, Name, Notify, OpRegion, OpRegionSpace, Or, Package, Path, Release,
    ResourceTemplate, Return, Scope, ShiftLeft, Store, Subtract, While,
};
use acpi_tables::Aml;

/// Where the hot-plug controller and the GED live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotplugAml {
    /// Base of the controller's register window.
    pub controller_base: u64,
    /// Size of that window.
    pub controller_size: u64,
    /// Number of slots.
    pub slots: u32,
    /// The GED's interrupt (GSI).
    pub ged_irq: u32,
}

/// A virtio-mmio device to declare (the kernel's virtio_mmio driver
/// matches `LNRO0005`); on an ACPI guest this replaces the
/// `virtio_mmio.device=` command-line entry, whose legacy IRQ numbers a
/// hardware-reduced platform does not map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioAml {
    /// Base of the register window.
    pub base: u32,
    /// Size of the window.
    pub size: u32,
    /// GSI.
    pub irq: u32,
}

fn virtio_device(i: usize, d: &VirtioMmioAml) -> Vec<u8> {
    let mut out = Vec::new();
    let hid = Name::new("_HID".into(), &"LNRO0005");
    let uid = Name::new("_UID".into(), &(i as u64));
    let window = aml::Memory32Fixed::new(true, d.base, d.size);
    let irq = aml::Interrupt::new(true, true, false, false, d.irq);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&window, &irq]));
    Device::new(Path::new(&format!("VR{i:02X}")), vec![&hid, &uid, &crs]).to_aml_bytes(&mut out);
    out
}

/// COM1 as an ACPI device (PNP0501, ports 0x3f8-0x3ff, IRQ 4). With the
/// hardware-reduced ACPI platform Linux has no legacy PIC and so no ISA
/// IRQ numbers: the UART's interrupt exists only as a GSI described here,
/// which the kernel's PNP layer maps for the 8250 driver. Without it the
/// console still prints (the kernel polls it), but a process writing to
/// `/dev/console` gets EIO because the port's IRQ cannot be requested.
fn com1() -> Vec<u8> {
    let mut out = Vec::new();
    let hid = Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = Name::new("_UID".into(), &aml::ZERO);
    let io = aml::IO::new(COM1_BASE, COM1_BASE, 1, 8);
    let irq = aml::Interrupt::new(true, true, false, false, COM1_GSI);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&io, &irq]));
    Device::new(Path::new("COM1"), vec![&hid, &uid, &crs]).to_aml_bytes(&mut out);
    out
}

/// First I/O port of COM1.
const COM1_BASE: u16 = 0x3f8;
/// COM1's interrupt line.
const COM1_GSI: u32 = 4;

/// `\_S5` sleep type value written to the sleep control register.
pub const S5_SLEEP_TYPE: u8 = 5;

fn slot_name(i: u32) -> String {
    format!("M{i:03X}")
}

fn controller(h: &HotplugAml) -> Vec<u8> {
    let mut out = Vec::new();
    let n = u64::from(h.slots);
    let lock = || Acquire::new("MLCK".into(), 0xffff);
    let unlock = || Release::new("MLCK".into());
    let msel: Path = "MSEL".into();
    let msts: Path = "MSTS".into();

    // MSCN: notify every slot whose INSERTING bit is set, then clear it.
    let inserting = And::new(&aml::Zero {}, &msts, &2u8);
    let is_inserting = Equal::new(&inserting, &2u8);
    let notify_call = MethodCall::new("MTFY".into(), vec![&Local(0), &aml::One {}]);
    let clear = Store::new(&msts, &2u8);
    let scan_if = If::new(&is_inserting, vec![&notify_call, &clear]);
    let sel_local = Store::new(&msel, &Local(0));
    let inc = Add::new(&Local(0), &Local(0), &aml::One {});
    let below_n = LessThan::new(&Local(0), &n);
    let scan_loop = While::new(&below_n, vec![&sel_local, &scan_if, &inc]);
    let zero_local = Store::new(&Local(0), &aml::Zero {});
    let (acq, rel) = (lock(), unlock());
    let mscn = Method::new(
        "MSCN".into(),
        0,
        true,
        vec![&acq, &zero_local, &scan_loop, &rel],
    );

    // MTFY(slot, event): Notify the slot's device.
    let names: Vec<Path> = (0..h.slots).map(|i| Path::new(&slot_name(i))).collect();
    let indices: Vec<u64> = (0..u64::from(h.slots)).collect();
    let notifies: Vec<Notify> = names.iter().map(|p| Notify::new(p, &Arg(1))).collect();
    let conds: Vec<Equal> = indices.iter().map(|i| Equal::new(&Arg(0), i)).collect();
    let ifs: Vec<If> = conds
        .iter()
        .zip(&notifies)
        .map(|(c, n)| If::new(c, vec![n]))
        .collect();
    let if_refs: Vec<&dyn Aml> = ifs.iter().map(|i| i as &dyn Aml).collect();
    let mtfy = Method::new("MTFY".into(), 2, false, if_refs);

    // MSTA(slot): 0xF if present, else 0.
    let sel_arg = Store::new(&msel, &Arg(0));
    let present_bit = And::new(&aml::Zero {}, &msts, &aml::One {});
    let present = Equal::new(&present_bit, &aml::One {});
    let set_f = Store::new(&Local(0), &0x0fu8);
    let if_present = If::new(&present, vec![&set_f]);
    let ret_local = Return::new(&Local(0));
    let (acq2, rel2) = (lock(), unlock());
    let msta = Method::new(
        "MSTA".into(),
        1,
        false,
        vec![&acq2, &zero_local, &sel_arg, &if_present, &rel2, &ret_local],
    );

    // MCRS(slot): a QWordMemory resource from BASE/SIZE.
    let template = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::Cacheable,
        true,
        0u64,
        0xffff_ffff_fffe_u64,
        None,
    );
    let mr64 = Name::new("MR64".into(), &ResourceTemplate::new(vec![&template]));
    let (p_mr64, p_minl, p_maxl, p_lenl) = (
        Path::new("MR64"),
        Path::new("MINL"),
        Path::new("MAXL"),
        Path::new("LENL"),
    );
    let (p_mbhi, p_mblo, p_mshi, p_mslo) = (
        Path::new("MBHI"),
        Path::new("MBLO"),
        Path::new("MSHI"),
        Path::new("MSLO"),
    );
    let minl = CreateQWordField::new(&p_minl, &p_mr64, &14u8);
    let maxl = CreateQWordField::new(&p_maxl, &p_mr64, &22u8);
    let lenl = CreateQWordField::new(&p_lenl, &p_mr64, &38u8);
    let base_hi = ShiftLeft::new(&Local(0), &p_mbhi, &32u8);
    let base = Or::new(&p_minl, &Local(0), &p_mblo);
    let size_hi = ShiftLeft::new(&Local(1), &p_mshi, &32u8);
    let size = Or::new(&p_lenl, &Local(1), &p_mslo);
    let end = Add::new(&Local(2), &p_minl, &p_lenl);
    let max = Subtract::new(&p_maxl, &Local(2), &aml::One {});
    let (acq3, rel3) = (lock(), unlock());
    let ret = Return::new(&p_mr64);
    let mcrs = Method::new(
        "MCRS".into(),
        1,
        true,
        vec![
            &acq3, &mr64, &minl, &maxl, &lenl, &sel_arg, &base_hi, &base, &size_hi, &size, &end,
            &max, &rel3, &ret,
        ],
    );

    // MOST(slot, event, status): record an _OST report.
    let (p_moev, p_mosc) = (Path::new("MOEV"), Path::new("MOSC"));
    let ev = Store::new(&p_moev, &Arg(1));
    let st = Store::new(&p_mosc, &Arg(2));
    let (acq4, rel4) = (lock(), unlock());
    let most = Method::new(
        "MOST".into(),
        3,
        false,
        vec![&acq4, &sel_arg, &ev, &st, &rel4],
    );

    let crs_window = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        h.controller_base,
        h.controller_base + h.controller_size - 1,
        None,
    );
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&crs_window]));
    let hid = Name::new("_HID".into(), &"PNP0A06");
    let uid = Name::new("_UID".into(), &"MHPC");
    let mutex = Mutex::new("MLCK".into(), 0);
    let region = OpRegion::new(
        "MHPR".into(),
        OpRegionSpace::SystemMemory,
        &h.controller_base,
        &h.controller_size,
    );
    let field = Field::new(
        "MHPR".into(),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::Preserve,
        [
            "MSEL", "MSTS", "MBLO", "MBHI", "MSLO", "MSHI", "MOEV", "MOSC",
        ]
        .iter()
        .map(|n| {
            let mut b = [0u8; 4];
            b.copy_from_slice(n.as_bytes());
            FieldEntry::Named(b, 32)
        })
        .collect(),
    );
    Device::new(
        "MHPC".into(),
        vec![
            &hid, &uid, &crs, &mutex, &region, &field, &mscn, &mtfy, &msta, &mcrs, &most,
        ],
    )
    .to_aml_bytes(&mut out);
    out
}

fn slot_device(i: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let idx = u64::from(i);
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0C80"));
    let uid = Name::new("_UID".into(), &idx);
    let sta_call = MethodCall::new("\\_SB_.MHPC.MSTA".into(), vec![&idx]);
    let sta_ret = Return::new(&sta_call);
    let sta = Method::new("_STA".into(), 0, false, vec![&sta_ret]);
    let crs_call = MethodCall::new("\\_SB_.MHPC.MCRS".into(), vec![&idx]);
    let crs_ret = Return::new(&crs_call);
    let crs = Method::new("_CRS".into(), 0, false, vec![&crs_ret]);
    let ost_call = MethodCall::new("\\_SB_.MHPC.MOST".into(), vec![&idx, &Arg(0), &Arg(1)]);
    let ost = Method::new("_OST".into(), 3, false, vec![&ost_call]);
    Device::new(Path::new(&slot_name(i)), vec![&hid, &uid, &sta, &crs, &ost])
        .to_aml_bytes(&mut out);
    out
}

fn ged(h: &HotplugAml) -> Vec<u8> {
    let mut out = Vec::new();
    let hid = Name::new("_HID".into(), &"ACPI0013");
    let uid = Name::new("_UID".into(), &aml::Zero {});
    let irq = aml::Interrupt::new(true, true, false, false, h.ged_irq);
    let crs = Name::new("_CRS".into(), &ResourceTemplate::new(vec![&irq]));
    let scan = MethodCall::new("\\_SB_.MHPC.MSCN".into(), vec![]);
    let evt = Method::new("_EVT".into(), 1, true, vec![&scan]);
    Device::new("GED0".into(), vec![&hid, &uid, &crs, &evt]).to_aml_bytes(&mut out);
    out
}

/// Already-encoded AML, to nest inside a builder.
struct RawAml(Vec<u8>);

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// The DSDT body (AML without the table header).
pub fn dsdt_body(hotplug: Option<&HotplugAml>, virtio: &[VirtioMmioAml]) -> Vec<u8> {
    let mut sb = com1();
    for (i, d) in virtio.iter().enumerate() {
        sb.extend(virtio_device(i, d));
    }
    if let Some(h) = hotplug {
        sb.extend(controller(h));
        for i in 0..h.slots {
            sb.extend(slot_device(i));
        }
        sb.extend(ged(h));
    }
    let mut out = Vec::new();
    Name::new("_S5_".into(), &Package::new(vec![&S5_SLEEP_TYPE])).to_aml_bytes(&mut out);
    let body = RawAml(sb);
    Scope::new("\\_SB_".into(), vec![&body]).to_aml_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn dsdt_without_hotplug_has_s5_and_com1_only() {
        let b = dsdt_body(None, &[]);
        assert!(contains(&b, b"_S5_"));
        assert!(contains(&b, b"_SB_"));
        assert!(!contains(&b, b"MHPC"));
        // COM1 with its EISA ID (PNP0501 compressed), the I/O port
        // descriptor for 0x3f8 (8 ports) and IRQ 4.
        assert!(contains(&b, b"COM1"));
        assert!(contains(&b, &[0x0c, 0x41, 0xd0, 0x05, 0x01]));
        assert!(contains(
            &b,
            &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]
        ));
        assert!(contains(
            &b,
            &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00]
        ));
    }

    #[test]
    fn dsdt_with_hotplug_names_every_slot_the_controller_and_the_ged() {
        let h = HotplugAml {
            controller_base: 0xc100_0000,
            controller_size: 0x20,
            slots: 3,
            ged_irq: 7,
        };
        let b = dsdt_body(
            Some(&h),
            &[VirtioMmioAml {
                base: 0xc000_1000,
                size: 0x1000,
                irq: 6,
            }],
        );
        for name in [
            &b"MHPC"[..],
            b"MSCN",
            b"MTFY",
            b"MSTA",
            b"MCRS",
            b"MOST",
            b"M000",
            b"M001",
            b"M002",
            b"GED0",
            b"ACPI0013",
            b"PNP0A06",
            b"_EVT",
            b"_OST",
        ] {
            assert!(
                contains(&b, name),
                "missing {}",
                String::from_utf8_lossy(name)
            );
        }
        assert!(!contains(&b, b"M003"));
        assert!(contains(&b, b"LNRO0005") && contains(&b, b"VR00"));
        // Memory32Fixed descriptor of the virtio window.
        assert!(contains(
            &b,
            &[0x86, 9, 0, 1, 0x00, 0x10, 0x00, 0xc0, 0x00, 0x10, 0, 0]
        ));
        // PNP0C80 as a compressed EISA ID: 0x41d0 0x0c80 -> bytes 41 d0 0c 80.
        assert!(
            contains(&b, &[0x0c, 0x41, 0xd0, 0x0c, 0x80]),
            "EISA id PNP0C80 as a DWord"
        );
        // The controller window base appears as the OperationRegion offset.
        assert!(contains(&b, &0xc100_0000u32.to_le_bytes()));
        // The GED's Extended Interrupt descriptor carries IRQ 7.
        assert!(contains(&b, &[0x89, 6, 0, 0x03, 1, 7, 0, 0, 0]));
    }
}
