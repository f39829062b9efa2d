//! `memtide sim`: memtide's policy against oVirt MoM, a Hyper-V-like
//! policy and static VMs on the same simulated traces
//! (`memtide_balancer::compare`), as markdown.

use memtide_balancer::baselines::PolicyKind;
use memtide_balancer::compare::{compare, markdown};
use memtide_balancer::trace::Trace;
use memtide_balancer::workloads;
use memtide_balancer::SettingsError;

/// Why `memtide sim` cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No such policy.
    #[error("unknown policy {0:?} (memtide, memtide-idle, mom, hyperv-like, static or all)")]
    Policy(String),
    /// No such trace.
    #[error("unknown trace {name:?} ({} or all)", .known.join(", "))]
    Trace {
        /// The name given.
        name: String,
        /// The traces there are.
        known: Vec<&'static str>,
    },
    /// A trace's VM settings are invalid (a bug in the trace).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The recorded trace cannot be read.
    #[error("{path}: {source}")]
    ReadRecorded {
        /// Its path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The recorded trace is not a balancer trace.
    #[error("{path}: {source}")]
    Recorded {
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        source: memtide_balancer::trace::TraceError,
    },
}

/// The table for `policy` and `trace` (each a name or `all`), or for the
/// run recorded at `recorded`.
pub fn run(
    policy: &str,
    trace: &str,
    recorded: Option<&std::path::Path>,
) -> Result<String, SimError> {
    let kinds = if policy == "all" {
        PolicyKind::ALL.to_vec()
    } else {
        vec![PolicyKind::from_name(policy).ok_or_else(|| SimError::Policy(policy.to_string()))?]
    };
    let traces = if let Some(path) = recorded {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadRecorded {
            path: path.to_path_buf(),
            source,
        })?;
        let t = Trace::from_json(&text).map_err(|source| SimError::Recorded {
            path: path.to_path_buf(),
            source,
        })?;
        vec![workloads::recorded(
            "recorded",
            "replayed from a recorded run",
            &t,
        )]
    } else if trace == "all" {
        workloads::all()
    } else {
        vec![workloads::by_name(trace).ok_or_else(|| SimError::Trace {
            name: trace.to_string(),
            known: workloads::names(),
        })?]
    };
    let comparisons = traces
        .iter()
        .map(|w| compare(&kinds, w))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(markdown(&comparisons))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_policy_one_trace_and_unknown_names() {
        let out = run("mom", "step", None).expect("runs");
        assert!(out.contains("### step") && out.contains("| mom |"), "{out}");
        assert!(!out.contains("| memtide |"));
        assert!(matches!(run("esx", "all", None), Err(SimError::Policy(_))));
        let e = run("all", "nope", None).expect_err("unknown trace");
        assert!(e.to_string().contains("out-of-phase"), "{e}");
    }

    #[test]
    fn all_against_all_has_the_goals() {
        let out = run("all", "all", None).expect("runs");
        assert_eq!(
            out.matches("memtide vs MoM").count(),
            workloads::all().len()
        );
    }
}
