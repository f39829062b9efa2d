//! `memtide-hog`: a guest workload that commits and touches memory in
//! phases, for tests, benchmarks and the demo.
//!
//! ```text
//! memtide-hog MIB:SECONDS [MIB:SECONDS ...]
//! ```
//!
//! Each phase resizes the process's committed, touched memory to MIB MiB
//! and holds it for SECONDS; after the last phase the process exits (and
//! the kernel frees everything). One line per phase goes to stdout:
//! `memtide-hog: phase N: holding M MiB for S s`.

use std::process::ExitCode;
use std::time::Duration;

/// Bytes per MiB.
const MIB: usize = 1 << 20;
/// Bytes per page touched.
const PAGE: usize = 4096;

/// One phase: hold `mib` MiB for `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    mib: usize,
    seconds: u64,
}

/// Parses `MIB:SECONDS`.
fn parse_phase(arg: &str) -> Option<Phase> {
    let (mib, seconds) = arg.split_once(':')?;
    Some(Phase {
        mib: mib.parse().ok()?,
        seconds: seconds.parse().ok()?,
    })
}

/// Memory held in 1 MiB chunks, so that shrinking returns whole chunks to
/// the kernel (each chunk is its own anonymous mapping in the allocator).
struct Held(Vec<Vec<u8>>);

impl Held {
    fn resize(&mut self, mib: usize) {
        self.0.truncate(mib);
        while self.0.len() < mib {
            let mut chunk = vec![0u8; MIB];
            // Write every page so the memory is resident, not only committed.
            for page in chunk.chunks_mut(PAGE) {
                page[0] = 1;
            }
            self.0.push(chunk);
        }
    }
}

fn main() -> ExitCode {
    let phases: Option<Vec<Phase>> = std::env::args().skip(1).map(|a| parse_phase(&a)).collect();
    let phases = match phases {
        Some(p) if !p.is_empty() => p,
        _ => {
            eprintln!("usage: memtide-hog MIB:SECONDS [MIB:SECONDS ...]");
            return ExitCode::from(2);
        }
    };
    let mut held = Held(Vec::new());
    for (i, phase) in phases.iter().enumerate() {
        held.resize(phase.mib);
        println!(
            "memtide-hog: phase {}: holding {} MiB for {} s",
            i + 1,
            phase.mib,
            phase.seconds
        );
        std::thread::sleep(Duration::from_secs(phase.seconds));
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
                seconds: 5
            })
        );
        for bad in ["64", "a:1", "1:b", ":", "-1:2"] {
            assert_eq!(parse_phase(bad), None, "{bad}");
        }
    }

    #[test]
    fn resizing_holds_whole_mebibytes() {
        let mut h = Held(Vec::new());
        h.resize(3);
        assert_eq!(h.0.len(), 3);
        assert!(h.0.iter().all(|c| c.len() == MIB && c[0] == 1));
        h.resize(1);
        assert_eq!(h.0.len(), 1);
    }
}
