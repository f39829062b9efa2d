//! The L1 kernel: a Debian kernel package with `kvm_amd`, downloaded with
//! `apt-get download` and extracted with `dpkg-deb -x` (never installed),
//! cached in `$MEMTIDE_CACHE/lane-svm/<package>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{io_at, XtaskError};
use crate::process::run;

/// The meta-package whose dependency names the current cloud kernel (small,
/// boots fast, has `kvm-amd.ko` and `virtio_blk.ko` as modules).
pub const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// An extracted kernel package.
pub struct L1Kernel {
    /// The compressed kernel (`boot/vmlinuz-<release>`).
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules_dir: PathBuf,
    /// The package it came from.
    pub package: String,
}

/// The kernel package `apt-cache depends` names for [`META_PACKAGE`].
pub fn parse_meta_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.contains('<'))
        .map(str::to_string)
}

fn resolve_package(meta: &str) -> Result<String, XtaskError> {
    let out = Command::new("apt-cache")
        .args(["depends", meta])
        .output()
        .map_err(|source| XtaskError::Spawn {
            cmd: format!("apt-cache depends {meta}"),
            source,
        })?;
    parse_meta_depends(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        XtaskError::Lane(format!(
            "apt-cache depends {meta} names no kernel package (run apt-get update?)"
        ))
    })
}

/// Finds the one entry of `dir` whose name starts with `prefix`.
fn only_entry(dir: &Path, prefix: &str) -> Result<PathBuf, XtaskError> {
    std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .ok_or_else(|| XtaskError::Missing(dir.join(format!("{prefix}*"))))
}

fn located(dir: &Path, package: String) -> Result<L1Kernel, XtaskError> {
    let vmlinuz = only_entry(&dir.join("boot"), "vmlinuz-")?;
    let modules_dir = only_entry(&dir.join("lib").join("modules"), "")?;
    Ok(L1Kernel {
        vmlinuz,
        modules_dir,
        package,
    })
}

/// Downloads and extracts the kernel package that the meta-package `meta`
/// names, once; later calls reuse it.
pub fn ensure(lane_cache: &Path, meta: &str) -> Result<L1Kernel, XtaskError> {
    let package = match resolve_package(meta) {
        Ok(p) => p,
        Err(_) => {
            println!("[xtask] lane: refreshing the package lists");
            run(&mut crate::deps::apt(&["update", "-q"]), "")?;
            resolve_package(meta)?
        }
    };
    let dir = lane_cache.join(&package);
    let done = dir.join(".extracted");
    if done.exists() {
        return located(&dir, package);
    }
    println!("[xtask] lane: fetching the L1 kernel package {package}");
    let download = lane_cache.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download).map_err(io_at(&download))?;
    run(
        Command::new("apt-get")
            .current_dir(&download)
            .args(["download", "-q", &package]),
        " (the lane needs Debian's package archive)",
    )?;
    let deb = only_entry(&download, "linux-image-")?;
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir), "")?;
    std::fs::remove_dir_all(&download).map_err(io_at(&download))?;
    std::fs::write(&done, &package).map_err(io_at(&done))?;
    located(&dir, package)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_package_names_its_kernel() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            parse_meta_depends(out).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(parse_meta_depends("linux-image-cloud-amd64\n"), None);
    }
}
