//! One report from `/proc`: meminfo, memory pressure and uptime.

use memtide_agent_proto::{GuestReport, MemoryPressure};

use crate::meminfo::{self, MemInfo, MeminfoError};
use crate::proc_file::ProcFile;
use crate::psi::{self, PsiError};
use crate::uptime::{self, UptimeError};

/// Why no report could be built this tick.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// `/proc/meminfo` is unreadable or lacks a required field.
    #[error(transparent)]
    Meminfo(#[from] MeminfoError),
    /// `/proc/uptime` is unreadable (the report could not be dated).
    #[error(transparent)]
    Uptime(#[from] UptimeError),
}

impl SampleError {
    /// A short name for the kind of failure (for rate-limited logging).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Meminfo(_) => "meminfo",
            Self::Uptime(_) => "uptime",
        }
    }
}

/// A report, and why it lacks PSI if it does.
#[derive(Debug)]
pub struct Sample {
    /// The report.
    pub report: GuestReport,
    /// Why `/proc/pressure/memory` could not be read; the report then has
    /// no PSI.
    pub psi_error: Option<PsiError>,
}

/// `seconds` in whole ms.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "`as` saturates, and the uptime parser refuses NaN and negatives"
)]
fn whole_ms(seconds: f64) -> u64 {
    (seconds * 1000.0) as u64
}

/// Assembles a report from what was read. `uptime_s` is seconds since
/// boot (finite, not negative); it is kept in whole ms.
pub fn build(seq: u64, uptime_s: f64, mem: &MemInfo, psi: Option<MemoryPressure>) -> GuestReport {
    GuestReport {
        seq,
        uptime_ms: whole_ms(uptime_s),
        mem_total_kib: mem.mem_total_kib,
        mem_free_kib: mem.mem_free_kib,
        mem_available_kib: mem.mem_available_kib,
        committed_as_kib: mem.committed_as_kib,
        commit_limit_kib: mem.commit_limit_kib,
        swap_total_kib: mem.swap_total_kib,
        swap_free_kib: mem.swap_free_kib,
        psi,
    }
}

/// The `/proc` files a report comes from, kept open between reports (one
/// `pread` each per report, see [`ProcFile`]).
#[derive(Debug)]
pub struct Sampler {
    meminfo: ProcFile,
    psi: ProcFile,
    uptime: ProcFile,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            meminfo: ProcFile::new(meminfo::PATH),
            psi: ProcFile::new(psi::PATH),
            uptime: ProcFile::new(uptime::PATH),
        }
    }
}

impl Sampler {
    /// Reads `/proc` and builds report number `seq`. Meminfo and uptime
    /// are needed; PSI is optional.
    pub fn take(&mut self, seq: u64) -> Result<Sample, SampleError> {
        let mem = meminfo::parse(self.meminfo.read().map_err(MeminfoError::Read)?)?;
        let (psi, psi_error) = match self.psi.read().map_err(PsiError::Read) {
            Ok(text) => match psi::parse(text) {
                Ok(p) => (Some(p), None),
                Err(e) => (None, Some(e)),
            },
            Err(e) => (None, Some(e)),
        };
        let up = uptime::parse(self.uptime.read().map_err(UptimeError::Read)?)?;
        Ok(Sample {
            report: build(seq, up, &mem, psi),
            psi_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_parts() {
        let mem = MemInfo {
            mem_total_kib: 1,
            mem_free_kib: 2,
            mem_available_kib: 3,
            committed_as_kib: 4,
            commit_limit_kib: 5,
            swap_total_kib: 6,
            swap_free_kib: 7,
        };
        let r = build(9, 12.3456, &mem, None);
        assert_eq!((r.seq, r.uptime_ms), (9, 12_345));
        assert_eq!(
            [
                r.mem_total_kib,
                r.mem_free_kib,
                r.mem_available_kib,
                r.committed_as_kib,
                r.commit_limit_kib,
                r.swap_total_kib,
                r.swap_free_kib
            ],
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(r.psi, None);
        assert_eq!(build(0, f64::MAX, &mem, None).uptime_ms, u64::MAX);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            SampleError::from(MeminfoError::Missing("MemTotal")).kind(),
            "meminfo"
        );
        assert_eq!(
            SampleError::from(UptimeError::Parse(String::new())).kind(),
            "uptime"
        );
    }
}
