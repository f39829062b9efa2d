//! Property tests: arbitrary reports round-trip through the wire format and
//! the frame reader however the stream is cut; arbitrary bytes never make
//! the reader panic.

#![allow(
    clippy::tests_outside_test_module,
    reason = "integration tests live at the top level of their own test binary"
)]

use memtide_agent_proto::{
    decode_payload, encode, DecodeError, FrameReader, GuestReport, MemoryPressure, MAX_FRAME_LEN,
};
use proptest::prelude::*;

fn pressure() -> impl Strategy<Value = MemoryPressure> {
    (any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(s, f, st, ft)| {
        MemoryPressure {
            some_avg10_centi: s,
            full_avg10_centi: f,
            some_total_us: st,
            full_total_us: ft,
        }
    })
}

fn report() -> impl Strategy<Value = GuestReport> {
    (any::<[u64; 9]>(), proptest::option::of(pressure())).prop_map(|(v, psi)| GuestReport {
        seq: v[0],
        uptime_ms: v[1],
        mem_total_kib: v[2],
        mem_free_kib: v[3],
        mem_available_kib: v[4],
        committed_as_kib: v[5],
        commit_limit_kib: v[6],
        swap_total_kib: v[7],
        swap_free_kib: v[8],
        psi,
    })
}

/// Pushes `bytes` in pieces of the given sizes (cycled), collecting every
/// frame the reader yields.
fn read_in_pieces(bytes: &[u8], sizes: &[usize]) -> Vec<Result<GuestReport, DecodeError>> {
    let mut r = FrameReader::new();
    let mut out = Vec::new();
    let mut rest = bytes;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        r.push(piece);
        rest = tail;
        while let Some(f) = r.next_frame() {
            out.push(f);
        }
    }
    out
}

proptest! {
    #[test]
    fn payload_round_trip(r in report()) {
        let frame = encode(&r);
        prop_assert_eq!(decode_payload(&frame[4..]), Ok(r));
    }

    #[test]
    fn stream_round_trip_in_any_pieces(
        reports in proptest::collection::vec(report(), 0..12),
        sizes in proptest::collection::vec(1usize..200, 1..8),
    ) {
        let bytes: Vec<u8> = reports.iter().flat_map(encode).collect();
        let got = read_in_pieces(&bytes, &sizes);
        prop_assert_eq!(got, reports.into_iter().map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn arbitrary_payloads_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(r) = decode_payload(&bytes) {
            // Whatever decodes must encode back to the same bytes.
            prop_assert_eq!(&encode(&r)[4..], &bytes[..]);
        }
    }

    #[test]
    fn arbitrary_streams_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        sizes in proptest::collection::vec(1usize..300, 1..8),
    ) {
        let got = read_in_pieces(&bytes, &sizes);
        // At most one FrameTooLong, and it is the last thing yielded.
        let too_long = got
            .iter()
            .position(|f| matches!(f, Err(DecodeError::FrameTooLong(n)) if *n > MAX_FRAME_LEN));
        if let Some(i) = too_long {
            prop_assert_eq!(i, got.len() - 1);
        }
    }

    #[test]
    fn small_length_prefixes_keep_the_stream_in_sync(
        junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..6),
        r in report(),
    ) {
        // Frames of arbitrary (but allowed) content, then a good one: the
        // good one is always found.
        let mut bytes = Vec::new();
        for j in &junk {
            bytes.extend(u32::try_from(j.len()).expect("junk fits a u32 length").to_le_bytes());
            bytes.extend(j);
        }
        bytes.extend(encode(&r));
        let got = read_in_pieces(&bytes, &[7]);
        prop_assert_eq!(got.len(), junk.len() + 1);
        prop_assert_eq!(got.last().cloned(), Some(Ok(r)));
    }
}
