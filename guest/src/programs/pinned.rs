//! Unmovable guest memory for `memtide-hog`'s `MIB+PINNED` phases: kernel
//! pages that neither compaction nor memory offlining can move, so that a
//! test can make a virtio-mem unplug come up short on a real guest.
//!
//! The pages are pipe buffers. The kernel allocates a pipe's buffer pages
//! as plain, non-movable pages that stay until the pipe's data is read or
//! the pipe is closed; this module fills pipes of 1 MiB each and never
//! reads them. They are not part of Committed_AS (the memory is the
//! kernel's, not the process's address space), so pinning does not move
//! the balancer's demand.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::sys::SysError;

/// Bytes per pinned chunk: one pipe, resized to hold this much.
const CHUNK: usize = 1 << 20;

/// One full pipe: its read end is held open and never read.
#[derive(Debug)]
struct FullPipe {
    _read: OwnedFd,
    _write: File,
}

/// Pinned memory held as full pipes, one MiB each.
#[derive(Debug, Default)]
pub struct Pinned(Vec<FullPipe>);

impl Pinned {
    /// MiB pinned now.
    pub fn mib(&self) -> usize {
        self.0.len()
    }

    /// Pins or releases whole MiB until `mib` are pinned; releasing closes
    /// pipes (the kernel frees their pages at once).
    pub fn resize(&mut self, mib: usize) -> Result<(), SysError> {
        self.0.truncate(mib);
        while self.0.len() < mib {
            self.0.push(full_pipe()?);
        }
        Ok(())
    }
}

/// A pipe resized to [`CHUNK`] bytes and filled.
fn full_pipe() -> Result<FullPipe, SysError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by
    // nothing else; each is wrapped exactly once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let size = libc::c_int::try_from(CHUNK).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_SETPIPE_SZ takes an int argument on an open pipe descriptor.
    let got = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, size) };
    if got < size {
        return Err(os_error("F_SETPIPE_SZ (/proc/sys/fs/pipe-max-size)"));
    }
    // One write per pipe: the kernel fills every page of the pipe in one
    // system call (a system call is costly on the nested host, where
    // memtide completes it; 256 page-sized writes per MiB pinned about
    // 0.35 MiB/s there).
    let mut w = write;
    w.write_all(&vec![0x5au8; CHUNK])
        .map_err(|source| SysError {
            what: "filling a pipe".into(),
            source,
        })?;
    Ok(FullPipe {
        _read: read,
        _write: w,
    })
}

fn os_error(what: &str) -> SysError {
    SysError {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_and_releases_whole_mebibytes() {
        let mut p = Pinned::default();
        p.resize(2).expect("pin 2 MiB in pipes");
        assert_eq!(p.mib(), 2);
        p.resize(0).expect("release");
        assert_eq!(p.mib(), 0);
    }
}
