//! A `/proc` file kept open and read again from its start with `pread`.
//!
//! The agent samples three `/proc` files four times a second. Reading one
//! with `std::fs::read_to_string` costs five system calls (open, statx,
//! two reads, close); on the nested host every guest system call is slow
//! (memtide completes it, and the guest kernel's code is emulated), so the
//! agent kept a small guest busy. A kept file costs one `pread` per read:
//! Linux's `seq_file` files (meminfo, uptime, pressure) produce their whole
//! text again for a read at offset 0, and a read shorter than the buffer
//! holds all of it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes the buffer starts with (`/proc/meminfo` is about 1.5 KiB).
const FIRST_CAPACITY: usize = 4096;
/// The largest text read; a file that fills this is an error.
const MAX_CAPACITY: usize = 1 << 20;

/// An open `/proc` file and the buffer its text is read into.
#[derive(Debug)]
pub struct ProcFile {
    path: &'static str,
    file: Option<File>,
    buf: Vec<u8>,
}

impl ProcFile {
    /// A reader of `path`; the file is opened at the first read.
    pub fn new(path: &'static str) -> Self {
        Self {
            path,
            file: None,
            buf: vec![0; FIRST_CAPACITY],
        }
    }

    /// The file's whole text now. After an error the file is opened again
    /// at the next read.
    pub fn read(&mut self) -> io::Result<&str> {
        let result = self.read_once();
        if result.is_err() {
            self.file = None;
        }
        let len = result?;
        std::str::from_utf8(&self.buf[..len])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Reads from offset 0 until a read comes back short; returns the length.
    fn read_once(&mut self) -> io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(File::open(self.path)?);
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("not open"))?;
        let mut len = 0;
        loop {
            let n = file.read_at(&mut self.buf[len..], len as u64)?;
            len += n;
            if n == 0 || len < self.buf.len() {
                return Ok(len);
            }
            if self.buf.len() >= MAX_CAPACITY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is larger than {MAX_CAPACITY} bytes", self.path),
                ));
            }
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_whole_text_again_each_time() {
        let dir = std::env::temp_dir().join(format!("memtide-proc-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("big");
        // Larger than the first buffer: the buffer grows.
        let text = "x".repeat(FIRST_CAPACITY * 3 + 5);
        std::fs::write(&path, &text).expect("write");
        let leaked: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
        let mut f = ProcFile::new(leaked);
        assert_eq!(f.read().expect("read"), text);
        std::fs::write(&path, "short\n").expect("rewrite");
        assert_eq!(f.read().expect("read again"), "short\n");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_missing_file_is_an_error_each_time() {
        let mut f = ProcFile::new("/nonexistent/memtide/proc-file");
        assert!(f.read().is_err());
        assert!(f.read().is_err());
    }

    #[test]
    fn proc_files_read_in_one_go() {
        let mut f = ProcFile::new("/proc/uptime");
        let first = f.read().expect("uptime").to_string();
        assert!(
            first.ends_with('\n') && first.split_whitespace().count() == 2,
            "{first:?}"
        );
        assert!(f.read().expect("again").ends_with('\n'));
    }
}
