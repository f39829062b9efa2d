//! Loading the guest kernel (ELF `vmlinux` or `bzImage`) and the initramfs.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::Error as ElfError;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress};

use crate::arch::x86_64::layout;
use vm_memory::GuestMemoryMmap;

/// Offset of the 64-bit entry point from the start of a bzImage's
/// protected-mode code (Documentation/arch/x86/boot.rst).
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Where a bzImage's setup header carries its magic, `HdrS`
/// (Documentation/arch/x86/boot.rst).
const BZIMAGE_MAGIC_OFFSET: usize = 0x202;

/// The setup header's magic.
const BZIMAGE_MAGIC: &[u8; 4] = b"HdrS";

/// Whether `head`, the first bytes of a kernel file, is a bzImage's (an
/// x86 boot protocol setup header), as opposed to an ELF `vmlinux`.
pub fn is_bzimage(head: &[u8]) -> bool {
    head.get(BZIMAGE_MAGIC_OFFSET..BZIMAGE_MAGIC_OFFSET + BZIMAGE_MAGIC.len())
        == Some(BZIMAGE_MAGIC.as_slice())
}

/// Whether the kernel file at `path` is a bzImage ([`is_bzimage`] on its
/// first bytes); a file too short to tell is not.
pub fn file_is_bzimage(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = Vec::with_capacity(BZIMAGE_MAGIC_OFFSET + BZIMAGE_MAGIC.len());
    File::open(path)?
        .take((BZIMAGE_MAGIC_OFFSET + BZIMAGE_MAGIC.len()) as u64)
        .read_to_end(&mut head)?;
    Ok(is_bzimage(&head))
}

/// Errors from loading the kernel or the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file could not be opened.
    #[error("cannot open {what} {path}: {source}")]
    Open {
        /// "kernel" or "initramfs".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An ELF file that cannot be placed in guest RAM.
    #[error(
        "cannot load ELF kernel {path}: {source} (guest RAM is {ram_mib} MiB: \
         is it large enough for this kernel?)"
    )]
    Elf {
        /// The path given.
        path: PathBuf,
        /// The loader's error.
        source: linux_loader::loader::Error,
        /// Guest RAM size.
        ram_mib: u64,
    },
    /// The file is neither a usable ELF vmlinux nor a bzImage.
    #[error("kernel {path} is neither a loadable ELF vmlinux ({elf}) nor a bzImage ({bzimage})")]
    BadFormat {
        /// The path given.
        path: PathBuf,
        /// Why the ELF loader refused it.
        elf: linux_loader::loader::Error,
        /// Why the bzImage loader refused it.
        bzimage: linux_loader::loader::Error,
    },
    /// The initramfs does not fit between the kernel and the end of low RAM.
    #[error(
        "initramfs {path} ({size} bytes) does not fit in guest RAM below {limit:#x} \
         above the kernel (ends at {kernel_end:#x}); give the guest more memory"
    )]
    InitramfsTooLarge {
        /// The path given.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// End of usable low RAM.
        limit: u64,
        /// End of the loaded kernel.
        kernel_end: u64,
    },
    /// Reading the initramfs into guest memory failed.
    #[error("cannot read initramfs {path} into guest memory: {source}")]
    ReadInitramfs {
        /// The path given.
        path: PathBuf,
        /// The memory error.
        source: vm_memory::GuestMemoryError,
    },
}

/// What the loader learned about the kernel it placed in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Guest-physical address of the 64-bit entry point.
    pub entry: GuestAddress,
    /// First byte after the kernel image.
    pub end: u64,
    /// The bzImage setup header, to be copied into the zero page.
    pub setup_header: Option<setup_header>,
}

/// Loads the kernel at `path`: an uncompressed ELF `vmlinux` (preferred: no
/// decompression inside the guest) or a `bzImage`.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<LoadedKernel, KernelError> {
    let mut file = File::open(path).map_err(|source| KernelError::Open {
        what: "kernel",
        path: path.to_path_buf(),
        source,
    })?;
    let elf = match Elf::load(mem, None, &mut file, Some(layout::HIMEM_START)) {
        Ok(r) => {
            return Ok(LoadedKernel {
                entry: r.kernel_load,
                end: r.kernel_end,
                setup_header: None,
            })
        }
        Err(e @ linux_loader::loader::Error::Elf(ElfError::InvalidElfMagicNumber)) => e,
        Err(source) => {
            return Err(KernelError::Elf {
                path: path.to_path_buf(),
                source,
                ram_mib: layout::ram_bytes(mem) >> 20,
            })
        }
    };
    let r = BzImage::load(mem, None, &mut file, Some(layout::HIMEM_START)).map_err(|bzimage| {
        KernelError::BadFormat {
            path: path.to_path_buf(),
            elf,
            bzimage,
        }
    })?;
    Ok(LoadedKernel {
        entry: GuestAddress(r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
        end: r.kernel_end,
        setup_header: r.setup_header,
    })
}

/// Where the initramfs was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitramfsPlacement {
    /// Guest-physical start (page aligned).
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Reads the initramfs at `path` into the top of low RAM, above the kernel.
pub fn load_initramfs(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> Result<InitramfsPlacement, KernelError> {
    let open_err = |source| KernelError::Open {
        what: "initramfs",
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let size = file.metadata().map_err(open_err)?.len();
    let limit = layout::low_ram_end(mem);
    let addr = place_initramfs(size, kernel_end, limit).ok_or(KernelError::InitramfsTooLarge {
        path: path.to_path_buf(),
        size,
        limit,
        kernel_end,
    })?;
    let len = usize::try_from(size).map_err(|_| KernelError::InitramfsTooLarge {
        path: path.to_path_buf(),
        size,
        limit,
        kernel_end,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, len)
        .map_err(|source| KernelError::ReadInitramfs {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(InitramfsPlacement { addr, size })
}

/// Picks a page-aligned start for `size` bytes ending at or below `limit`
/// and starting at or above `kernel_end`.
pub fn place_initramfs(size: u64, kernel_end: u64, limit: u64) -> Option<u64> {
    let start = limit.checked_sub(size)? & !0xfff;
    (start >= kernel_end).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bzimage_is_told_from_an_elf_by_its_setup_header() {
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(is_bzimage(&bz));
        assert!(is_bzimage(&bz[..0x206]));
        assert!(!is_bzimage(&bz[..0x205]), "too short to tell");
        let mut elf = vec![0u8; 0x300];
        elf[..4].copy_from_slice(b"\x7fELF");
        assert!(!is_bzimage(&elf));
        assert!(!is_bzimage(&[]));
    }

    #[test]
    fn initramfs_goes_to_the_top_page_aligned() {
        assert_eq!(
            place_initramfs(0x1800, 0x200_0000, 0x1000_0000),
            Some(0xfffe000)
        );
        assert_eq!(place_initramfs(0, 0, 0x1000), Some(0x1000));
    }

    #[test]
    fn initramfs_that_would_overlap_the_kernel_is_refused() {
        assert_eq!(place_initramfs(0x100_0000, 0x0f80_0000, 0x1000_0000), None);
        assert_eq!(place_initramfs(0x2000_0000, 0, 0x1000_0000), None);
    }
}
