//! Where things live. The VMM computes the same cache path
//! (`memtide::config::cache_dir`), so `memtide run` finds the images.

use std::path::PathBuf;

use crate::error::XtaskError;

/// The image cache: `$MEMTIDE_CACHE`, else `~/.cache/memtide`.
pub fn cache_dir() -> Result<PathBuf, XtaskError> {
    if let Some(dir) = std::env::var_os("MEMTIDE_CACHE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| PathBuf::from(home).join(".cache").join("memtide"))
        .ok_or(XtaskError::NoCacheDir)
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or_else(|| manifest.clone(), PathBuf::from)
}

/// Debian's kernel source tarball.
pub const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// The directory the tarball unpacks to.
pub const KERNEL_SRC_NAME: &str = "linux-source-6.12";
