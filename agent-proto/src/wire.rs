//! The byte layout of a report on the wire (version 1).
//!
//! A frame is a `u32` little-endian payload length followed by the
//! payload. Every integer is little-endian. The payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | version (`u16`, [`VERSION`]) |
//! | 2 | 8 | `seq` |
//! | 10 | 8 | `uptime_ms` |
//! | 18 | 8 | `mem_total_kib` |
//! | 26 | 8 | `mem_free_kib` |
//! | 34 | 8 | `mem_available_kib` |
//! | 42 | 8 | `committed_as_kib` |
//! | 50 | 8 | `commit_limit_kib` |
//! | 58 | 8 | `swap_total_kib` |
//! | 66 | 8 | `swap_free_kib` |
//! | 74 | 1 | flags: bit 0 ([`FLAG_PSI`]) = PSI follows; other bits must be 0 |
//! | 75 | 4 | `psi.some_avg10_centi` (only with [`FLAG_PSI`]) |
//! | 79 | 4 | `psi.full_avg10_centi` |
//! | 83 | 8 | `psi.some_total_us` |
//! | 91 | 8 | `psi.full_total_us` |
//!
//! So a payload is [`PAYLOAD_LEN`] (75) bytes without PSI and
//! [`PAYLOAD_LEN_PSI`] (99) with it; any other length is an error. A
//! change to the layout takes a new version; a reader rejects versions it
//! does not know rather than guessing.

use crate::{GuestReport, MemoryPressure, VERSION};

/// Size of the length prefix of a frame.
pub const FRAME_HEADER_LEN: usize = 4;
/// Payload length of a version-1 report without PSI.
pub const PAYLOAD_LEN: usize = 75;
/// Payload length of a version-1 report with PSI.
pub const PAYLOAD_LEN_PSI: usize = PAYLOAD_LEN + PSI_LEN;
/// Flag bit: the PSI fields follow the flags byte.
pub const FLAG_PSI: u8 = 1;
/// Offset of the flags byte, the last byte of a payload without PSI.
const FLAGS_OFFSET: usize = PAYLOAD_LEN - 1;
/// Size of the PSI fields.
const PSI_LEN: usize = 4 + 4 + 8 + 8;

/// Why bytes are not a valid report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The payload is of a wire version this side does not know.
    #[error("unknown report version {0} (this side reads version {VERSION})")]
    UnknownVersion(u16),
    /// The payload ends before the report does.
    #[error("truncated report: need {need} bytes, got {got}")]
    Truncated {
        /// Bytes the payload needs.
        need: usize,
        /// Bytes it has.
        got: usize,
    },
    /// The payload goes on after the report ends.
    #[error("report has trailing bytes: expected {expected} bytes, got {got}")]
    TrailingBytes {
        /// Bytes the report takes.
        expected: usize,
        /// Bytes the payload has.
        got: usize,
    },
    /// The flags byte has bits this version does not define.
    #[error("unknown flags {0:#04x} in report")]
    UnknownFlags(u8),
    /// A frame announced a payload longer than [`crate::MAX_FRAME_LEN`];
    /// the stream cannot be trusted after it.
    #[error("frame of {0} bytes is longer than the limit of {max}", max = crate::MAX_FRAME_LEN)]
    FrameTooLong(usize),
}

/// Encodes `report` as a whole frame: length prefix and payload.
pub fn encode(report: &GuestReport) -> Vec<u8> {
    let len = if report.psi.is_some() {
        PAYLOAD_LEN_PSI
    } else {
        PAYLOAD_LEN
    };
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + len);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the payload is at most 99 bytes, so the length always fits a u32"
    )]
    let len_prefix = len as u32;
    out.extend_from_slice(&len_prefix.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for v in [
        report.seq,
        report.uptime_ms,
        report.mem_total_kib,
        report.mem_free_kib,
        report.mem_available_kib,
        report.committed_as_kib,
        report.commit_limit_kib,
        report.swap_total_kib,
        report.swap_free_kib,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    match &report.psi {
        None => out.push(0),
        Some(p) => {
            out.push(FLAG_PSI);
            out.extend_from_slice(&p.some_avg10_centi.to_le_bytes());
            out.extend_from_slice(&p.full_avg10_centi.to_le_bytes());
            out.extend_from_slice(&p.some_total_us.to_le_bytes());
            out.extend_from_slice(&p.full_total_us.to_le_bytes());
        }
    }
    out
}

/// Decodes one payload (a frame without its length prefix).
///
/// The version is checked first, so a payload of another version is
/// reported as [`DecodeError::UnknownVersion`] whatever its length.
pub fn decode_payload(payload: &[u8]) -> Result<GuestReport, DecodeError> {
    let got = payload.len();
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let version = r.u16()?;
    if version != VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    let Some(&flags) = payload.get(FLAGS_OFFSET) else {
        return Err(DecodeError::Truncated {
            need: PAYLOAD_LEN,
            got,
        });
    };
    if flags & !FLAG_PSI != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let expected = if flags & FLAG_PSI != 0 {
        PAYLOAD_LEN_PSI
    } else {
        PAYLOAD_LEN
    };
    if got < expected {
        return Err(DecodeError::Truncated {
            need: expected,
            got,
        });
    }
    if got > expected {
        return Err(DecodeError::TrailingBytes { expected, got });
    }
    let report = GuestReport {
        seq: r.u64()?,
        uptime_ms: r.u64()?,
        mem_total_kib: r.u64()?,
        mem_free_kib: r.u64()?,
        mem_available_kib: r.u64()?,
        committed_as_kib: r.u64()?,
        commit_limit_kib: r.u64()?,
        swap_total_kib: r.u64()?,
        swap_free_kib: r.u64()?,
        psi: {
            r.take::<1>()?;
            if flags & FLAG_PSI != 0 {
                Some(MemoryPressure {
                    some_avg10_centi: r.u32()?,
                    full_avg10_centi: r.u32()?,
                    some_total_us: r.u64()?,
                    full_total_us: r.u64()?,
                })
            } else {
                None
            }
        },
    };
    Ok(report)
}

/// Reads little-endian integers off the front of a payload. After the
/// version, the lengths are checked before the fields are read, so a
/// truncation error from here names the field that is cut.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// Takes the next `N` bytes.
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let end = self.pos.saturating_add(N);
        let bytes: Option<[u8; N]> = self.buf.get(self.pos..end).and_then(|s| s.try_into().ok());
        let bytes = bytes.ok_or(DecodeError::Truncated {
            need: end,
            got: self.buf.len(),
        })?;
        self.pos = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.take().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(psi: bool) -> GuestReport {
        GuestReport {
            seq: 7,
            uptime_ms: 12_345,
            mem_total_kib: 219_564,
            mem_free_kib: 180_020,
            mem_available_kib: 190_100,
            committed_as_kib: 23_456,
            commit_limit_kib: 109_780,
            swap_total_kib: 0,
            swap_free_kib: 0,
            psi: psi.then_some(MemoryPressure {
                some_avg10_centi: 1234,
                full_avg10_centi: 56,
                some_total_us: 987_654_321,
                full_total_us: u64::MAX,
            }),
        }
    }

    fn payload(frame: &[u8]) -> &[u8] {
        &frame[FRAME_HEADER_LEN..]
    }

    #[test]
    fn round_trip_with_and_without_psi() {
        for psi in [false, true] {
            let r = sample(psi);
            let frame = encode(&r);
            let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
            assert_eq!(len, frame.len() - FRAME_HEADER_LEN);
            assert_eq!(len, if psi { PAYLOAD_LEN_PSI } else { PAYLOAD_LEN });
            assert_eq!(decode_payload(payload(&frame)), Ok(r));
        }
    }

    #[test]
    fn layout_matches_the_table() {
        let frame = encode(&sample(true));
        let p = payload(&frame);
        assert_eq!(&p[0..2], &1u16.to_le_bytes());
        assert_eq!(&p[2..10], &7u64.to_le_bytes());
        assert_eq!(&p[10..18], &12_345u64.to_le_bytes());
        assert_eq!(&p[42..50], &23_456u64.to_le_bytes());
        assert_eq!(p[74], FLAG_PSI);
        assert_eq!(&p[75..79], &1234u32.to_le_bytes());
        assert_eq!(&p[79..83], &56u32.to_le_bytes());
        assert_eq!(&p[91..99], &u64::MAX.to_le_bytes());
        assert_eq!(payload(&encode(&sample(false)))[74], 0);
    }

    #[test]
    fn every_truncation_is_rejected() {
        for psi in [false, true] {
            let frame = encode(&sample(psi));
            let p = payload(&frame);
            for cut in 0..p.len() {
                match decode_payload(&p[..cut]) {
                    Err(DecodeError::Truncated { need, got }) => {
                        assert_eq!(got, cut);
                        assert!(need > cut, "need {need} at cut {cut}");
                    }
                    other => panic!("cut {cut} (psi {psi}): {other:?}"),
                }
            }
        }
    }

    #[test]
    fn truncation_names_the_full_length() {
        let frame = encode(&sample(true));
        let p = payload(&frame);
        assert_eq!(
            decode_payload(&p[..1]),
            Err(DecodeError::Truncated { need: 2, got: 1 })
        );
        assert_eq!(
            decode_payload(&p[..40]),
            Err(DecodeError::Truncated {
                need: PAYLOAD_LEN,
                got: 40
            })
        );
        assert_eq!(
            decode_payload(&p[..80]),
            Err(DecodeError::Truncated {
                need: PAYLOAD_LEN_PSI,
                got: 80
            })
        );
    }

    #[test]
    fn unknown_versions_are_rejected_whatever_the_length() {
        let frame = encode(&sample(false));
        for version in [0u16, 2, 0xffff] {
            let mut p = payload(&frame).to_vec();
            p[..2].copy_from_slice(&version.to_le_bytes());
            assert_eq!(
                decode_payload(&p),
                Err(DecodeError::UnknownVersion(version))
            );
            assert_eq!(
                decode_payload(&p[..2]),
                Err(DecodeError::UnknownVersion(version))
            );
            p.extend_from_slice(&[0xaa; 40]);
            assert_eq!(
                decode_payload(&p),
                Err(DecodeError::UnknownVersion(version))
            );
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_flags_are_rejected() {
        for psi in [false, true] {
            let mut p = payload(&encode(&sample(psi))).to_vec();
            let expected = p.len();
            p.push(0);
            assert_eq!(
                decode_payload(&p),
                Err(DecodeError::TrailingBytes {
                    expected,
                    got: expected + 1
                })
            );
        }
        let mut p = payload(&encode(&sample(false))).to_vec();
        p[74] = 0x82;
        assert_eq!(decode_payload(&p), Err(DecodeError::UnknownFlags(0x82)));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            DecodeError::UnknownVersion(2).to_string(),
            "unknown report version 2 (this side reads version 1)"
        );
        assert_eq!(
            DecodeError::FrameTooLong(5000).to_string(),
            "frame of 5000 bytes is longer than the limit of 4096"
        );
    }
}
