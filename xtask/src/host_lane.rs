//! The host lane of `cargo xtask test`: the integration test executables on
//! this machine's `/dev/kvm`, two at a time where that is safe.
//!
//! A guest on the nested CI host keeps one host core busy while the test
//! that booted it mostly waits, so on a 2-core host a single-guest test
//! leaves the other core idle. The executables whose tests boot one guest
//! at a time ([`PAIRABLE`]) therefore run in pairs; the others (several
//! guests at once) run by themselves, first, so that the suite's shared
//! reference boot (`MEMTIDE_TEST_REFERENCE_FILE`) is measured with nothing
//! beside it. Measured on "nested-intel-b" (docs/measurements.md, "Suite
//! time, host lane"): `hotplug` and `sandbox` side by side took 162 s and
//! 101 s, against 192 s and 126 s one after the other in the CI run before.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{io_at, XtaskError};

/// Test executables (by name) whose tests boot one guest at a time, in
/// the order they start, longest first (host-lane times of CI run 24,
/// 2026-12-03), so that the two slots end close together. Every other
/// executable (`balancer` and `demo` boot two guests at once, and a new
/// one is not known to be safe) runs alone.
pub const PAIRABLE: &[&str] = &[
    "balloon",
    "boot",
    "virtio_mem_balancer",
    "hotplug",
    "virtio_mem",
    "vsock_agent",
    "sandbox",
    "cli_errors",
    "emulation",
];

/// How many paired executables run at once.
const SLOTS: usize = 2;

/// The test's name of a cargo test executable: `deps/boot-1a2b3c` -> `boot`.
pub fn test_name(exe: &Path) -> String {
    let stem = exe
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if !hash.is_empty() && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// Which executables run alone (in the order given) and which in pairs
/// (longest first).
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Run one after another, nothing beside them, before the pairs.
    pub alone: Vec<PathBuf>,
    /// Run [`SLOTS`] at a time, in this order.
    pub paired: Vec<PathBuf>,
}

/// Splits `exes` into a [`Plan`].
pub fn plan(exes: &[PathBuf]) -> Plan {
    let rank = |e: &PathBuf| PAIRABLE.iter().position(|n| *n == test_name(e));
    let (mut paired, alone): (Vec<PathBuf>, Vec<PathBuf>) =
        exes.iter().cloned().partition(|e| rank(e).is_some());
    paired.sort_by_key(rank);
    Plan { alone, paired }
}

/// Runs every executable with one test thread and `env` set, and fails
/// naming each that failed. Output of paired runs goes to `logs/<name>.log`
/// and is printed whole when the run ends.
pub fn run(exes: &[PathBuf], env: &[(&str, &Path)], logs: &Path) -> Result<(), XtaskError> {
    std::fs::create_dir_all(logs).map_err(io_at(logs))?;
    let plan = plan(exes);
    let mut failed = Vec::new();
    for exe in &plan.alone {
        let name = test_name(exe);
        println!("[xtask] lane host: {name} (alone)");
        let start = Instant::now();
        let ok = command(exe, env)
            .status()
            .map_err(spawn_error(exe))?
            .success();
        report(&name, ok, start, &mut failed);
    }
    let queue = Mutex::new(plan.paired.into_iter().collect::<VecDeque<_>>());
    let done = Mutex::new((Vec::<String>::new(), None::<XtaskError>));
    std::thread::scope(|scope| {
        for _ in 0..SLOTS {
            scope.spawn(|| loop {
                let Some(exe) = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front() else {
                    return;
                };
                let name = test_name(&exe);
                println!("[xtask] lane host: {name} started (paired)");
                let start = Instant::now();
                let outcome = run_logged(&exe, env, &logs.join(format!("{name}.log")));
                let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok((ok, log)) => {
                        println!("[xtask] lane host: output of {name}:\n{log}");
                        report(&name, ok, start, &mut done.0);
                    }
                    Err(e) => {
                        done.0.push(name);
                        done.1.get_or_insert(e);
                    }
                }
            });
        }
    });
    let (paired_failed, error) = done.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = error {
        return Err(e);
    }
    failed.extend(paired_failed);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(XtaskError::TestsFailed(format!(
            "lane host (this machine's /dev/kvm): failed: {}",
            failed.join(", ")
        )))
    }
}

/// The command for one test executable.
fn command(exe: &Path, env: &[(&str, &Path)]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("--test-threads=1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The error for a test executable that could not be started.
fn spawn_error(exe: &Path) -> impl FnOnce(std::io::Error) -> XtaskError + '_ {
    move |source| XtaskError::Spawn {
        cmd: exe.display().to_string(),
        source,
    }
}

/// Runs `exe` with its output in `log`; returns whether it passed and the
/// log's text.
fn run_logged(exe: &Path, env: &[(&str, &Path)], log: &Path) -> Result<(bool, String), XtaskError> {
    let out = File::create(log).map_err(io_at(log))?;
    let err = out.try_clone().map_err(io_at(log))?;
    let ok = command(exe, env)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .status()
        .map_err(spawn_error(exe))?
        .success();
    let text = std::fs::read_to_string(log).map_err(io_at(log))?;
    Ok((ok, text))
}

/// Prints how a run ended and notes a failure.
fn report(name: &str, ok: bool, start: Instant, failed: &mut Vec<String>) {
    let secs = start.elapsed().as_secs();
    if ok {
        println!("[xtask] lane host: {name} passed in {secs} s");
    } else {
        println!("[xtask] lane host: {name} FAILED after {secs} s");
        failed.push(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exes(names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|n| PathBuf::from(format!("/t/deps/{n}-0123abcd")))
            .collect()
    }

    #[test]
    fn names_drop_cargos_hash_only() {
        assert_eq!(
            test_name(Path::new("/t/deps/boot-70323fb50a737a9c")),
            "boot"
        );
        assert_eq!(
            test_name(Path::new("/t/deps/virtio_mem_balancer-469e3150783224a5")),
            "virtio_mem_balancer"
        );
        assert_eq!(test_name(Path::new("/t/deps/cli-errors")), "cli-errors");
        assert_eq!(test_name(Path::new("/t/deps/plain")), "plain");
    }

    #[test]
    fn multi_guest_executables_run_alone_and_the_rest_longest_first() {
        let p = plan(&exes(&[
            "balancer",
            "balloon",
            "boot",
            "cli_errors",
            "demo",
            "emulation",
            "hotplug",
            "sandbox",
            "virtio_mem",
            "virtio_mem_balancer",
            "vsock_agent",
        ]));
        assert_eq!(p.alone, exes(&["balancer", "demo"]));
        // The input is in name order; the pairs come in PAIRABLE's order.
        assert_eq!(p.paired, exes(PAIRABLE));
    }

    #[test]
    fn an_unknown_executable_runs_alone_and_none_is_lost() {
        let p = plan(&exes(&["zzz_new", "sandbox", "balloon", "demo"]));
        assert_eq!(p.alone, exes(&["zzz_new", "demo"]));
        assert_eq!(p.paired, exes(&["balloon", "sandbox"]));
    }
}
