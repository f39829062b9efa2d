//! Static guest programs into the initramfs: the one place that checks a
//! binary can run in a guest without a dynamic loader.

use crate::cpio::CpioWriter;

/// Adds the host binary `host_path` to the archive as `archive_path` (mode
/// 0755), refusing one that needs a dynamic loader (the guest has none).
pub fn add_binary(
    w: &mut CpioWriter,
    archive_path: &str,
    host_path: &std::path::Path,
) -> Result<(), crate::error::XtaskError> {
    let data = std::fs::read(host_path).map_err(crate::error::io_at(host_path))?;
    if !crate::elf::is_static_executable(&data) {
        return Err(crate::error::XtaskError::NotStatic(host_path.to_path_buf()));
    }
    w.file(archive_path, 0o755, &data)?;
    Ok(())
}
