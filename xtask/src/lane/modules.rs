//! Kernel modules of the L1 kernel package: which `.ko` files to load, in
//! dependency order. The package is extracted, not installed, so there is
//! no `modules.dep`; each module's `depends=` entry in its `.modinfo`
//! section is read straight from the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{io_at, XtaskError};

/// The modules the lane needs: KVM for AMD SVM, and virtio-blk for the
/// disk that carries results back out of L1.
pub const WANTED: &[&str] = &["kvm_amd", "virtio_blk", "virtio_pci"];

/// A module's canonical name: the file stem with `-` spelled `_`.
pub fn canonical(name: &str) -> String {
    module_stem(name).unwrap_or(name).replace('-', "_")
}

/// The module name in a file name (`kvm-amd.ko`, `kvm-amd.ko.xz`), if it
/// is a module.
fn module_stem(file: &str) -> Option<&str> {
    file.strip_suffix(".ko")
        .or_else(|| file.strip_suffix(".ko.xz"))
}

/// A module file's contents, decompressed (Debian compresses them with xz
/// from Linux 6.12 on; busybox `insmod` takes plain ELF only).
pub fn read(path: &Path) -> Result<Vec<u8>, XtaskError> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = std::process::Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .map_err(|source| XtaskError::Spawn {
                cmd: format!("xz -dc {}", path.display()),
                source,
            })?;
        if !out.status.success() {
            return Err(XtaskError::Lane(format!(
                "xz -dc {} failed",
                path.display()
            )));
        }
        return Ok(out.stdout);
    }
    std::fs::read(path).map_err(io_at(path))
}

/// The `depends=` list of a module file's `.modinfo` strings (empty when
/// the module depends on nothing).
pub fn depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let mut i = 0;
    while let Some(pos) = find(&ko[i..], KEY) {
        let start = i + pos;
        // A .modinfo entry starts after a NUL (or at the section start,
        // which never is the file's first byte in an ELF object).
        if start > 0 && ko[start - 1] == 0 {
            let value = &ko[start + KEY.len()..];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            return String::from_utf8_lossy(&value[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(canonical)
                .collect();
        }
        i = start + KEY.len();
    }
    Vec::new()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Every `.ko` under `dir`, by canonical name.
fn index(dir: &Path, out: &mut HashMap<String, PathBuf>) -> Result<(), XtaskError> {
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let path = entry.map_err(io_at(dir))?.path();
        if path.is_dir() {
            index(&path, out)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if let Some(stem) = module_stem(name) {
                out.insert(canonical(stem), path.clone());
            }
        }
    }
    Ok(())
}

/// The files to `insmod`, dependencies first, for [`WANTED`] under the
/// extracted `modules_dir` (`lib/modules/<release>`).
pub fn load_order(modules_dir: &Path) -> Result<Vec<PathBuf>, XtaskError> {
    let mut all = HashMap::new();
    index(modules_dir, &mut all)?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin = builtin_names(&builtin);
    let mut order = Vec::new();
    for name in WANTED {
        if !builtin.iter().any(|b| b == name) {
            visit(name, &all, &mut order, &mut Vec::new())?;
        }
    }
    Ok(order)
}

/// The module names in a `modules.builtin` list (built into the kernel:
/// nothing to load).
pub fn builtin_names(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.rsplit('/').next())
        .filter(|n| !n.is_empty())
        .map(canonical)
        .collect()
}

fn visit(
    name: &str,
    all: &HashMap<String, PathBuf>,
    order: &mut Vec<PathBuf>,
    stack: &mut Vec<String>,
) -> Result<(), XtaskError> {
    let path = all
        .get(name)
        .ok_or_else(|| XtaskError::Lane(format!("the L1 kernel has no module {name}.ko")))?;
    if order.contains(path) || stack.iter().any(|s| s == name) {
        return Ok(());
    }
    stack.push(name.to_string());
    for dep in depends(&read(path)?) {
        visit(&dep, all, order, stack)?;
    }
    stack.pop();
    order.push(path.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_reads_the_modinfo_entry() {
        let ko =
            b"\x7fELF junk depends=not-this\0license=GPL\0depends=kvm,irq-bypass\0name=kvm_amd\0";
        assert_eq!(depends(ko), vec!["kvm", "irq_bypass"]);
    }

    #[test]
    fn an_empty_depends_entry_means_none() {
        assert!(depends(b"\0depends=\0name=kvm\0").is_empty());
        assert!(depends(b"\0name=irqbypass\0").is_empty());
    }

    #[test]
    fn builtin_modules_are_named() {
        let list = "kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n";
        assert_eq!(builtin_names(list), vec!["virtio", "virtio_pci"]);
    }

    #[test]
    fn names_are_canonical() {
        assert_eq!(canonical("kvm-amd.ko"), "kvm_amd");
        assert_eq!(canonical("virtio_blk"), "virtio_blk");
        assert_eq!(canonical("kvm-amd.ko.xz"), "kvm_amd");
    }
}
