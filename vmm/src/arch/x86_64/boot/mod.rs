//! Everything written into guest memory before the first instruction runs:
//! the kernel, the initramfs, the command line, the zero page with its e820
//! map, the MP table that lists the vCPUs, and the boot GDT and page tables.

pub mod kernel;
pub mod mptable;
pub mod params;

use std::path::Path;

use vm_memory::{Bytes, GuestAddress};

pub use kernel::{load_initramfs, load_kernel, InitramfsPlacement, LoadedKernel};

use super::layout;
use super::setup::{self, SetupError};
use vm_memory::GuestMemoryMmap;

/// Errors from writing the guest's boot state.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Kernel or initramfs.
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    /// Zero page.
    #[error(transparent)]
    Params(#[from] params::ParamsError),
    /// MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::MpTableError),
    /// Boot GDT and page tables.
    #[error("vCPU set-up: {0}")]
    Tables(#[from] SetupError),
    /// Writing the command line.
    #[error("cannot write the kernel command line: {0}")]
    Cmdline(vm_memory::GuestMemoryError),
}

/// What to boot.
#[derive(Debug)]
pub struct BootSource<'a> {
    /// The kernel (ELF `vmlinux` or `bzImage`).
    pub kernel: &'a Path,
    /// The initramfs, if any.
    pub initramfs: Option<&'a Path>,
    /// The kernel command line with its terminating NUL.
    pub cmdline: &'a [u8],
    /// vCPU count (for the MP table).
    pub vcpus: u8,
    /// Address of the ACPI RSDP, if the VM has ACPI tables.
    pub acpi_rsdp: Option<u64>,
}

/// Writes kernel, initramfs, command line, zero page, MP table and boot
/// page tables into guest memory; returns the kernel's entry point.
pub fn load_guest(mem: &GuestMemoryMmap, src: &BootSource<'_>) -> Result<GuestAddress, BootError> {
    let kernel = load_kernel(mem, src.kernel)?;
    let initramfs = match src.initramfs {
        Some(path) => Some(load_initramfs(mem, path, kernel.end)?),
        None => None,
    };
    let cmdline = src.cmdline;
    mem.write_slice(cmdline, layout::CMDLINE_START)
        .map_err(BootError::Cmdline)?;
    params::write_boot_params(
        mem,
        kernel.setup_header,
        cmdline.len().saturating_sub(1),
        initramfs,
        src.acpi_rsdp,
    )?;
    mptable::write(mem, src.vcpus)?;
    setup::write_boot_tables(mem)?;
    Ok(kernel.entry)
}
