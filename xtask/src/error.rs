//! The xtask error type.

use std::path::PathBuf;

/// Everything that can stop a build task.
#[derive(Debug, thiserror::Error)]
pub enum XtaskError {
    /// A command could not be started.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{cmd} failed with {status}{hint}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Where to look next.
        hint: String,
    },
    /// File-system trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No place for the cache.
    #[error("neither $MEMTIDE_CACHE nor $HOME is set")]
    NoCacheDir,
    /// A binary that must be static (the guest has no dynamic loader) is
    /// dynamically linked, or not an ELF executable.
    #[error("{} is not a statically linked ELF executable (install busybox-static)", .0.display())]
    NotStatic(PathBuf),
    /// An entry the cpio format cannot hold.
    #[error(transparent)]
    Cpio(#[from] crate::cpio::TooLarge),
    /// The standard-KVM lane could not run its command.
    #[error("{0}")]
    Lane(String),
    /// The lane's L1 VM itself crashed or hung: a fault of QEMU's TCG or of
    /// L1's kernel, never a test's failure (docs/lanes.md).
    #[error("{0}")]
    LaneFault(String),
    /// Integration test executables failed; the message names them and
    /// the lane.
    #[error("{0}")]
    TestsFailed(String),
    /// A required file is missing after a step that should have made it.
    #[error("{0} is missing")]
    Missing(PathBuf),
}

/// Attaches a path to an I/O error.
pub fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> XtaskError {
    let path = path.into();
    move |source| XtaskError::Io { path, source }
}
