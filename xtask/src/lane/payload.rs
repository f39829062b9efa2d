//! The L1 root file system: files placed at the same absolute paths they
//! have on the host (memtide, the test binaries, their shared libraries,
//! the guest images), so that every path a test or benchmark computes is
//! valid inside L1 too.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::cpio::CpioWriter;
use crate::error::{io_at, XtaskError};

/// An L1 initramfs being assembled.
pub struct L1Root {
    cpio: CpioWriter,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
    bytes: u64,
}

/// The archive name of an absolute path (no leading slash, no `..`).
pub fn archive_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p.to_str()?),
            _ => return None,
        }
    }
    (!parts.is_empty() && path.is_absolute()).then(|| parts.join("/"))
}

/// The shared libraries `ldd` lists for `binary` (with the loader), as
/// absolute paths; empty for a static binary.
pub fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

impl L1Root {
    /// An empty root.
    pub fn new() -> Self {
        Self {
            cpio: CpioWriter::new(),
            dirs: BTreeSet::new(),
            files: BTreeSet::new(),
            bytes: 0,
        }
    }

    /// Adds directory `name` and its parents (archive names).
    pub fn dir(&mut self, name: &str) -> Result<(), XtaskError> {
        let mut prefix = String::new();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if self.dirs.insert(prefix.clone()) {
                self.cpio.dir(&prefix)?;
            }
        }
        Ok(())
    }

    /// Adds `data` as archive file `name` with permission bits `perm`.
    pub fn data(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), XtaskError> {
        if !self.files.insert(name.to_string()) {
            return Ok(());
        }
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.bytes += data.len() as u64;
        self.cpio.file(name, perm, data)?;
        Ok(())
    }

    /// Adds the host file `path` at `name` in the archive.
    pub fn file_as(&mut self, name: &str, path: &Path) -> Result<(), XtaskError> {
        let data = std::fs::read(path).map_err(io_at(path))?;
        let perm = std::fs::metadata(path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0o644);
        self.data(name, perm, &data)
    }

    /// Adds the host file `path` at the same absolute path.
    pub fn same_path(&mut self, path: &Path) -> Result<(), XtaskError> {
        let name = archive_name(path).ok_or_else(|| {
            XtaskError::Lane(format!("{} is not a plain absolute path", path.display()))
        })?;
        self.file_as(&name, path)
    }

    /// Adds an executable at its own path and every shared library it
    /// loads (as `ldd` lists them) at theirs.
    pub fn binary(&mut self, path: &Path) -> Result<(), XtaskError> {
        self.same_path(path)?;
        let out = Command::new("ldd")
            .arg(path)
            .output()
            .map_err(|source| XtaskError::Spawn {
                cmd: format!("ldd {}", path.display()),
                source,
            })?;
        for lib in parse_ldd(&String::from_utf8_lossy(&out.stdout)) {
            self.same_path(&lib)?;
        }
        Ok(())
    }

    /// File bytes added so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The finished archive.
    pub fn finish(self) -> Result<Vec<u8>, XtaskError> {
        Ok(self.cpio.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn archive_names_are_relative_and_plain() {
        assert_eq!(
            archive_name(Path::new("/work/main/target/release/memtide")).as_deref(),
            Some("work/main/target/release/memtide")
        );
        assert_eq!(archive_name(Path::new("relative/x")), None);
        assert_eq!(archive_name(Path::new("/a/../b")), None);
        assert_eq!(archive_name(Path::new("/")), None);
    }

    #[test]
    fn parents_come_before_their_files_once() {
        let mut root = L1Root::new();
        root.data("a/b/c", 0o644, b"x").expect("file");
        root.data("a/b/d", 0o644, b"y").expect("file");
        root.data("a/b/d", 0o644, b"y")
            .expect("duplicate is ignored");
        assert_eq!(root.dirs.iter().collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(root.bytes(), 2);
    }
}
