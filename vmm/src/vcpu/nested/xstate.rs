//! `XSAVE` and `XRSTOR` for the guest kernel on the nested `kvm_pvm` host
//! (pure logic: the standard-format save area against KVM's XSAVE state).
//!
//! On that host guest user code runs natively with the *host's* `XCR0`
//! (x87, SSE, AVX, AVX-512, ...), whatever the guest kernel enabled; guest
//! user space can always use the AVX and AVX-512 registers. A guest kernel
//! booted with `noxsave` context-switches only the FXSAVE part (x87 and the
//! low 128 bits of XMM0-15), so the rest of the vector state leaks from one
//! guest process into the next: with glibc picking AVX2/EVEX string
//! functions, processes crashed at random (`sh[26]: segfault at 1 ...` right
//! after the init started the agent; docs/nested-host.md).
//!
//! The host's instruction emulator cannot run `XSAVE`/`XRSTOR` for the
//! guest kernel (it stops with `KVM_EXIT_INTERNAL_ERROR`), so memtide does:
//! the vCPU loop reads KVM's copy of the guest's extended state
//! (`KVM_GET_XSAVE`, standard format, 4096 bytes), the guest's save area at
//! the instruction's memory operand, lets [`save`] or [`restore`] move the
//! components the instruction's mask selects, and writes the result back
//! (guest memory, or `KVM_SET_XSAVE`). Only the standard (non-compacted)
//! form is supported: the guest command line clears `xsavec`, `xsaves` and
//! `xsaveopt`, so Linux uses plain `xsave64`/`xrstor64`.

use std::ops::Range;

/// Bytes of the legacy (FXSAVE) region at the start of the area.
pub const LEGACY_LEN: usize = 512;
/// Offset of the XSAVE header.
pub const HEADER: usize = LEGACY_LEN;
/// Length of the XSAVE header.
pub const HEADER_LEN: usize = 64;
/// Alignment `XSAVE` and `XRSTOR` require of their operand.
pub const ALIGN: u64 = 64;
/// Bytes of the state `KVM_GET_XSAVE` and `KVM_SET_XSAVE` move.
pub const KVM_REGION_LEN: usize = 4096;

/// The header's XSTATE_BV: which components hold non-initial state.
const XSTATE_BV: usize = HEADER;
/// The header's XCOMP_BV (zero in the standard form).
const XCOMP_BV: usize = HEADER + 8;
/// MXCSR in the legacy region.
const MXCSR: Range<usize> = 24..28;
/// MXCSR_MASK in the legacy region.
const MXCSR_MASK: Range<usize> = 28..32;
/// The x87 control word's initial value (`FNINIT`).
const FCW_INIT: u16 = 0x037f;
/// The MXCSR mask to assume when the area gives none.
const MXCSR_MASK_DEFAULT: u32 = 0xffbf;
/// Component 0: the x87 state.
const X87: u64 = 1 << 0;
/// Component 1: the SSE state (XMM0-15).
const SSE: u64 = 1 << 1;
/// Component 2: the upper halves of YMM0-15.
const AVX: u64 = 1 << 2;

/// Where the extended components (2 and up) lie in a standard-format
/// area: CPUID leaf 0xD, sub-leaf *i*, gives component *i*'s size (EAX) and
/// offset (EBX).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// `(component, offset, size)`, components 2..=63 that fit in KVM's
    /// 4096-byte region.
    components: Vec<(u8, usize, usize)>,
}

/// Why an `XSAVE`/`XRSTOR` cannot complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XstateError {
    /// `XRSTOR` would load components `XCR0` does not enable (#GP).
    #[error("XSTATE_BV {bv:#x} names components XCR0 {xcr0:#x} does not enable")]
    NotEnabled {
        /// The area's XSTATE_BV.
        bv: u64,
        /// The guest's XCR0.
        xcr0: u64,
    },
    /// `XRSTOR`'s area has a compacted-form or reserved header field set
    /// (#GP).
    #[error("the XSAVE header's XCOMP_BV or reserved bytes are not zero")]
    Header,
    /// `XRSTOR` would set reserved MXCSR bits (#GP).
    #[error("MXCSR {mxcsr:#x} sets bits outside the mask {mask:#x}")]
    Mxcsr {
        /// The area's MXCSR.
        mxcsr: u32,
        /// The bits MXCSR may have.
        mask: u32,
    },
    /// The instruction selects a component memtide cannot place (not in
    /// the guest's CPUID leaf 0xD, or beyond KVM's 4096 bytes).
    #[error("XSAVE component {0} has no known place in the save area")]
    UnknownComponent(u8),
    /// The caller passed fewer bytes of the area than the instruction
    /// touches ([`Layout::area_len`]).
    #[error("the save area needs {need} bytes, {have} given")]
    Short {
        /// Bytes the instruction touches.
        need: usize,
        /// Bytes given.
        have: usize,
    },
}

impl XstateError {
    /// Whether the guest gets a #GP for it (as the CPU would raise); the
    /// other errors stop the VM.
    pub fn is_guest_fault(&self) -> bool {
        !matches!(
            self,
            XstateError::UnknownComponent(_) | XstateError::Short { .. }
        )
    }
}

impl Layout {
    /// The layout from CPUID entries `(function, index, eax, ebx)`; only
    /// leaf 0xD's sub-leaves 2..=63 count.
    pub fn from_cpuid(entries: impl IntoIterator<Item = (u32, u32, u32, u32)>) -> Self {
        let mut components: Vec<(u8, usize, usize)> = entries
            .into_iter()
            .filter(|&(function, index, size, _)| {
                function == 0xd && (2..64).contains(&index) && size > 0
            })
            .filter_map(|(_, index, size, offset)| {
                let (offset, size) = (offset as usize, size as usize);
                let index = u8::try_from(index).ok()?;
                (offset >= HEADER + HEADER_LEN && offset + size <= KVM_REGION_LEN)
                    .then_some((index, offset, size))
            })
            .collect();
        components.sort_unstable();
        components.dedup_by_key(|c| c.0);
        Self { components }
    }

    fn place(&self, component: u8) -> Option<Range<usize>> {
        self.components
            .iter()
            .find(|c| c.0 == component)
            .map(|&(_, offset, size)| offset..offset + size)
    }

    /// The bytes of component `i`'s state, not counting MXCSR (which
    /// [`mxcsr_selected`] governs).
    fn pieces(&self, component: u8) -> Result<Vec<Range<usize>>, XstateError> {
        Ok(match component {
            // FCW, FSW, FTW, FOP, FIP, FDP; then ST0-7/MM0-7.
            0 => vec![0..24, 32..160],
            // XMM0-15.
            1 => one(160..416),
            i => one(self.place(i).ok_or(XstateError::UnknownComponent(i))?),
        })
    }

    /// How many bytes from the operand an instruction with mask `rfbm`
    /// touches: at least the legacy region and the header.
    pub fn area_len(&self, rfbm: u64) -> Result<usize, XstateError> {
        let mut len = HEADER + HEADER_LEN;
        for i in components(rfbm).filter(|&i| i >= 2) {
            for piece in self.pieces(i)? {
                len = len.max(piece.end);
            }
        }
        Ok(len)
    }
}

/// A component that is one run of bytes.
fn one(bytes: Range<usize>) -> Vec<Range<usize>> {
    vec![bytes]
}

/// The components set in `mask`.
fn components(mask: u64) -> impl Iterator<Item = u8> {
    (0u8..64).filter(move |&i| mask & (1 << i) != 0)
}

/// `XSAVE`/`XRSTOR` save and load MXCSR when either SSE or AVX is selected.
fn mxcsr_selected(rfbm: u64) -> bool {
    rfbm & (SSE | AVX) != 0
}

/// The area must cover what the instruction touches.
fn check_len(layout: &Layout, area: &[u8], rfbm: u64) -> Result<(), XstateError> {
    let need = layout.area_len(rfbm)?;
    if area.len() < need {
        return Err(XstateError::Short {
            need,
            have: area.len(),
        });
    }
    Ok(())
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// `XSAVE` (standard form): copies the components in `rfbm` (the
/// instruction's EDX:EAX masked with XCR0) from KVM's state `kvm` into the
/// guest's area `area` (at least [`Layout::area_len`] bytes, as read from
/// guest memory), and updates the area's XSTATE_BV for them. The rest of
/// the area (other components, the legacy region's reserved bytes, the
/// header's other fields) is left as it was, as the CPU leaves it.
pub fn save(
    layout: &Layout,
    kvm: &[u8; KVM_REGION_LEN],
    area: &mut [u8],
    rfbm: u64,
) -> Result<(), XstateError> {
    check_len(layout, area, rfbm)?;
    let mut pieces = Vec::new();
    for i in components(rfbm) {
        pieces.extend(layout.pieces(i)?);
    }
    if mxcsr_selected(rfbm) {
        pieces.push(MXCSR.start..MXCSR_MASK.end);
    }
    for piece in pieces {
        area[piece.clone()].copy_from_slice(&kvm[piece]);
    }
    let bv = (read_u64(area, XSTATE_BV) & !rfbm) | (read_u64(kvm, XSTATE_BV) & rfbm);
    area[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
    Ok(())
}

/// `XRSTOR` (standard form): loads the components in `rfbm` from the
/// guest's area `area` into KVM's state `kvm` (components whose XSTATE_BV
/// bit is clear get their initial state), after the checks the CPU makes
/// (#GP when one fails, and `kvm` is then unchanged). `xcr0` is the guest's
/// XCR0. The result always marks x87 and SSE present, with their values
/// written out, so that KVM takes MXCSR from it.
pub fn restore(
    layout: &Layout,
    kvm: &mut [u8; KVM_REGION_LEN],
    area: &[u8],
    rfbm: u64,
    xcr0: u64,
) -> Result<(), XstateError> {
    check_len(layout, area, rfbm)?;
    let bv = read_u64(area, XSTATE_BV);
    // XCOMP_BV (bit 63 would mean the compacted form) and the next eight
    // bytes must be zero in the standard form.
    if read_u64(area, XCOMP_BV) != 0 || read_u64(area, XCOMP_BV + 8) != 0 {
        return Err(XstateError::Header);
    }
    if bv & !xcr0 != 0 {
        return Err(XstateError::NotEnabled { bv, xcr0 });
    }
    let mask = match read_u32(kvm, MXCSR_MASK.start) {
        0 => MXCSR_MASK_DEFAULT,
        m => m,
    };
    if mxcsr_selected(rfbm) {
        let mxcsr = read_u32(area, MXCSR.start);
        if mxcsr & !mask != 0 {
            return Err(XstateError::Mxcsr { mxcsr, mask });
        }
    }
    // Check every component first so that a failure leaves `kvm` as it was.
    let mut plan = Vec::new();
    for i in components(rfbm) {
        plan.push((i, layout.pieces(i)?));
    }
    let mut kvm_bv = read_u64(kvm, XSTATE_BV);
    for (i, pieces) in plan {
        let bit = 1u64 << i;
        if bv & bit != 0 {
            for piece in pieces {
                kvm[piece.clone()].copy_from_slice(&area[piece]);
            }
            kvm_bv |= bit;
        } else {
            for piece in pieces {
                kvm[piece].fill(0);
            }
            if bit == X87 {
                kvm[0..2].copy_from_slice(&FCW_INIT.to_le_bytes());
            }
            kvm_bv &= !bit;
        }
    }
    if mxcsr_selected(rfbm) {
        kvm[MXCSR].copy_from_slice(&area[MXCSR]);
    }
    // KVM's buffer holds valid x87 and SSE values whatever its XSTATE_BV
    // says (initial ones where the bit is clear); marking them present
    // makes KVM load MXCSR and the legacy region exactly as written here.
    kvm_bv |= X87 | SSE;
    kvm[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&kvm_bv.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's standard layout: AVX at 576, opmask at 1088,
    /// ZMM_Hi256 at 1152, Hi16_ZMM at 1664 (and AMX tiles beyond 4096).
    fn layout() -> Layout {
        Layout::from_cpuid([
            (0xd, 0, 0x2008, 0x2b00),
            (0xd, 1, 0, 0),
            (0xd, 2, 256, 576),
            (0xd, 5, 64, 1088),
            (0xd, 6, 512, 1152),
            (0xd, 7, 1024, 1664),
            (0xd, 17, 64, 2752),
            (0xd, 18, 8192, 2816),
            (0x7, 2, 256, 576),
        ])
    }

    const XCR0: u64 = 0xe7;

    fn kvm_state(fill: u8, bv: u64) -> Box<[u8; KVM_REGION_LEN]> {
        let mut k = Box::new([fill; KVM_REGION_LEN]);
        k[HEADER..HEADER + HEADER_LEN].fill(0);
        k[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        k[MXCSR].copy_from_slice(&0x1f80u32.to_le_bytes());
        k[MXCSR_MASK].copy_from_slice(&0xffffu32.to_le_bytes());
        k
    }

    #[test]
    fn the_layout_keeps_components_that_fit_in_kvms_region() {
        let l = layout();
        assert_eq!(l.place(2), Some(576..832));
        assert_eq!(l.place(7), Some(1664..2688));
        assert_eq!(l.place(17), Some(2752..2816));
        assert_eq!(l.place(18), None, "AMX tile data is beyond 4096 bytes");
        assert_eq!(l.area_len(0x3), Ok(576));
        assert_eq!(l.area_len(0x7), Ok(832));
        assert_eq!(l.area_len(XCR0), Ok(2688));
        assert_eq!(l.area_len(1 << 18), Err(XstateError::UnknownComponent(18)));
    }

    #[test]
    fn save_copies_the_selected_components_and_their_xstate_bv_bits() {
        let l = layout();
        let kvm = kvm_state(0xaa, XCR0);
        let mut area = vec![0x55u8; 2688];
        area[HEADER..HEADER + HEADER_LEN].fill(0);
        // Only x87, SSE and AVX selected.
        save(&l, &kvm, &mut area, 0x7).expect("save");
        assert!(area[0..24].iter().all(|&b| b == 0xaa));
        assert_eq!(read_u32(&area, 24), 0x1f80);
        assert!(area[32..416].iter().all(|&b| b == 0xaa));
        assert!(
            area[416..512].iter().all(|&b| b == 0x55),
            "the reserved bytes are not written"
        );
        assert!(area[576..832].iter().all(|&b| b == 0xaa));
        assert!(
            area[1088..2688].iter().all(|&b| b == 0x55),
            "AVX-512 not selected"
        );
        assert_eq!(read_u64(&area, XSTATE_BV), 0x7);
        assert_eq!(read_u64(&area, XCOMP_BV), 0);
    }

    #[test]
    fn save_keeps_the_xstate_bv_bits_of_unselected_components() {
        let l = layout();
        // KVM says AVX is in its initial state.
        let kvm = kvm_state(0x11, XCR0 & !AVX);
        let mut area = vec![0u8; 2688];
        area[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&(1u64 << 5).to_le_bytes());
        save(&l, &kvm, &mut area, 0x7).expect("save");
        assert_eq!(read_u64(&area, XSTATE_BV), (1 << 5) | 0x3);
    }

    #[test]
    fn restore_loads_present_components_and_initialises_the_others() {
        let l = layout();
        let mut kvm = kvm_state(0x77, XCR0);
        let mut area = vec![0x22u8; 2688];
        area[HEADER..HEADER + HEADER_LEN].fill(0);
        area[MXCSR].copy_from_slice(&0x1fa0u32.to_le_bytes());
        // x87 in its initial state; SSE, AVX and the opmasks present.
        let bv = SSE | AVX | (1 << 5);
        area[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        restore(&l, &mut kvm, &area, XCR0, XCR0).expect("restore");
        assert_eq!(&kvm[0..2], &FCW_INIT.to_le_bytes());
        assert!(kvm[2..24].iter().all(|&b| b == 0));
        assert!(kvm[32..160].iter().all(|&b| b == 0));
        assert_eq!(read_u32(&kvm[..], 24), 0x1fa0, "MXCSR comes from the area");
        assert!(kvm[160..416].iter().all(|&b| b == 0x22));
        assert!(kvm[576..832].iter().all(|&b| b == 0x22));
        assert!(kvm[1088..1152].iter().all(|&b| b == 0x22));
        assert!(
            kvm[1152..2688].iter().all(|&b| b == 0),
            "ZMM state initialised"
        );
        assert_eq!(read_u64(&kvm[..], XSTATE_BV), X87 | SSE | AVX | (1 << 5));
    }

    #[test]
    fn restore_leaves_unselected_components_alone() {
        let l = layout();
        let mut kvm = kvm_state(0x77, XCR0);
        let mut area = vec![0x22u8; 2688];
        area[HEADER..HEADER + HEADER_LEN].fill(0);
        area[MXCSR].copy_from_slice(&0x1f80u32.to_le_bytes());
        area[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&XCR0.to_le_bytes());
        // Only AVX-512 selected: x87, SSE and AVX stay as KVM had them.
        restore(&l, &mut kvm, &area, 0xe0, XCR0).expect("restore");
        assert!(kvm[32..160].iter().all(|&b| b == 0x77));
        assert!(kvm[576..832].iter().all(|&b| b == 0x77));
        assert!(kvm[1088..2688].iter().all(|&b| b == 0x22));
    }

    #[test]
    fn round_trip_through_save_and_restore() {
        let l = layout();
        let before = kvm_state(0x3c, XCR0);
        let mut area = vec![0u8; 2688];
        save(&l, &before, &mut area, XCR0).expect("save");
        let mut after = kvm_state(0x00, X87 | SSE);
        restore(&l, &mut after, &area, XCR0, XCR0).expect("restore");
        for (i, piece) in [(0, 0..24), (0, 32..416), (2, 576..832), (5, 1088..2688)] {
            assert_eq!(before[piece.clone()], after[piece], "component {i}");
        }
        assert_eq!(read_u64(&after[..], XSTATE_BV), XCR0);
    }

    #[test]
    fn restore_faults_as_the_cpu_does_and_changes_nothing() {
        let l = layout();
        let kvm = kvm_state(0x77, XCR0);
        let good = {
            let mut a = vec![0u8; 2688];
            a[MXCSR].copy_from_slice(&0x1f80u32.to_le_bytes());
            a[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&0x7u64.to_le_bytes());
            a
        };
        let mut k = kvm.clone();
        assert_eq!(restore(&l, &mut k, &good, XCR0, XCR0), Ok(()));

        let mut compacted = good.clone();
        compacted[XCOMP_BV + 7] = 0x80;
        let mut reserved = good.clone();
        reserved[XCOMP_BV + 9] = 1;
        let mut not_enabled = good.clone();
        not_enabled[XSTATE_BV + 1] = 0x02; // bit 9, PKRU
        let mut bad_mxcsr = good.clone();
        bad_mxcsr[MXCSR].copy_from_slice(&0x1_0000u32.to_le_bytes());
        for (area, want) in [
            (compacted, XstateError::Header),
            (reserved, XstateError::Header),
            (
                not_enabled,
                XstateError::NotEnabled {
                    bv: 0x207,
                    xcr0: XCR0,
                },
            ),
            (
                bad_mxcsr,
                XstateError::Mxcsr {
                    mxcsr: 0x1_0000,
                    mask: 0xffff,
                },
            ),
        ] {
            let mut k = kvm.clone();
            assert_eq!(restore(&l, &mut k, &area, XCR0, XCR0), Err(want.clone()));
            assert!(want.is_guest_fault());
            assert_eq!(k, kvm, "a faulting XRSTOR changes nothing");
        }
        // MXCSR is not checked when neither SSE nor AVX is selected.
        let mut k = kvm.clone();
        let mut odd = good;
        odd[MXCSR].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert_eq!(restore(&l, &mut k, &odd, X87, XCR0), Ok(()));
    }

    #[test]
    fn components_without_a_place_stop_the_vm() {
        let l = layout();
        let mut kvm = kvm_state(0, XCR0);
        let mut area = vec![0u8; 4096];
        let err = save(&l, &kvm, &mut area, 1 << 18).expect_err("AMX tiles");
        assert_eq!(err, XstateError::UnknownComponent(18));
        assert!(!err.is_guest_fault());
        assert_eq!(
            restore(&l, &mut kvm, &area, 1 << 18, 1 << 18),
            Err(XstateError::UnknownComponent(18))
        );
        let short = save(&l, &kvm, &mut area[..600], XCR0).expect_err("short");
        assert_eq!(
            short,
            XstateError::Short {
                need: 2688,
                have: 600
            }
        );
        assert!(!short.is_guest_fault());
    }
}
