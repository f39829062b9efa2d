//! Reading guest memory at a guest-virtual address, through the vCPU's
//! page tables (`KVM_TRANSLATE`), page by page.

use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;

/// Reads up to `len` bytes at guest-virtual `linear`, following the
/// guest's page tables page by page (fewer if a page is not mapped);
/// `None` if not even the first byte is mapped to guest RAM.
pub fn read_virt(fd: &VcpuFd, mem: &GuestMemoryMmap, linear: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut va = linear;
    while out.len() < len {
        let tr = match fd.translate_gva(va) {
            Ok(tr) if tr.valid != 0 => tr,
            _ => break,
        };
        let in_page = 0x1000 - (va & 0xfff) as usize;
        let want = in_page.min(len - out.len());
        let mut buf = vec![0u8; want];
        if mem
            .read_slice(&mut buf, GuestAddress(tr.physical_address))
            .is_err()
        {
            break;
        }
        out.extend_from_slice(&buf);
        va = va.wrapping_add(want as u64);
    }
    (!out.is_empty()).then_some(out)
}
