//! Code that runs inside memtide guests. Built as static binaries
//! (`-C target-feature=+crt-static`) and packed into the initramfs by
//! `cargo xtask initramfs`.

pub mod agent;
pub mod cmdline;
pub mod console;
pub mod meminfo;
pub mod process;
pub mod psi;
pub mod sys;
pub mod uptime;
pub mod vsock;
