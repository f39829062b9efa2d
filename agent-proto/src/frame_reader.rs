//! Cutting report frames out of a byte stream that arrives in pieces.

use crate::wire::{decode_payload, DecodeError, FRAME_HEADER_LEN};
use crate::{GuestReport, MAX_FRAME_LEN};

/// Reassembles frames from a stream (for instance a non-blocking socket)
/// and decodes them.
///
/// Feed it whatever the socket returned with [`push`](Self::push), then
/// call [`next_frame`](Self::next_frame) until it returns `None`. A frame
/// whose payload does not decode (an unknown version, a bad length, unknown
/// flags) yields its error and is skipped, so the frames after it still
/// decode: a newer agent does not desynchronise the stream. A length
/// prefix above [`MAX_FRAME_LEN`] yields [`DecodeError::FrameTooLong`]
/// once; the reader is then [failed](Self::is_failed), drops what it held,
/// ignores further input and yields nothing more. The caller should close
/// the connection.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Bytes received and not yet consumed start at `buf[start]`.
    buf: Vec<u8>,
    /// Where the unconsumed bytes start.
    start: usize,
    /// Set after an oversized frame; the stream is no longer trusted.
    failed: bool,
}

impl FrameReader {
    /// A reader with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the stream (ignored once failed).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, decoded; `None` when no whole frame is
    /// buffered yet (or the reader has failed).
    pub fn next_frame(&mut self) -> Option<Result<GuestReport, DecodeError>> {
        if self.failed {
            return None;
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let (header, rest) = pending.split_first_chunk::<FRAME_HEADER_LEN>()?;
        // A u32 always fits a usize on the 32- and 64-bit hosts memtide
        // runs on; saturate rather than wrap elsewhere.
        let len = usize::try_from(u32::from_le_bytes(*header)).unwrap_or(usize::MAX);
        if len > MAX_FRAME_LEN {
            self.failed = true;
            self.buf = Vec::new();
            self.start = 0;
            return Some(Err(DecodeError::FrameTooLong(len)));
        }
        let payload = rest.get(..len)?;
        let report = decode_payload(payload);
        self.start += FRAME_HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Some(report)
    }

    /// Whether an oversized frame made the reader give up on the stream.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, MemoryPressure};

    fn report(seq: u64, psi: bool) -> GuestReport {
        GuestReport {
            seq,
            uptime_ms: 1000 + seq * 250,
            mem_total_kib: 262_144,
            mem_free_kib: 100_000,
            mem_available_kib: 150_000,
            committed_as_kib: 50_000,
            commit_limit_kib: 131_072,
            swap_total_kib: 0,
            swap_free_kib: 0,
            psi: psi.then_some(MemoryPressure {
                some_avg10_centi: 10,
                full_avg10_centi: 0,
                some_total_us: 42,
                full_total_us: 7,
            }),
        }
    }

    /// A frame of `version` with a payload of `body_len` bytes after it.
    fn foreign_frame(version: u16, body_len: usize) -> Vec<u8> {
        let mut f = u32::try_from(body_len + 2)
            .expect("test frame fits a u32 length")
            .to_le_bytes()
            .to_vec();
        f.extend_from_slice(&version.to_le_bytes());
        f.extend(std::iter::repeat_n(0xee, body_len));
        f
    }

    fn drain(r: &mut FrameReader) -> Vec<Result<GuestReport, DecodeError>> {
        std::iter::from_fn(|| r.next_frame()).collect()
    }

    #[test]
    fn whole_frames_in_one_push() {
        let mut r = FrameReader::new();
        let mut bytes = encode(&report(0, false));
        bytes.extend(encode(&report(1, true)));
        r.push(&bytes);
        assert_eq!(
            drain(&mut r),
            vec![Ok(report(0, false)), Ok(report(1, true))]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn byte_by_byte() {
        let reports: Vec<_> = (0..5).map(|i| report(i, i % 2 == 0)).collect();
        let bytes: Vec<u8> = reports.iter().flat_map(encode).collect();
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for b in &bytes {
            r.push(std::slice::from_ref(b));
            got.extend(drain(&mut r));
        }
        assert_eq!(got, reports.into_iter().map(Ok).collect::<Vec<_>>());
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn partial_frame_waits() {
        let frame = encode(&report(3, true));
        let mut r = FrameReader::new();
        r.push(&frame[..3]);
        assert_eq!(r.next_frame(), None);
        r.push(&frame[3..50]);
        assert_eq!(r.next_frame(), None);
        assert_eq!(r.buffered(), 50);
        r.push(&frame[50..]);
        assert_eq!(r.next_frame(), Some(Ok(report(3, true))));
        assert_eq!(r.next_frame(), None);
    }

    #[test]
    fn unknown_version_is_skipped_and_the_stream_stays_in_sync() {
        let mut bytes = encode(&report(0, false));
        bytes.extend(foreign_frame(2, 300));
        bytes.extend(foreign_frame(9, 0));
        bytes.extend(encode(&report(1, true)));
        let mut r = FrameReader::new();
        r.push(&bytes);
        assert_eq!(
            drain(&mut r),
            vec![
                Ok(report(0, false)),
                Err(DecodeError::UnknownVersion(2)),
                Err(DecodeError::UnknownVersion(9)),
                Ok(report(1, true)),
            ]
        );
        assert!(!r.is_failed());
    }

    #[test]
    fn bad_payloads_are_skipped() {
        let mut bytes = 0u32.to_le_bytes().to_vec(); // empty payload
        let mut long = encode(&report(0, false));
        long[0] += 1;
        long.push(0); // one trailing byte inside the frame
        bytes.extend(long);
        bytes.extend(encode(&report(1, false)));
        let mut r = FrameReader::new();
        r.push(&bytes);
        assert_eq!(
            drain(&mut r),
            vec![
                Err(DecodeError::Truncated { need: 2, got: 0 }),
                Err(DecodeError::TrailingBytes {
                    expected: 75,
                    got: 76
                }),
                Ok(report(1, false)),
            ]
        );
    }

    #[test]
    fn oversized_frame_fails_the_reader_once() {
        let mut bytes = encode(&report(0, false));
        bytes.extend(
            u32::try_from(MAX_FRAME_LEN + 1)
                .expect("limit fits a u32")
                .to_le_bytes(),
        );
        bytes.extend(encode(&report(1, false)));
        let mut r = FrameReader::new();
        r.push(&bytes);
        assert_eq!(r.next_frame(), Some(Ok(report(0, false))));
        assert_eq!(
            r.next_frame(),
            Some(Err(DecodeError::FrameTooLong(MAX_FRAME_LEN + 1)))
        );
        assert!(r.is_failed());
        assert_eq!(r.next_frame(), None);
        r.push(&encode(&report(2, false)));
        assert_eq!(r.next_frame(), None);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn largest_allowed_frame_is_read() {
        let mut frame = u32::try_from(MAX_FRAME_LEN)
            .expect("limit fits a u32")
            .to_le_bytes()
            .to_vec();
        frame.extend_from_slice(&encode(&report(0, false))[FRAME_HEADER_LEN..]);
        frame.resize(FRAME_HEADER_LEN + MAX_FRAME_LEN, 0);
        let mut r = FrameReader::new();
        r.push(&frame);
        assert_eq!(
            r.next_frame(),
            Some(Err(DecodeError::TrailingBytes {
                expected: 75,
                got: MAX_FRAME_LEN
            }))
        );
        r.push(&u32::MAX.to_le_bytes());
        assert_eq!(
            r.next_frame(),
            Some(Err(DecodeError::FrameTooLong(u32::MAX as usize)))
        );
    }
}
