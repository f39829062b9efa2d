//! The guest's allocation-stall and OOM-kill counters (balloon statistics
//! tags 11 and 10) as a signal: a guest whose counters rose since the
//! last step while its balloon holds memory gets that memory back at once,
//! before the guest's deflate-on-OOM has to take it.
//!
//! The counters are cumulative since the guest booted and come from the
//! guest, so they are read as differences between reports, with two
//! guards: a counter that went back (a guest reboot, or a lie) starts a new
//! baseline and signals nothing, and a rise larger than any real guest
//! makes in one report interval ([`MAX_STALLS_PER_REPORT`],
//! [`MAX_OOM_KILLS_PER_REPORT`]) is ignored. Whatever the guest sends, the
//! response is bounded by the memory its balloon holds and the budget.

use crate::psi::with_pct;

/// Allocation stalls a guest can plausibly add between two reports (at
/// most a second apart): far more than the ~10^4/s a thrashing guest
/// reaches.
pub const MAX_STALLS_PER_REPORT: u64 = 1_000_000;

/// OOM kills a guest can plausibly add between two reports: each kill
/// waits for its victim to exit.
pub const MAX_OOM_KILLS_PER_REPORT: u64 = 10_000;

/// The guest's cumulative counters, from its latest balloon statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StallCounters {
    /// OOM killer invocations since boot (tag 10).
    pub oom_kills: u64,
    /// Allocations that stalled in direct reclaim since boot (tag 11).
    pub alloc_stalls: u64,
}

impl StallCounters {
    /// The counters from the two statistics, `None` when the guest sends
    /// neither (a kernel without `CONFIG_VM_EVENT_COUNTERS`); a missing one
    /// reads 0.
    pub fn from_stats(oom_kills: Option<u64>, alloc_stalls: Option<u64>) -> Option<Self> {
        if oom_kills.is_none() && alloc_stalls.is_none() {
            return None;
        }
        Some(Self {
            oom_kills: oom_kills.unwrap_or(0),
            alloc_stalls: alloc_stalls.unwrap_or(0),
        })
    }
}

/// New events since the last step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StallEvents {
    /// OOM kills.
    pub oom_kills: u64,
    /// Allocation stalls.
    pub alloc_stalls: u64,
}

impl StallEvents {
    /// Whether anything happened.
    pub fn any(&self) -> bool {
        self.oom_kills > 0 || self.alloc_stalls > 0
    }

    /// "2 OOM kills and 3 allocation stalls", for reasons.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.oom_kills > 0 {
            parts.push(plural(self.oom_kills, "OOM kill", "OOM kills"));
        }
        if self.alloc_stalls > 0 {
            parts.push(plural(
                self.alloc_stalls,
                "allocation stall",
                "allocation stalls",
            ));
        }
        parts.join(" and ")
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What one report's counters said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No counters, the first ones (a baseline), or no rise.
    Nothing,
    /// The counters rose.
    Rose(StallEvents),
    /// A counter went back (a reboot): a new baseline, no signal.
    Reset,
    /// A rise no guest makes in one report: ignored, a new baseline.
    Absurd(String),
}

/// One VM's counters across reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StallTracker {
    /// The counters of the last report that carried them.
    base: Option<StallCounters>,
    /// Events seen since the last [`StallTracker::take`].
    pending: StallEvents,
    /// A note about counters that were not believed, for the next reason.
    note: Option<String>,
}

impl StallTracker {
    /// Reads a report's counters (`None`: the report carried none).
    pub fn observe(&mut self, now: Option<StallCounters>) -> Observed {
        let Some(now) = now else {
            return Observed::Nothing;
        };
        let Some(base) = self.base.replace(now) else {
            return Observed::Nothing;
        };
        if now.oom_kills < base.oom_kills || now.alloc_stalls < base.alloc_stalls {
            self.note =
                Some("balloon stats counters went back (guest rebooted?): new baseline".into());
            return Observed::Reset;
        }
        let rose = StallEvents {
            oom_kills: now.oom_kills - base.oom_kills,
            alloc_stalls: now.alloc_stalls - base.alloc_stalls,
        };
        if rose.oom_kills > MAX_OOM_KILLS_PER_REPORT || rose.alloc_stalls > MAX_STALLS_PER_REPORT {
            let why = format!(
                "balloon stats ignored ({} in one report cannot be true)",
                rose.describe()
            );
            self.note = Some(why.clone());
            return Observed::Absurd(why);
        }
        if !rose.any() {
            return Observed::Nothing;
        }
        self.pending.oom_kills = self.pending.oom_kills.saturating_add(rose.oom_kills);
        self.pending.alloc_stalls = self.pending.alloc_stalls.saturating_add(rose.alloc_stalls);
        Observed::Rose(rose)
    }

    /// The events since the last call, and a note about counters not
    /// believed since then; both start again from nothing.
    pub fn take(&mut self) -> (StallEvents, Option<String>) {
        (std::mem::take(&mut self.pending), self.note.take())
    }
}

/// How much of its balloon a stalling guest gets back at once: all of it
/// after an OOM kill (the kill's memory is gone from its committed memory,
/// so no target can say how much it lacked), else `deflate_pct` of its
/// memory, at least `min_mib` (twice the hysteresis threshold), at most the
/// balloon.
pub fn deflate_mib(
    events: &StallEvents,
    assigned_mib: u64,
    balloon_mib: u64,
    deflate_pct: u64,
    min_mib: u64,
) -> u64 {
    if events.oom_kills > 0 {
        return balloon_mib;
    }
    with_pct(assigned_mib, deflate_pct)
        .saturating_sub(assigned_mib)
        .max(min_mib)
        .min(balloon_mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(oom: u64, stalls: u64) -> Option<StallCounters> {
        Some(StallCounters {
            oom_kills: oom,
            alloc_stalls: stalls,
        })
    }

    #[test]
    fn counters_need_at_least_one_statistic() {
        assert_eq!(StallCounters::from_stats(None, None), None);
        assert_eq!(StallCounters::from_stats(None, Some(3)), c(0, 3));
    }

    #[test]
    fn rises_are_events_and_accumulate_until_taken() {
        let mut t = StallTracker::default();
        assert_eq!(t.observe(c(1, 100)), Observed::Nothing, "baseline");
        assert_eq!(t.observe(None), Observed::Nothing);
        assert_eq!(t.observe(c(1, 100)), Observed::Nothing, "no rise");
        assert_eq!(
            t.observe(c(1, 103)),
            Observed::Rose(StallEvents {
                oom_kills: 0,
                alloc_stalls: 3
            })
        );
        assert!(matches!(t.observe(c(2, 104)), Observed::Rose(_)));
        let (ev, note) = t.take();
        assert_eq!(
            ev,
            StallEvents {
                oom_kills: 1,
                alloc_stalls: 4
            }
        );
        assert_eq!(note, None);
        assert_eq!(ev.describe(), "1 OOM kill and 4 allocation stalls");
        assert!(!t.take().0.any(), "taken");
    }

    #[test]
    fn a_reset_is_a_new_baseline_and_no_signal() {
        let mut t = StallTracker::default();
        t.observe(c(3, 500));
        assert_eq!(t.observe(c(0, 2)), Observed::Reset);
        let (ev, note) = t.take();
        assert!(!ev.any());
        assert!(note.is_some_and(|n| n.contains("went back")));
        // Counting resumes from the new baseline.
        assert!(matches!(t.observe(c(0, 5)), Observed::Rose(e) if e.alloc_stalls == 3));
    }

    #[test]
    fn absurd_rises_are_ignored_without_overflow() {
        let mut t = StallTracker::default();
        t.observe(c(0, 0));
        assert!(matches!(
            t.observe(c(u64::MAX, u64::MAX)),
            Observed::Absurd(_)
        ));
        assert!(!t.take().0.any());
        assert_eq!(t.observe(c(u64::MAX, u64::MAX)), Observed::Nothing);
        assert_eq!(t.observe(c(0, 0)), Observed::Reset);
    }

    #[test]
    fn deflate_is_a_share_of_memory_or_the_whole_balloon_after_an_oom_kill() {
        let stalls = StallEvents {
            oom_kills: 0,
            alloc_stalls: 3,
        };
        assert_eq!(deflate_mib(&stalls, 400, 200, 25, 32), 100);
        assert_eq!(
            deflate_mib(&stalls, 400, 60, 25, 32),
            60,
            "at most the balloon"
        );
        assert_eq!(deflate_mib(&stalls, 100, 200, 25, 32), 32, "at least min");
        assert_eq!(deflate_mib(&stalls, 400, 0, 25, 32), 0);
        let oom = StallEvents {
            oom_kills: 1,
            alloc_stalls: 0,
        };
        assert_eq!(deflate_mib(&oom, 400, 200, 25, 32), 200);
    }
}
