//! `cargo xtask test`: the project's whole check, as CI runs it.

use std::process::Command;

use crate::error::XtaskError;
use crate::paths::workspace_root;
use crate::process::run;

/// Format check, clippy, then every unit and integration test (release
/// build, so guests boot with an optimized VMM; one test thread, so at most
/// one guest runs at a time on a 2-core host).
pub fn run_all() -> Result<(), XtaskError> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let step = |args: &[&str]| {
        println!("[xtask] test: cargo {}", args.join(" "));
        let mut c = Command::new(&cargo);
        c.current_dir(&root).args(args);
        c
    };
    run(
        &mut step(&["fmt", "--all", "--check"]),
        " (run `cargo fmt --all`)",
    )?;
    run(
        &mut step(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--release",
            "--",
            "-D",
            "warnings",
        ]),
        "",
    )?;
    crate::run::build_memtide()?;
    run(
        &mut step(&["test", "--workspace", "--release", "--", "--test-threads=1"]),
        "",
    )
}
