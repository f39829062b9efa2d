//! Everything written into guest memory before the first instruction runs:
//! the kernel, the initramfs, the command line, the zero page with its e820
//! map, and the MP table that lists the vCPUs.

pub mod kernel;
pub mod mptable;
pub mod params;

pub use kernel::{load_initramfs, load_kernel, InitramfsPlacement, LoadedKernel};
