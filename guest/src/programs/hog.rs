//! `memtide-hog`: a guest workload that commits and touches memory in
//! phases, for tests, benchmarks and the demo (one program of the
//! multi-call guest binary, see [`crate::programs`]).
//!
//! ```text
//! memtide-hog MIB[+PINNED]:END [MIB[+PINNED]:END ...]      END = SECONDS | line
//! ```
//!
//! Each phase resizes the process's committed memory to MIB MiB at once,
//! then touches the new pages, and holds it until SECONDS after the phase
//! began, or, for `line`, until a line arrives on stdin (the guest
//! console: a test writes it to memtide's stdin, so that a phase ends when
//! the test has seen what it waits for, not at a time fixed in advance).
//! After the last phase the process exits (and the kernel frees
//! everything). One line per phase goes to stdout:
//! `memtide-hog: phase N: holding M MiB for S s` (or `until a line on stdin`),
//! and a second once a phase that grew has touched its new memory:
//! `memtide-hog: phase N: touched all M MiB` (or, cut short by the phase's
//! end, `touched T MiB of the new memory in time`).
//!
//! `+PINNED` also holds PINNED MiB of unmovable kernel memory in the phase
//! (full pipes, see [`super::pinned`]), which Committed_AS does not count:
//! a virtio-mem unplug cannot take the blocks it lands in.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::committed::{Committed, MIB};

/// Bytes per page touched.
const PAGE: usize = 4096;

/// When a phase ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhaseEnd {
    /// This many seconds after it began.
    After(u64),
    /// When a line (or the end of input) arrives on stdin.
    Line,
}

/// One phase: hold `mib` MiB committed and `pinned` MiB of unmovable
/// kernel memory until `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    mib: usize,
    pinned: usize,
    end: PhaseEnd,
}

/// Parses `MIB[+PINNED]:SECONDS` or `MIB[+PINNED]:line`.
fn parse_phase(arg: &str) -> Option<Phase> {
    let (amount, end) = arg.split_once(':')?;
    let end = match end {
        "line" => PhaseEnd::Line,
        secs => PhaseEnd::After(secs.parse().ok()?),
    };
    let (mib, pinned) = match amount.split_once('+') {
        Some((mib, pinned)) => (mib, pinned.parse().ok()?),
        None => (amount, 0),
    };
    Some(Phase {
        mib: mib.parse().ok()?,
        pinned,
        end,
    })
}

/// Lines from stdin, read by a thread of their own, so that a phase that
/// ends on a line can stop touching its memory as soon as one arrives (on
/// a nested host touching runs at about 2 MiB/s: 290 MiB took minutes).
struct Lines(std::sync::mpsc::Receiver<()>);

impl Lines {
    /// Starts the reader thread; the end of input or a read error counts
    /// as a last line.
    fn start() -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            let mut line = String::new();
            loop {
                line.clear();
                let done = match stdin.read_line(&mut line) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => {
                        crate::err_line!("memtide-hog: reading stdin: {e}");
                        true
                    }
                };
                if tx.send(()).is_err() || done {
                    return;
                }
            }
        });
        Lines(rx)
    }

    /// Whether a line has arrived (consumes it).
    fn arrived(&self) -> bool {
        !matches!(self.0.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty))
    }

    /// Blocks until a line arrives (at once if the input has ended).
    fn wait(&self) {
        let _ = self.0.recv();
    }
}

/// Writes one byte in each page of `fresh` (memory just committed), a
/// MiB at a time, until `deadline` or `stop` says so (faulting pages in
/// can be slow: on a nested host about 2 MiB/s). Returns the MiB touched.
fn touch(fresh: Vec<&mut [u8]>, deadline: Instant, stop: &dyn Fn() -> bool) -> usize {
    let mut touched = 0;
    for chunk in fresh.into_iter().flat_map(|m| m.chunks_mut(MIB)) {
        if Instant::now() >= deadline || stop() {
            break;
        }
        for page in chunk.chunks_mut(PAGE) {
            page[0] = 1;
        }
        touched += 1;
    }
    touched
}

/// Runs the phases in `args` (the arguments after the program name).
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let phases: Option<Vec<Phase>> = args.map(|a| parse_phase(&a)).collect();
    let phases = match phases {
        Some(p) if !p.is_empty() => p,
        _ => {
            crate::err_line!(
                "usage: memtide-hog MIB[+PINNED]:END [MIB[+PINNED]:END ...]  (END = SECONDS or line)"
            );
            return ExitCode::from(2);
        }
    };
    let lines = phases
        .iter()
        .any(|p| p.end == PhaseEnd::Line)
        .then(Lines::start);
    let mut held = Committed::default();
    let mut pinned = super::pinned::Pinned::default();
    for (i, phase) in phases.iter().enumerate() {
        // Timed phases keep their length whatever the touching takes; a
        // phase that ends on a line stops touching when the line comes.
        let (end, until) = match phase.end {
            PhaseEnd::After(secs) => (
                Instant::now() + Duration::from_secs(secs),
                format!("for {secs} s"),
            ),
            PhaseEnd::Line => (
                Instant::now() + Duration::from_secs(u64::from(u32::MAX)),
                "until a line on stdin".to_string(),
            ),
        };
        let pins = if phase.pinned > 0 {
            format!(" (+{} MiB pinned)", phase.pinned)
        } else {
            String::new()
        };
        println!(
            "memtide-hog: phase {}: holding {} MiB{pins} {until}",
            i + 1,
            phase.mib
        );
        let line_came = std::cell::Cell::new(false);
        let stop = || {
            if phase.end == PhaseEnd::Line && lines.as_ref().is_some_and(Lines::arrived) {
                line_came.set(true);
            }
            line_came.get()
        };
        let before = held.mib();
        let touched = match held.resize(phase.mib) {
            Ok(fresh) => touch(fresh, end, &stop),
            Err(e) => {
                crate::err_line!("memtide-hog: phase {}: {e}", i + 1);
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = pinned.resize(phase.pinned) {
            crate::err_line!(
                "memtide-hog: phase {}: pinned {} of {} MiB: {e}",
                i + 1,
                pinned.mib(),
                phase.pinned
            );
            return ExitCode::FAILURE;
        }
        if touched + before.min(phase.mib) < phase.mib {
            println!(
                "memtide-hog: phase {}: touched {touched} MiB of the new memory in time",
                i + 1
            );
        } else if phase.mib > before {
            println!(
                "memtide-hog: phase {}: touched all {} MiB",
                i + 1,
                phase.mib
            );
        }
        match phase.end {
            PhaseEnd::After(_) => {
                std::thread::sleep(end.saturating_duration_since(Instant::now()));
            }
            PhaseEnd::Line if line_came.get() => {}
            PhaseEnd::Line => {
                if let Some(l) = &lines {
                    l.wait();
                }
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_phase("64:5"),
            Some(Phase {
                mib: 64,
                pinned: 0,
                end: PhaseEnd::After(5)
            })
        );
        assert_eq!(
            parse_phase("190:line"),
            Some(Phase {
                mib: 190,
                pinned: 0,
                end: PhaseEnd::Line
            })
        );
        assert_eq!(
            parse_phase("0+24:line"),
            Some(Phase {
                mib: 0,
                pinned: 24,
                end: PhaseEnd::Line
            })
        );
        for bad in [
            "64", "a:1", "1:b", ":", "-1:2", "1:Line", "1:line ", "1+:2", "+2:3", "1+x:2", "1+-1:2",
        ] {
            assert_eq!(parse_phase(bad), None, "{bad}");
        }
    }

    #[test]
    fn touching_stops_at_the_deadline_or_when_told() {
        let (mut a, mut b) = (vec![0u8; 2 * MIB], vec![0u8; MIB]);
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(touch(vec![&mut a, &mut b], later, &|| false), 3);
        assert!(a.chunks(PAGE).chain(b.chunks(PAGE)).all(|p| p[0] == 1));
        // Past the deadline, or told to stop (a line came): nothing.
        let mut fresh = vec![0u8; 2 * MIB];
        assert_eq!(touch(vec![&mut fresh], Instant::now(), &|| false), 0);
        assert_eq!(touch(vec![&mut fresh], later, &|| true), 0);
        assert!(fresh.iter().all(|&b| b == 0));
    }
}
