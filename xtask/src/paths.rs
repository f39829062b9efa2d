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
/// The initramfs without busybox (in the cache): `memtide run` boots it by
/// default when the guest needs no shell (`docs/guest-image.md`).
pub const INITRAMFS_LEAN_FILE: &str = "initramfs-lean.cpio";
/// The initramfs whose `/init` only idles (in the cache).
pub const INITRAMFS_IDLE_FILE: &str = "initramfs-idle.cpio";
/// Every guest image the tests boot (in the cache).
pub const IMAGE_FILES: [&str; 5] = [
    VMLINUX_FILE,
    BZIMAGE_FILE,
    INITRAMFS_FILE,
    INITRAMFS_LEAN_FILE,
    INITRAMFS_IDLE_FILE,
];
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

/// Holds an exclusive lock on a file in the cache until dropped, so that two
/// `cargo xtask` processes (a CI run and a developer's build, say) never
/// write the same cached build at once; the second waits for the first.
#[derive(Debug)]
pub struct CacheLock {
    _file: std::fs::File,
}

/// Takes the cache lock named `name` (`<cache>/.<name>.lock`), waiting for
/// another holder with a message. Separate names never block each other.
pub fn lock_cache(cache: &std::path::Path, name: &str) -> Result<CacheLock, XtaskError> {
    std::fs::create_dir_all(cache).map_err(crate::error::io_at(cache))?;
    let path = cache.join(format!(".{name}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(crate::error::io_at(&path))?;
    if !flock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
        println!(
            "[xtask] {name}: another xtask is building it; waiting for {}",
            path.display()
        );
        flock(&file, libc::LOCK_EX)?;
    }
    Ok(CacheLock { _file: file })
}

/// `flock(2)` on `file`: `Ok(false)` when `LOCK_NB` was given and another
/// holder has it.
fn flock(file: &std::fs::File, op: libc::c_int) -> Result<bool, XtaskError> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps
        // open for the duration of the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => {
                return Err(XtaskError::Io {
                    path: PathBuf::from("flock"),
                    source: err,
                })
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_lock_excludes_a_second_holder_until_dropped() {
        let dir = std::env::temp_dir().join(format!("memtide-lock-test-{}", std::process::id()));
        let held = lock_cache(&dir, "kernel").expect("first lock");
        let other = std::fs::File::open(dir.join(".kernel.lock")).expect("open");
        assert!(!flock(&other, libc::LOCK_EX | libc::LOCK_NB).expect("flock"));
        // Another name is another lock.
        let _initramfs = lock_cache(&dir, "initramfs").expect("other name");
        drop(held);
        assert!(flock(&other, libc::LOCK_EX | libc::LOCK_NB).expect("flock"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
