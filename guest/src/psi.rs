//! Parsing `/proc/pressure/memory` (pressure stall information).
//!
//! The kernel prints two lines:
//!
//! ```text
//! some avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! full avg10=0.00 avg60=0.00 avg300=0.00 total=0
//! ```
//!
//! The averages are percentages with two decimals, `total` is in µs. The
//! agent keeps `avg10` (in hundredths of a percent) and `total` of both
//! lines; both lines are required. Other lines and other keys are ignored.

use memtide_agent_proto::MemoryPressure;

/// Where the kernel publishes memory pressure (needs `CONFIG_PSI`).
pub const PATH: &str = "/proc/pressure/memory";

/// Why the memory pressure could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PsiError {
    /// The file could not be read (no `CONFIG_PSI`, or `psi=0`?).
    #[error("{PATH}: {0}")]
    Read(#[from] std::io::Error),
    /// The `some` or `full` line is missing.
    #[error("{PATH}: no {0} line")]
    Missing(&'static str),
    /// A `some` or `full` line lacks `avg10=` or `total=`, or has a bad
    /// number.
    #[error("{PATH}: bad line {0:?}")]
    BadLine(String),
}

/// `avg10` and `total` of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    avg10_centi: u32,
    total_us: u64,
}

/// A percentage with up to two decimals (`12.34`, `7`, `0.5`) in
/// hundredths of a percent; further decimals are cut off.
fn centi(text: &str) -> Option<u32> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac: String = frac.chars().chain("00".chars()).take(2).collect();
    int.parse::<u32>()
        .ok()?
        .checked_mul(100)?
        .checked_add(frac.parse().ok()?)
}

/// The `avg10` and `total` of a `some ...` or `full ...` line (the kind
/// already stripped).
fn line(fields: &str) -> Option<Line> {
    let mut avg10 = None;
    let mut total = None;
    for (key, value) in fields.split_whitespace().filter_map(|w| w.split_once('=')) {
        match key {
            "avg10" => avg10 = Some(centi(value)?),
            "total" => total = Some(value.parse().ok()?),
            _ => {}
        }
    }
    Some(Line {
        avg10_centi: avg10?,
        total_us: total?,
    })
}

/// Parses the text of `/proc/pressure/memory`.
pub fn parse(text: &str) -> Result<MemoryPressure, PsiError> {
    let mut some = None;
    let mut full = None;
    for l in text.lines() {
        let (slot, fields) = if let Some(f) = l.strip_prefix("some ") {
            (&mut some, f)
        } else if let Some(f) = l.strip_prefix("full ") {
            (&mut full, f)
        } else {
            continue;
        };
        *slot = Some(line(fields).ok_or_else(|| PsiError::BadLine(l.to_string()))?);
    }
    let some = some.ok_or(PsiError::Missing("some"))?;
    let full = full.ok_or(PsiError::Missing("full"))?;
    Ok(MemoryPressure {
        some_avg10_centi: some.avg10_centi,
        full_avg10_centi: full.avg10_centi,
        some_total_us: some.total_us,
        full_total_us: full.total_us,
    })
}

/// Reads and parses `/proc/pressure/memory`.
pub fn read() -> Result<MemoryPressure, PsiError> {
    parse(&std::fs::read_to_string(PATH)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_guest() {
        let text = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(
            parse(text).expect("valid"),
            MemoryPressure {
                some_avg10_centi: 0,
                full_avg10_centi: 0,
                some_total_us: 0,
                full_total_us: 0,
            }
        );
    }

    #[test]
    fn guest_under_pressure() {
        let text = "some avg10=37.42 avg60=12.01 avg300=3.10 total=18342977\n\
                    full avg10=100.00 avg60=8.50 avg300=2.00 total=9120044\n";
        assert_eq!(
            parse(text).expect("valid"),
            MemoryPressure {
                some_avg10_centi: 3742,
                full_avg10_centi: 10_000,
                some_total_us: 18_342_977,
                full_total_us: 9_120_044,
            }
        );
    }

    #[test]
    fn percentages() {
        assert_eq!(centi("0.00"), Some(0));
        assert_eq!(centi("12.34"), Some(1234));
        assert_eq!(centi("7"), Some(700));
        assert_eq!(centi("0.5"), Some(50));
        assert_eq!(centi("1.239"), Some(123));
        assert_eq!(centi("42949672.95"), Some(u32::MAX));
        for bad in ["", ".5", "1.x", "-1.00", "+1", "1.2.3", "42949673.00"] {
            assert_eq!(centi(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_and_bad_lines() {
        let some = "some avg10=1.00 avg60=0.00 avg300=0.00 total=5\n";
        let full = "full avg10=0.50 avg60=0.00 avg300=0.00 total=2\n";
        assert!(matches!(parse(some), Err(PsiError::Missing("full"))));
        assert!(matches!(parse(full), Err(PsiError::Missing("some"))));
        assert!(matches!(parse(""), Err(PsiError::Missing("some"))));
        let no_total = format!("some avg10=1.00 avg60=0.00\n{full}");
        assert!(matches!(parse(&no_total), Err(PsiError::BadLine(_))));
        let bad_avg = format!("{some}full avg10=abc total=2\n");
        assert!(matches!(parse(&bad_avg), Err(PsiError::BadLine(_))));
        // Other lines and keys are ignored; the order does not matter.
        let text = format!("# comment\n{full}some extra=1 avg10=1.00 total=5\n");
        let p = parse(&text).expect("valid");
        assert_eq!((p.some_avg10_centi, p.full_avg10_centi), (100, 50));
    }
}
