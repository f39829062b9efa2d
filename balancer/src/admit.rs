//! Admission: can a new VM start under the budget while every running VM
//! keeps at least its minimum, and with how much memory?
//!
//! The room for a newcomer is the budget minus every running VM's
//! minimum: the balancer can take any running VM down to its minimum, so
//! that much can be made free. A VM boots with its startup memory if it
//! fits in the room; with less (the whole room, rounded down to whole
//! MiB) if only its minimum fits; not at all otherwise. The answer also
//! says how much is free now and how much the balancer would first have
//! to reclaim from the others.

/// A running VM as admission sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// Its name, for the reason.
    pub name: String,
    /// Memory it has now, MiB.
    pub assigned_mib: u64,
    /// Memory it must keep, MiB.
    pub minimum_mib: u64,
}

/// The VM that asks to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Memory it boots with, MiB.
    pub startup_mib: u64,
    /// Least memory it may run with, MiB.
    pub minimum_mib: u64,
    /// Most memory it may reach, MiB.
    pub maximum_mib: u64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Whether it can start now.
    pub admit: bool,
    /// Memory it can start with, MiB (0 when refused).
    pub memory_mib: u64,
    /// Budget not assigned to any VM now, MiB.
    pub free_now_mib: u64,
    /// Memory the balancer must first take from running VMs, MiB.
    pub reclaim_mib: u64,
    /// Why, in words.
    pub reason: String,
}

/// A candidate whose bounds make no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// minimum ≤ startup ≤ maximum does not hold, or minimum is 0.
    #[error("need 0 < minimum ({minimum}) <= startup ({startup}) <= maximum ({maximum}) MiB")]
    Bounds {
        /// Minimum, MiB.
        minimum: u64,
        /// Startup, MiB.
        startup: u64,
        /// Maximum, MiB.
        maximum: u64,
    },
}

/// Answers whether `c` can start under `budget_mib` next to `running`.
pub fn admit(budget_mib: u64, running: &[Running], c: &Candidate) -> Result<Admission, AdmitError> {
    if c.minimum_mib == 0 || c.minimum_mib > c.startup_mib || c.startup_mib > c.maximum_mib {
        return Err(AdmitError::Bounds {
            minimum: c.minimum_mib,
            startup: c.startup_mib,
            maximum: c.maximum_mib,
        });
    }
    let minimums = running
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.minimum_mib));
    let assigned = running
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.assigned_mib));
    let room = budget_mib.saturating_sub(minimums);
    let free_now = budget_mib.saturating_sub(assigned);
    let memory = if c.startup_mib <= room {
        c.startup_mib
    } else if c.minimum_mib <= room {
        room
    } else {
        return Ok(Admission {
            admit: false,
            memory_mib: 0,
            free_now_mib: free_now,
            reclaim_mib: 0,
            reason: format!(
                "refused: needs at least {} MiB, but only {room} MiB of the {budget_mib} MiB budget \
                 is left with the {} running VMs at their minimums ({minimums} MiB)",
                c.minimum_mib,
                running.len()
            ),
        });
    };
    let reclaim = memory.saturating_sub(free_now);
    let how = if reclaim == 0 {
        format!("{free_now} MiB are free now")
    } else {
        let donors: Vec<&str> = running
            .iter()
            .filter(|r| r.assigned_mib > r.minimum_mib)
            .map(|r| r.name.as_str())
            .collect();
        format!(
            "{free_now} MiB are free now; {reclaim} MiB must first be taken from {}",
            donors.join(", ")
        )
    };
    let size = if memory == c.startup_mib {
        format!("its startup {memory} MiB")
    } else {
        format!(
            "{memory} MiB, less than its startup {} MiB but at least its minimum {} MiB",
            c.startup_mib, c.minimum_mib
        )
    };
    Ok(Admission {
        admit: true,
        memory_mib: memory,
        free_now_mib: free_now,
        reclaim_mib: reclaim,
        reason: format!("admitted with {size}: {how}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, assigned: u64, minimum: u64) -> Running {
        Running {
            name: name.into(),
            assigned_mib: assigned,
            minimum_mib: minimum,
        }
    }

    fn cand(startup: u64, minimum: u64, maximum: u64) -> Candidate {
        Candidate {
            startup_mib: startup,
            minimum_mib: minimum,
            maximum_mib: maximum,
        }
    }

    #[test]
    fn free_memory_admits_at_startup_without_reclaim() {
        let a = admit(1024, &[vm("a", 512, 256)], &cand(256, 128, 512)).expect("valid");
        assert_eq!(
            (a.admit, a.memory_mib, a.free_now_mib, a.reclaim_mib),
            (true, 256, 512, 0)
        );
    }

    #[test]
    fn reclaim_from_running_vms_down_to_their_minimums() {
        let running = [vm("a", 512, 256), vm("b", 512, 128)];
        let a = admit(1024, &running, &cand(384, 128, 512)).expect("valid");
        assert_eq!((a.admit, a.memory_mib, a.reclaim_mib), (true, 384, 384));
        assert!(a.reason.contains("a, b"), "{}", a.reason);
        // Room is 1024 - 384 = 640: startup 700 does not fit, minimum does.
        let a = admit(1024, &running, &cand(700, 256, 1024)).expect("valid");
        assert_eq!((a.admit, a.memory_mib), (true, 640));
        assert!(a.reason.contains("less than its startup"), "{}", a.reason);
    }

    #[test]
    fn refused_when_the_minimum_does_not_fit() {
        let running = [vm("a", 512, 512), vm("b", 384, 384)];
        let a = admit(1024, &running, &cand(256, 192, 256)).expect("valid");
        assert!(!a.admit && a.memory_mib == 0, "{a:?}");
        assert!(a.reason.contains("only 128 MiB"), "{}", a.reason);
    }

    #[test]
    fn an_empty_host_and_absurd_numbers() {
        assert!(admit(256, &[], &cand(256, 128, 256)).expect("valid").admit);
        assert!(matches!(
            admit(256, &[], &cand(256, 300, 512)),
            Err(AdmitError::Bounds { .. })
        ));
        assert!(admit(256, &[], &cand(0, 0, 0)).is_err());
        let huge = [vm("a", u64::MAX, u64::MAX), vm("b", u64::MAX, u64::MAX)];
        assert!(
            !admit(1024, &huge, &cand(128, 64, 128))
                .expect("valid")
                .admit
        );
    }
}
