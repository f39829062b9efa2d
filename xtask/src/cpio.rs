//! A writer for uncompressed `newc` cpio archives, the format the Linux
//! kernel unpacks as an initramfs.

/// File-type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
/// Name of the last entry.
pub const TRAILER: &str = "TRAILER!!!";

/// An entry whose name or data does not fit a newc header's 32-bit fields.
#[derive(Debug, thiserror::Error)]
#[error("cpio entry {name}: {len} bytes do not fit a newc header field")]
pub struct TooLarge {
    /// The entry's name.
    pub name: String,
    /// The length that overflowed.
    pub len: usize,
}

/// Converts a length to a header field.
fn field_len(name: &str, len: usize) -> Result<u32, TooLarge> {
    u32::try_from(len).map_err(|_| TooLarge {
        name: name.to_string(),
        len,
    })
}

/// An archive being built in memory.
pub struct CpioWriter {
    buf: Vec<u8>,
    next_ino: u32,
}

impl Default for CpioWriter {
    fn default() -> Self {
        Self::new()
    }
}

struct Header {
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
}

impl CpioWriter {
    /// Starts an empty archive.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            next_ino: 1,
        }
    }

    fn entry(&mut self, name: &str, h: Header, data: &[u8]) -> Result<(), TooLarge> {
        let namesize = field_len(name, name.len() + 1)?;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino = self.next_ino.wrapping_add(1);
        let fields = [
            ino, h.mode, 0, // uid
            0, // gid
            h.nlink, 0, // mtime: fixed for reproducible archives
            h.size, 0, // devmajor
            0, // devminor
            h.rdev.0, h.rdev.1, namesize, 0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
        Ok(())
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// Adds a directory (`name` without a leading slash).
    pub fn dir(&mut self, name: &str) -> Result<(), TooLarge> {
        let h = Header {
            mode: S_IFDIR | 0o755,
            nlink: 2,
            size: 0,
            rdev: (0, 0),
        };
        self.entry(name, h, &[])
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), TooLarge> {
        let h = Header {
            mode: S_IFREG | perm,
            nlink: 1,
            size: field_len(name, data.len())?,
            rdev: (0, 0),
        };
        self.entry(name, h, data)
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), TooLarge> {
        let h = Header {
            mode: S_IFLNK | 0o777,
            nlink: 1,
            size: field_len(name, target.len())?,
            rdev: (0, 0),
        };
        self.entry(name, h, target.as_bytes())
    }

    /// Adds a character device node.
    pub fn char_dev(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), TooLarge> {
        let h = Header {
            mode: S_IFCHR | perm,
            nlink: 1,
            size: 0,
            rdev: (major, minor),
        };
        self.entry(name, h, &[])
    }

    /// Appends the trailer and returns the archive bytes.
    pub fn finish(mut self) -> Result<Vec<u8>, TooLarge> {
        let h = Header {
            mode: 0,
            nlink: 1,
            size: 0,
            rdev: (0, 0),
        };
        self.entry(TRAILER, h, &[])?;
        Ok(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of a newc header.
    const HEADER_LEN: usize = 110;

    fn field(header: &[u8], index: usize) -> u32 {
        let s = std::str::from_utf8(&header[6 + index * 8..6 + (index + 1) * 8]).expect("ascii");
        u32::from_str_radix(s, 16).expect("hex")
    }

    #[test]
    fn file_entry_layout_and_padding() {
        let mut w = CpioWriter::new();
        w.file("init", 0o755, b"hello").expect("small file");
        let a = w.finish().expect("trailer");
        assert_eq!(&a[..6], b"070701");
        assert_eq!(field(&a, 1), S_IFREG | 0o755);
        assert_eq!(field(&a, 6), 5, "file size");
        assert_eq!(field(&a, 11), 5, "name size includes the NUL");
        // 110 + "init\0" = 115, padded to 116; data 5 bytes padded to 8.
        assert_eq!(&a[HEADER_LEN..HEADER_LEN + 5], b"init\0");
        assert_eq!(&a[116..121], b"hello");
        let trailer = &a[124..];
        assert_eq!(&trailer[..6], b"070701");
        assert_eq!(&trailer[HEADER_LEN..HEADER_LEN + 10], TRAILER.as_bytes());
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn device_and_symlink_entries() {
        let mut w = CpioWriter::new();
        w.char_dev("dev/console", 0o600, 5, 1).expect("node");
        w.symlink("bin/sh", "busybox").expect("link");
        let a = w.finish().expect("trailer");
        assert_eq!(field(&a, 1), S_IFCHR | 0o600);
        assert_eq!((field(&a, 9), field(&a, 10)), (5, 1));
        // Second entry starts after 110 + "dev/console\0" (12) = 122 -> 124.
        let second = &a[124..];
        assert_eq!(field(second, 1), S_IFLNK | 0o777);
        assert_eq!(field(second, 6), 7);
    }

    #[test]
    fn lengths_beyond_32_bits_are_refused() {
        assert_eq!(field_len("x", 7).ok(), Some(7));
        let too_big = usize::try_from(u64::from(u32::MAX) + 1).expect("64-bit host");
        assert!(field_len("x", too_big).is_err());
    }
}
