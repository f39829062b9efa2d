//! memtide: a user-space VMM on Linux KVM that boots unmodified Linux guests
//! and (in later releases) gives them memory dynamically.
//!
//! The crate is a library so the integration tests and benchmarks can reuse
//! its pieces; the `memtide` binary in `main.rs` is a thin CLI over it.

pub mod acpi;
pub mod api;
pub mod arch;
pub mod balance;
pub mod balance_remote;
pub mod bench;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod device_manager;
pub mod host_info;
pub mod kernel_cmdline;
pub mod logger;
pub mod memory;
pub mod outcome;
pub mod plot;
pub mod scripted_agent;
pub mod top;
pub mod vcpu;
pub mod vm;
