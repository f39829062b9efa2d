//! memtide's control API, shared by the server (the VMM's API thread),
//! `memtide ctl`, `memtide balance`, `memtide top`, the benchmarks, the demo
//! and the integration tests.
//!
//! | method | path | request | answer |
//! |---|---|---|---|
//! | GET | `/balloon` | | [`BalloonStatus`] |
//! | PUT | `/balloon` | [`BalloonTarget`] | 204 |
//! | GET | `/balloon/statistics` | | [`BalloonStatistics`] |
//! | GET | `/memory` | | [`MemoryStatus`] |
//! | PUT | `/memory` | [`HotAdd`] | 204 |
//! | GET | `/memory/guest` | | [`GuestMemory`] |
//! | GET | `/memory/virtio-mem` | | [`VirtioMemStatus`] |
//! | PUT | `/memory/virtio-mem` | [`VirtioMemTarget`] | 204 |
//! | GET | `/vsock` | | [`VsockStatus`] |
//! | GET | `/balancer` | | [`BalancerStatus`] |
//!
//! Errors answer with [`ErrorBody`]. Answer types deny unknown fields and
//! have no defaults, so a renamed or missing field is a decode error on the
//! client instead of a silently empty value.

pub mod client;
pub mod connect;
pub mod types;

pub use client::{Client, ClientError, Timeouts};
pub use types::*;
