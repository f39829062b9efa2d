//! The Linux zero page (`struct boot_params`) and its e820 memory map.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

use super::InitramfsPlacement;
use crate::arch::x86_64::layout;
use vm_memory::GuestMemoryMmap;

/// `type_of_loader` value for a boot loader without an assigned ID.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Magic in `boot_flag`.
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "HdrS", the setup header signature.
const HDR_MAGIC: u32 = 0x5372_6448;
/// Alignment the kernel is told it was loaded with.
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved ranges.
pub const E820_RESERVED: u32 = 2;

/// Errors from building the zero page.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// More RAM ranges than the zero page's e820 table holds.
    #[error("too many e820 entries ({0})")]
    TooManyE820Entries(usize),
    /// Writing the zero page into guest memory failed.
    #[error("cannot write the zero page: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
    /// A value that the 32-bit boot header cannot hold.
    #[error("{0} does not fit the 32-bit boot header")]
    Overflow(&'static str),
}

/// One e820 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The e820 map of `mem`: RAM below the EBDA, the EBDA and BIOS area
/// reserved, RAM from 1 MiB upwards around the device window.
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: layout::EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: layout::EBDA_START,
            size: layout::HIMEM_START.0 - layout::EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    for region in mem.iter() {
        let start = region.start_addr().0.max(layout::HIMEM_START.0);
        let end = region.start_addr().0 + region.len();
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

/// Writes the zero page for a kernel with the given command line length,
/// optional bzImage header and optional initramfs.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    cmdline_len: usize,
    initramfs: Option<InitramfsPlacement>,
    acpi_rsdp: Option<u64>,
) -> Result<(), ParamsError> {
    let mut params = boot_params {
        acpi_rsdp_addr: acpi_rsdp.unwrap_or(0),
        ..Default::default()
    };
    if let Some(hdr) = header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDR_MAGIC;
    params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT;
    params.hdr.cmd_line_ptr =
        u32::try_from(layout::CMDLINE_START.0).map_err(|_| ParamsError::Overflow("cmdline"))?;
    params.hdr.cmdline_size =
        u32::try_from(cmdline_len).map_err(|_| ParamsError::Overflow("cmdline size"))?;
    if let Some(rd) = initramfs {
        params.hdr.ramdisk_image =
            u32::try_from(rd.addr).map_err(|_| ParamsError::Overflow("initramfs address"))?;
        params.hdr.ramdisk_size =
            u32::try_from(rd.size).map_err(|_| ParamsError::Overflow("initramfs size"))?;
    }
    let map = e820_map(mem);
    if map.len() > params.e820_table.len() {
        return Err(ParamsError::TooManyE820Entries(map.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = u8::try_from(map.len()).map_err(|_| ParamsError::Overflow("e820"))?;
    mem.write_obj(params, layout::ZERO_PAGE_START)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64 MiB of guest RAM as memtide lays it out.
    fn create_guest_memory(mib: u64) -> Result<GuestMemoryMmap, vm_memory::mmap::FromRangesError> {
        let ranges: Vec<_> = layout::ram_regions(mib << 20)
            .into_iter()
            .map(|(a, len)| (a, usize::try_from(len).expect("region size")))
            .collect();
        GuestMemoryMmap::from_ranges(&ranges)
    }

    #[test]
    fn e820_reserves_bios_area_and_covers_all_ram() {
        let mem = create_guest_memory(64).expect("mem");
        let map = e820_map(&mem);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: E820_RAM
            }
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(
            map[2],
            E820Entry {
                addr: 0x10_0000,
                size: (64 << 20) - 0x10_0000,
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn zero_page_holds_cmdline_and_initramfs() {
        let mem = create_guest_memory(64).expect("mem");
        let rd = InitramfsPlacement {
            addr: 0x300_0000,
            size: 4096,
        };
        write_boot_params(&mem, None, 42, Some(rd), Some(0xe0000)).expect("write");
        let p: boot_params = mem.read_obj(layout::ZERO_PAGE_START).expect("read");
        assert_eq!({ p.hdr.cmdline_size }, 42);
        assert_eq!({ p.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ p.hdr.boot_flag }, BOOT_FLAG_MAGIC);
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
    }
}
