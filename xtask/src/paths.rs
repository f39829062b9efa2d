//! Where things live. The VMM computes the same cache path
//! (`memtide_vmm::config::cache_dir`), so `memtide run` finds the images: keep
//! the two in step.

use std::path::PathBuf;

use crate::error::XtaskError;

/// Environment variable that moves the image cache.
pub const CACHE_ENV: &str = "MEMTIDE_CACHE";
/// The uncompressed kernel memtide boots by default (in the cache).
pub const VMLINUX_FILE: &str = "vmlinux";
/// The compressed kernel (in the cache).
pub const BZIMAGE_FILE: &str = "bzImage";
/// The initramfs memtide boots by default (in the cache).
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
/// The initramfs whose `/init` only idles (in the cache).
pub const INITRAMFS_IDLE_FILE: &str = "initramfs-idle.cpio";
/// Debian's kernel source tarball.
pub const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// The directory the tarball unpacks to.
pub const KERNEL_SRC_NAME: &str = "linux-source-6.12";

/// The image cache: `$MEMTIDE_CACHE`, else `~/.cache/memtide`.
pub fn cache_dir() -> Result<PathBuf, XtaskError> {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("memtide"))
        .ok_or(XtaskError::NoCacheDir)
}

/// The directory of one kernel build, named by its cache key.
pub fn kernel_dir(cache: &std::path::Path, key: &str) -> PathBuf {
    cache.join(format!("kernel-{key}"))
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.clone(), PathBuf::from)
}
