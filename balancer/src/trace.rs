//! A recorded balancer run: the VMs' settings, the budget and every tick,
//! as written to (and read back from) a JSON trace file by `memtide
//! balance --trace` and the demo. The invariant checks of
//! [`crate::invariants`] and the SVG plot both work from it.

use serde::{Deserialize, Serialize};

use crate::settings::VmSettings;
use crate::sim::Tick;

/// Trace format version, bumped on incompatible changes.
pub const TRACE_VERSION: u32 = 1;

/// One balancer run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// [`TRACE_VERSION`] of the writer.
    pub version: u32,
    /// The host memory budget, MiB.
    pub budget_mib: u64,
    /// The VMs' settings, in VM order.
    pub vms: Vec<VmSettings>,
    /// Every tick, oldest first.
    pub ticks: Vec<Tick>,
}

/// Errors reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Not a trace.
    #[error("not a memtide balancer trace: {0}")]
    Json(#[from] serde_json::Error),
    /// A trace from an incompatible writer.
    #[error("trace version {0} is not supported (this memtide reads version {TRACE_VERSION})")]
    Version(u32),
    /// A tick whose per-VM lists do not match the VMs.
    #[error("tick at {t_ms} ms has {got} entries for {vms} VMs")]
    Shape {
        /// The tick's time.
        t_ms: u64,
        /// Entries found.
        got: usize,
        /// VMs in the trace.
        vms: usize,
    },
}

impl Trace {
    /// The trace as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and checks a trace.
    pub fn from_json(text: &str) -> Result<Self, TraceError> {
        let t: Trace = serde_json::from_str(text)?;
        if t.version != TRACE_VERSION {
            return Err(TraceError::Version(t.version));
        }
        let n = t.vms.len();
        for tick in &t.ticks {
            let lens = [
                tick.assigned.len(),
                tick.plugged.len(),
                tick.balloon.len(),
                tick.committed.len(),
                tick.target.len(),
                tick.honest.len(),
                tick.reasons.len(),
            ];
            if let Some(&got) = lens.iter().find(|&&l| l != n) {
                return Err(TraceError::Shape {
                    t_ms: tick.t_ms,
                    got,
                    vms: n,
                });
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{settings_of, simulate, Curve, SimVm};
    use crate::PolicyConfig;

    fn trace() -> Trace {
        let vms = vec![
            SimVm::new(
                "a",
                512,
                256,
                1024,
                Curve::Step {
                    at_ms: 5_000,
                    before: 100,
                    after: 700,
                },
            ),
            SimVm::new("b", 512, 256, 1024, Curve::Idle),
        ];
        let ticks = simulate(PolicyConfig::default(), &vms, 1024, 500, 40).expect("sim");
        Trace {
            version: TRACE_VERSION,
            budget_mib: 1024,
            vms: settings_of(&vms),
            ticks,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let t = trace();
        assert_eq!(Trace::from_json(&t.to_json()).expect("parse"), t);
    }

    #[test]
    fn wrong_versions_and_shapes_are_refused() {
        let mut t = trace();
        t.version = 99;
        assert!(matches!(
            Trace::from_json(&t.to_json()),
            Err(TraceError::Version(99))
        ));
        let mut t = trace();
        t.ticks[3].assigned.pop();
        assert!(matches!(
            Trace::from_json(&t.to_json()),
            Err(TraceError::Shape { got: 1, vms: 2, .. })
        ));
        assert!(matches!(
            Trace::from_json("{\"nope\": 1}"),
            Err(TraceError::Json(_))
        ));
    }
}
