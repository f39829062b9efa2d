//! `cargo xtask run` and `cargo xtask demo`: build memtide and run it.

use std::process::Command;

use crate::error::XtaskError;
use crate::paths::workspace_root;
use crate::process::run as run_cmd;

/// Builds the release `memtide` binary; returns its path.
pub fn build_memtide() -> Result<std::path::PathBuf, XtaskError> {
    let root = workspace_root();
    run_cmd(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "-p", "memtide"]),
        "",
    )?;
    Ok(root.join("target").join("release").join("memtide"))
}

/// Runs `memtide <subcommand> <args>` from a fresh release build.
pub fn memtide(subcommand: &str, args: &[String]) -> Result<(), XtaskError> {
    let bin = build_memtide()?;
    println!(
        "[xtask] running: {} {subcommand} {}",
        bin.display(),
        args.join(" ")
    );
    run_cmd(Command::new(bin).arg(subcommand).args(args), "")
}
