//! The svm lane's integration suite, across faults of the lane itself.
//!
//! Every test executable runs to completion once, inside L1. When L1
//! faults (its kernel crashes or it hangs: a fault of QEMU's SVM emulation,
//! `docs/lanes.md`), the executables that finished before the fault keep
//! their result, read from the marker lines the suite script prints on
//! L1's console, and the next run of L1 takes only the others. A fault
//! then costs the executable it interrupted, not the whole suite. Up to
//! [`LANE_RUNS`] runs in all; a fault on the last one fails the step, as
//! does any test failure in any run.

use std::path::{Path, PathBuf};

use super::{integration_test_executables, results_dir, run, shell_quote, LaneOpts, LANE};
use crate::error::XtaskError;
use crate::test::REFERENCE_FILE_VAR;

/// How many times L1 may boot for one suite: two L1 hangs in one CI run
/// were seen on 2026-12-02 (docs/lanes.md).
pub const LANE_RUNS: u32 = 3;

/// The marker before an executable that passed.
const PASSED: &str = "passed";
/// The marker before an executable that failed.
const FAILED: &str = "failed";

/// What the executables of one run of L1 did, as its console says.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Executables whose tests all passed.
    pub passed: Vec<PathBuf>,
    /// Executables with a failed test.
    pub failed: Vec<PathBuf>,
}

impl Outcomes {
    /// Reads the suite script's marker lines from L1's console.
    pub fn from_console(console: &str) -> Self {
        let mut o = Self::default();
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(path) = marker(line, PASSED) {
                o.passed.push(path);
            } else if let Some(path) = marker(line, FAILED) {
                o.failed.push(path);
            }
        }
        o
    }

    /// Whether `exe` finished, passed or failed.
    pub fn finished(&self, exe: &Path) -> bool {
        self.passed.iter().chain(&self.failed).any(|p| p == exe)
    }
}

/// The path after `[lane svm] <word> ` on a marker line.
fn marker(line: &str, word: &str) -> Option<PathBuf> {
    let rest = line.strip_prefix(&format!("[lane {LANE}] {word} "))?;
    (!rest.is_empty()).then(|| PathBuf::from(rest))
}

/// The shell script that runs `executables` inside L1 (one test thread, as
/// on the host), prints a marker line after each, and fails if any failed,
/// naming them. Every test runs in this lane, the two-guest ones included.
pub fn test_script(executables: &[PathBuf]) -> String {
    // One reference boot for every executable of this L1 boot (the file
    // is gone with L1, so a resumed suite measures it again).
    let mut s = format!("failed=''\nexport {REFERENCE_FILE_VAR}=/tmp/memtide-reference-boot-$$\n");
    for exe in executables {
        let q = shell_quote(&exe.display().to_string());
        s.push_str(&format!(
            "echo \"[lane {LANE}] running\" {q}\n\
             if {q} --test-threads=1; then echo \"[lane {LANE}] {PASSED}\" {q}; \
             else failed=\"$failed {q}\"; echo \"[lane {LANE}] {FAILED}\" {q}; fi\n"
        ));
    }
    s.push_str(&format!(
        "if [ -n \"$failed\" ]; then echo \"[lane {LANE}] FAILED:$failed\"; exit 1; fi\n\
         echo \"[lane {LANE}] all integration tests passed\"\n"
    ));
    s
}

/// Runs every integration test executable in the lane, across up to
/// [`LANE_RUNS`] boots of L1; `Ok` when all passed.
pub fn run_suite(opts: &LaneOpts) -> Result<(), XtaskError> {
    let all = integration_test_executables()?;
    let mut todo = all.clone();
    let mut failed: Vec<PathBuf> = Vec::new();
    for attempt in 1..=LANE_RUNS {
        let script = ["sh".to_string(), "-c".to_string(), test_script(&todo)];
        match run(&script, &todo, opts) {
            Ok(code) => {
                let last = Outcomes::from_console(&console_text());
                failed.extend(last.failed);
                if code != 0 && failed.is_empty() {
                    return Err(XtaskError::Lane(format!(
                        "lane {LANE}: the suite script exited with status {code}; consoles in {}",
                        results_dir().display()
                    )));
                }
                return if failed.is_empty() {
                    Ok(())
                } else {
                    Err(XtaskError::Lane(format!(
                        "lane {LANE}: integration tests failed in {}; consoles in {}",
                        names(&failed),
                        results_dir().display()
                    )))
                };
            }
            Err(XtaskError::LaneFault(why)) => {
                let done = Outcomes::from_console(&console_text());
                let kept = keep_fault_results(attempt);
                let ran = todo.len();
                failed.extend(done.failed.iter().cloned());
                todo.retain(|exe| !done.finished(exe));
                if attempt == LANE_RUNS {
                    return Err(XtaskError::LaneFault(why));
                }
                println!(
                    "[xtask] test: LANE FAULT, not a test failure: {why}\n\
                     [xtask] test: {} of the {} test executables of this run finished before it \
                     ({} failed); its consoles are in {kept}; running the other {} in L1 again \
                     ({} of {LANE_RUNS})",
                    ran - todo.len(),
                    ran,
                    done.failed.len(),
                    todo.len(),
                    attempt + 1
                );
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns on its last run")
}

/// L1's console of the last run (empty if there is none).
fn console_text() -> String {
    std::fs::read_to_string(results_dir().join("l1-console.log")).unwrap_or_default()
}

/// Moves the results of a faulted run aside, so that the next run does not
/// remove them; returns where they are now.
fn keep_fault_results(attempt: u32) -> String {
    let dir = results_dir();
    let kept = dir.with_file_name(format!("{LANE}-fault-{attempt}"));
    let _ = std::fs::remove_dir_all(&kept);
    match std::fs::rename(&dir, &kept) {
        Ok(()) => kept.display().to_string(),
        Err(_) => dir.display().to_string(),
    }
}

/// The executables' file names, for a message.
fn names(exes: &[PathBuf]) -> String {
    exes.iter()
        .map(|e| {
            e.file_name()
                .map_or_else(|| e.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_says_which_executables_finished() {
        let console = "\
[lane svm] running /t/deps/balloon-1\r\n\
running 4 tests\n\
[lane svm] passed /t/deps/balloon-1\r\n\
[lane svm] running /t/deps/boot-2\n\
guest says [lane svm] passed /not/a/marker\n\
[lane svm] failed /t/deps/boot-2\n\
[lane svm] running /t/deps/demo-3\n\
[lane svm] passed \n";
        let o = Outcomes::from_console(console);
        assert_eq!(o.passed, vec![PathBuf::from("/t/deps/balloon-1")]);
        assert_eq!(o.failed, vec![PathBuf::from("/t/deps/boot-2")]);
        assert!(o.finished(Path::new("/t/deps/boot-2")));
        assert!(!o.finished(Path::new("/t/deps/demo-3")));
    }

    #[test]
    fn the_script_marks_each_executable_and_fails_on_any_failure() {
        let s = test_script(&[PathBuf::from("/t/a b"), PathBuf::from("/t/c")]);
        assert!(s.contains(
            "if '/t/a b' --test-threads=1; then echo \"[lane svm] passed\" '/t/a b'; \
             else failed=\"$failed '/t/a b'\"; echo \"[lane svm] failed\" '/t/a b'; fi"
        ));
        assert!(s.contains("echo \"[lane svm] running\" /t/c\nif /t/c --test-threads=1"));
        assert!(s.ends_with("echo \"[lane svm] all integration tests passed\"\n"));
    }

    #[test]
    fn the_script_prints_markers_the_reader_understands() {
        let dir = std::env::temp_dir().join(format!("xtask-suite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let pass = dir.join("pass");
        let fail = dir.join("fail");
        std::fs::write(&pass, "#!/bin/sh\nexit 0\n").expect("write");
        std::fs::write(&fail, "#!/bin/sh\nexit 1\n").expect("write");
        for f in [&pass, &fail] {
            let mut p = std::fs::metadata(f).expect("meta").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
            std::fs::set_permissions(f, p).expect("chmod");
        }
        let out = std::process::Command::new("sh")
            .args(["-c", &test_script(&[pass.clone(), fail.clone()])])
            .output()
            .expect("sh");
        assert_eq!(out.status.code(), Some(1));
        let o = Outcomes::from_console(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(o.passed, vec![pass]);
        assert_eq!(o.failed, vec![fail]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
