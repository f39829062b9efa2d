//! Code that runs inside memtide guests. Built as one static multi-call
//! binary (`-C target-feature=+crt-static`, the `guest` profile; see
//! [`programs`]) and packed into the initramfs by `cargo xtask initramfs`.

pub mod agent;
pub mod cmdline;
pub mod console;
pub mod meminfo;
pub mod proc_file;
pub mod process;
pub mod programs;
pub mod psi;
pub mod sys;
pub mod uptime;
pub mod vsock;
