//! What a request does to the block bitmap and what it answers (pure: the
//! host side, discarding unplugged blocks, is [`super::host`]).
//!
//! | request | ERROR when | NACK when | ACK does |
//! |---|---|---|---|
//! | PLUG | range invalid, or a block already plugged | plugged size would pass the requested size | marks the blocks plugged |
//! | UNPLUG | range invalid, or a block not plugged | never | marks them unplugged, discards them |
//! | UNPLUG_ALL | never | never | unplugs and discards every block |
//! | STATE | range invalid | never | answers plugged / unplugged / mixed |
//!
//! A range is invalid when it is empty, not block aligned, or leaves the
//! usable region ([`BlockBitmap::range`]).

use std::ops::Range;

use super::bitmap::{BlockBitmap, RangeError};
use super::request::{BlockState, Request, Response};

/// Why a request was answered ERROR or NACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a range of usable blocks.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// PLUG of a block already plugged.
    #[error("plug of blocks that are not all unplugged")]
    AlreadyPlugged,
    /// UNPLUG of a block not plugged.
    #[error("unplug of blocks that are not all plugged")]
    NotPlugged,
    /// PLUG beyond the requested size (NACK: the driver may retry).
    #[error("plug would exceed the requested size")]
    AboveRequested,
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// The answer for the driver.
    pub response: Response,
    /// Block runs that became unplugged: their host memory is to be
    /// discarded.
    pub discard: Vec<Range<usize>>,
    /// Why the request was refused, if it was.
    pub refusal: Option<Refusal>,
}

impl Handled {
    fn ack(state: Option<BlockState>, discard: Vec<Range<usize>>) -> Self {
        Self {
            response: Response::Ack(state),
            discard,
            refusal: None,
        }
    }

    fn refused(refusal: Refusal) -> Self {
        let response = match refusal {
            Refusal::AboveRequested => Response::Nack,
            _ => Response::Error,
        };
        Self {
            response,
            discard: Vec::new(),
            refusal: Some(refusal),
        }
    }
}

/// Applies `req` to `bitmap`, given the size the host asks for
/// (`requested_bytes`) and the usable blocks (`usable_blocks`).
pub fn handle(
    req: Request,
    bitmap: &mut BlockBitmap,
    requested_bytes: u64,
    usable_blocks: usize,
) -> Handled {
    let r = |addr, n| bitmap.range(addr, n, usable_blocks);
    match req {
        Request::Plug { addr, nb_blocks } => match r(addr, nb_blocks) {
            Err(e) => Handled::refused(e.into()),
            Ok(range) => {
                if bitmap.state(range.clone()) != BlockState::Unplugged {
                    return Handled::refused(Refusal::AlreadyPlugged);
                }
                let adding = u64::from(nb_blocks).saturating_mul(bitmap.block_size());
                if bitmap.plugged_bytes().saturating_add(adding) > requested_bytes {
                    return Handled::refused(Refusal::AboveRequested);
                }
                bitmap.plug(range);
                Handled::ack(None, Vec::new())
            }
        },
        Request::Unplug { addr, nb_blocks } => match r(addr, nb_blocks) {
            Err(e) => Handled::refused(e.into()),
            Ok(range) => {
                if bitmap.state(range.clone()) != BlockState::Plugged {
                    return Handled::refused(Refusal::NotPlugged);
                }
                bitmap.unplug(range.clone());
                Handled::ack(None, vec![range])
            }
        },
        Request::UnplugAll => {
            let runs = bitmap.plugged_runs();
            bitmap.unplug(0..bitmap.blocks());
            Handled::ack(None, runs)
        }
        Request::State { addr, nb_blocks } => match r(addr, nb_blocks) {
            Err(e) => Handled::refused(e.into()),
            Ok(range) => Handled::ack(Some(bitmap.state(range)), Vec::new()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x2_0000_0000;
    const BS: u64 = 2 << 20;

    fn plug(addr: u64, nb_blocks: u16) -> Request {
        Request::Plug { addr, nb_blocks }
    }

    fn unplug(addr: u64, nb_blocks: u16) -> Request {
        Request::Unplug { addr, nb_blocks }
    }

    fn state(addr: u64, nb_blocks: u16) -> Request {
        Request::State { addr, nb_blocks }
    }

    #[test]
    fn plug_state_unplug_round_trip() {
        let mut b = BlockBitmap::new(BASE, BS, 64);
        let h = handle(plug(BASE + 2 * BS, 4), &mut b, 64 * BS, 64);
        assert_eq!(h, Handled::ack(None, vec![]));
        assert_eq!(b.plugged_bytes(), 4 * BS);
        assert_eq!(
            handle(state(BASE + 2 * BS, 4), &mut b, 64 * BS, 64).response,
            Response::Ack(Some(BlockState::Plugged))
        );
        assert_eq!(
            handle(state(BASE, 3), &mut b, 64 * BS, 64).response,
            Response::Ack(Some(BlockState::Mixed))
        );
        let h = handle(unplug(BASE + 3 * BS, 2), &mut b, 64 * BS, 64);
        assert_eq!(h.response, Response::Ack(None));
        assert_eq!(h.discard, vec![3..5]);
        assert_eq!(b.plugged_bytes(), 2 * BS);
    }

    #[test]
    fn wrong_block_states_are_errors_and_change_nothing() {
        let mut b = BlockBitmap::new(BASE, BS, 64);
        handle(plug(BASE, 2), &mut b, 64 * BS, 64);
        let before = b.clone();
        let h = handle(plug(BASE + BS, 2), &mut b, 64 * BS, 64);
        assert_eq!(
            (h.response, h.refusal),
            (Response::Error, Some(Refusal::AlreadyPlugged))
        );
        let h = handle(unplug(BASE + BS, 2), &mut b, 64 * BS, 64);
        assert_eq!(
            (h.response, h.refusal),
            (Response::Error, Some(Refusal::NotPlugged))
        );
        assert_eq!(b, before);
    }

    #[test]
    fn invalid_ranges_are_errors() {
        let mut b = BlockBitmap::new(BASE, BS, 64);
        for req in [
            plug(BASE, 0),
            plug(BASE + 1, 1),
            plug(BASE + 63 * BS, 2),
            unplug(BASE - BS, 1),
            state(BASE + 64 * BS, 1),
            plug(u64::MAX, u16::MAX),
        ] {
            let h = handle(req, &mut b, 64 * BS, 64);
            assert_eq!(h.response, Response::Error, "{req:?}");
            assert!(matches!(h.refusal, Some(Refusal::Range(_))), "{req:?}");
        }
        // Beyond the usable part of the region.
        let h = handle(plug(BASE + 40 * BS, 1), &mut b, 64 * BS, 32);
        assert_eq!(h.response, Response::Error);
        assert_eq!(b.plugged_blocks(), 0);
    }

    #[test]
    fn plugging_past_the_requested_size_is_nacked() {
        let mut b = BlockBitmap::new(BASE, BS, 64);
        let h = handle(plug(BASE, 5), &mut b, 4 * BS, 64);
        assert_eq!(
            (h.response, h.refusal),
            (Response::Nack, Some(Refusal::AboveRequested))
        );
        assert_eq!(
            handle(plug(BASE, 4), &mut b, 4 * BS, 64).response,
            Response::Ack(None)
        );
        assert_eq!(
            handle(plug(BASE + 4 * BS, 1), &mut b, 4 * BS, 64).response,
            Response::Nack
        );
        // Unplugging is always allowed, even above the requested size.
        assert_eq!(
            handle(unplug(BASE, 1), &mut b, 0, 64).response,
            Response::Ack(None)
        );
    }

    #[test]
    fn unplug_all_discards_every_plugged_run() {
        let mut b = BlockBitmap::new(BASE, BS, 64);
        handle(plug(BASE, 2), &mut b, 64 * BS, 64);
        handle(plug(BASE + 10 * BS, 3), &mut b, 64 * BS, 64);
        let h = handle(Request::UnplugAll, &mut b, 64 * BS, 64);
        assert_eq!(h, Handled::ack(None, vec![0..2, 10..13]));
        assert_eq!(b.plugged_blocks(), 0);
        let h = handle(Request::UnplugAll, &mut b, 64 * BS, 64);
        assert_eq!(h, Handled::ack(None, vec![]), "nothing left to discard");
    }
}
