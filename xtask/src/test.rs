//! `cargo xtask test`: the project's whole check, as CI runs it.

use std::process::Command;

use crate::error::XtaskError;
use crate::host_lane;
use crate::lane;
use crate::paths::workspace_root;
use crate::process::run;
use crate::Lanes;

/// The variable through which one lane's test binaries share one
/// reference boot (`memtide_test_support::REFERENCE_FILE_VAR`, the same
/// name; xtask does not depend on the test crate).
pub const REFERENCE_FILE_VAR: &str = "MEMTIDE_TEST_REFERENCE_FILE";

/// Format check, clippy, every unit test, then the integration tests in
/// `lanes` (release build, so guests boot with an optimized VMM; one test
/// thread per executable; in the host lane two single-guest executables at
/// a time, [`host_lane`]).
pub fn run_all(lanes: Lanes) -> Result<(), XtaskError> {
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
    let mut unit = step(&[
        "test",
        "--workspace",
        "--release",
        "--exclude",
        "memtide-tests",
    ]);
    run(unit.args(["--", "--test-threads=1"]), "")?;
    if lanes != Lanes::Svm {
        println!(
            "[xtask] test: integration tests, lane host ({})",
            host_kvm()
        );
        println!("[xtask] test: building the integration tests");
        let exes = lane::integration_test_executables()?;
        // A fresh file per run: the first test executable measures the
        // reference boot, the others read it.
        let target = root.join("target");
        let reference = target.join(format!(
            "memtide-reference-boot-host-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&reference);
        let done = host_lane::run(
            &exes,
            &[(REFERENCE_FILE_VAR, &reference)],
            &target.join("test-logs").join("host"),
        );
        let _ = std::fs::remove_file(&reference);
        done?;
    }
    if lanes != Lanes::Host {
        println!("[xtask] test: integration tests, lane svm (kvm_amd inside QEMU TCG)");
        lane::suite::run_suite(&lane::LaneOpts::default())?;
    }
    Ok(())
}

/// What this machine's /dev/kvm is, for the lane's heading.
fn host_kvm() -> &'static str {
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        "nested kvm_pvm"
    } else {
        "hardware KVM"
    }
}
