//! `memtide bench shrink`'s figures: what one run measured, the medians over
//! runs, the unplug / inflate speed ratio, the goals of issue 14, the
//! printed table and the rows for `memtide bench all` (pure logic).

use super::figure::Figure;
use super::stats::{median, min_max};

/// Unplug should be at least this many times faster than inflate.
pub const SPEED_GOAL: f64 = 10.0;
/// Host residency should fall by at least this share of the shrink.
pub const RESIDENCY_GOAL: f64 = 0.95;
/// MemTotal should fall by the unplugged amount; this share of it may be
/// missing (the guest frees or reserves a little memory meanwhile).
pub const MEMTOTAL_TOLERANCE: f64 = 0.02;

/// One shrink: its time and the guest's and host's view around it, MiB
/// (NaN where the guest sent no statistics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Seconds from the request to the guest reporting done.
    pub seconds: f64,
    /// Milliseconds of that in memtide's `madvise` calls giving the memory
    /// back to the host.
    pub host_ms: f64,
    /// Guest MemTotal before, MiB.
    pub total_before_mib: f64,
    /// Guest MemTotal after, MiB.
    pub total_after_mib: f64,
    /// Guest RAM resident on the host before, MiB.
    pub resident_before_mib: f64,
    /// Guest RAM resident on the host after, MiB.
    pub resident_after_mib: f64,
}

impl Step {
    /// How much MemTotal fell, MiB.
    pub fn total_drop_mib(&self) -> f64 {
        self.total_before_mib - self.total_after_mib
    }

    /// How much host residency fell, MiB.
    pub fn resident_drop_mib(&self) -> f64 {
        self.resident_before_mib - self.resident_after_mib
    }
}

/// One run: the same guest shrunk by virtio-mem unplug, then by balloon
/// inflate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run {
    /// virtio-mem unplug.
    pub unplug: Step,
    /// Balloon inflate.
    pub inflate: Step,
}

/// Medians of one mechanism's steps over the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Medians {
    /// Every run's time, ms (for the spread).
    pub ms: Vec<f64>,
    /// The field-wise medians (NaN where no run had the figure).
    pub step: Step,
    /// The median of the runs' MemTotal drops, MiB.
    pub total_drop_mib: f64,
    /// The median of the runs' residency drops, MiB.
    pub resident_drop_mib: f64,
}

impl Medians {
    /// The medians of `steps`; `None` when there are none.
    pub fn of(steps: &[Step]) -> Option<Self> {
        let med = |f: fn(&Step) -> f64| {
            median(&steps.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        let ms: Vec<f64> = steps.iter().map(|s| s.seconds * 1e3).collect();
        median(&ms)?;
        Some(Self {
            ms,
            step: Step {
                seconds: med(|s| s.seconds),
                host_ms: med(|s| s.host_ms),
                total_before_mib: med(|s| s.total_before_mib),
                total_after_mib: med(|s| s.total_after_mib),
                resident_before_mib: med(|s| s.resident_before_mib),
                resident_after_mib: med(|s| s.resident_after_mib),
            },
            total_drop_mib: med(Step::total_drop_mib),
            resident_drop_mib: med(Step::resident_drop_mib),
        })
    }

    /// MiB per second for `mib` in the median time.
    pub fn mib_per_s(&self, mib: u64) -> f64 {
        mib as f64 / self.step.seconds
    }
}

/// Whether each goal was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goals {
    /// Unplug at least [`SPEED_GOAL`] times faster than inflate.
    pub speed: bool,
    /// MemTotal smaller by the unplugged amount.
    pub mem_total: bool,
    /// Host residency smaller by at least [`RESIDENCY_GOAL`] of it.
    pub residency: bool,
}

/// The benchmark's result over all runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The shrink, MiB.
    pub mib: u64,
    /// virtio-mem unplug.
    pub unplug: Medians,
    /// Balloon inflate.
    pub inflate: Medians,
}

impl Summary {
    /// Medians of `runs`; `None` when there are none.
    pub fn of(mib: u64, runs: &[Run]) -> Option<Self> {
        let pick = |f: fn(&Run) -> Step| runs.iter().map(f).collect::<Vec<_>>();
        Some(Self {
            mib,
            unplug: Medians::of(&pick(|r| r.unplug))?,
            inflate: Medians::of(&pick(|r| r.inflate))?,
        })
    }

    /// How many times faster the unplug was than the inflate (ratio of the
    /// median times, the same MiB each).
    pub fn speed_ratio(&self) -> f64 {
        self.inflate.step.seconds / self.unplug.step.seconds
    }

    /// The share of the shrink that left the host with the unplug.
    pub fn unplug_residency_share(&self) -> f64 {
        self.unplug.resident_drop_mib / self.mib as f64
    }

    /// The goals, judged on the medians.
    pub fn goals(&self) -> Goals {
        let mib = self.mib as f64;
        Goals {
            speed: self.speed_ratio() >= SPEED_GOAL,
            mem_total: self.unplug.total_drop_mib >= mib * (1.0 - MEMTOTAL_TOLERANCE),
            residency: self.unplug_residency_share() >= RESIDENCY_GOAL,
        }
    }

    /// The report's table, in Markdown.
    pub fn table(&self) -> String {
        let mut out = format!(
            "| mechanism, {} MiB | request to done (median of {}) | of which host madvise | MiB/s | guest MemTotal before -> after | host resident before -> after |\n|---|---|---|---|---|---|\n",
            self.mib,
            self.unplug.ms.len()
        );
        for (name, m) in [
            ("virtio-mem unplug", &self.unplug),
            ("balloon inflate", &self.inflate),
        ] {
            let (lo, hi) = min_max(&m.ms).unwrap_or((f64::NAN, f64::NAN));
            let s = &m.step;
            out.push_str(&format!(
                "| {name} | {:.0} ms (min {lo:.0}, max {hi:.0}) | {:.1} ms | {:.1} | {:.0} -> {:.0} MiB ({:+.0}) | {:.0} -> {:.0} MiB ({:+.0}) |\n",
                s.seconds * 1e3,
                s.host_ms,
                m.mib_per_s(self.mib),
                s.total_before_mib,
                s.total_after_mib,
                fall(m.total_drop_mib),
                s.resident_before_mib,
                s.resident_after_mib,
                fall(m.resident_drop_mib),
            ));
        }
        out
    }

    /// One line per goal, saying whether it was met.
    pub fn goal_lines(&self) -> Vec<String> {
        let g = self.goals();
        vec![
            format!(
                "unplug vs inflate: {:.1}x faster (goal >= {SPEED_GOAL}x: {})",
                self.speed_ratio(),
                met(g.speed)
            ),
            format!(
                "guest MemTotal after the unplug: {:+.0} MiB of {} unplugged (goal: smaller by the unplugged amount: {})",
                fall(self.unplug.total_drop_mib),
                self.mib,
                met(g.mem_total)
            ),
            format!(
                "host residency after the unplug: {:+.0} MiB, {:.1} % of {} MiB (goal >= {:.0} %: {})",
                fall(self.unplug.resident_drop_mib),
                self.unplug_residency_share() * 100.0,
                self.mib,
                RESIDENCY_GOAL * 100.0,
                met(g.residency)
            ),
        ]
    }

    /// The rows for `memtide bench all`.
    pub fn figures(&self) -> Vec<Figure> {
        let mib = self.mib;
        let mut figures = Vec::new();
        for (what, m) in [
            (
                format!("virtio-mem unplug, {mib} MiB, request to plugged == requested"),
                &self.unplug,
            ),
            (
                format!("balloon inflate, {mib} MiB, request to actual == target"),
                &self.inflate,
            ),
        ] {
            if let Some(mut f) = Figure::of("shrink", &what, &m.ms, "ms", 0) {
                f.median = format!(
                    "{} ({:.1} MiB/s, host madvise {:.1} ms)",
                    f.median,
                    m.mib_per_s(mib),
                    m.step.host_ms
                );
                figures.push(f);
            }
        }
        let g = self.goals();
        let (u, i) = (&self.unplug.step, &self.inflate.step);
        figures.push(Figure::text(
            "shrink",
            &format!("unplug vs inflate speed, {mib} MiB"),
            format!("{:.1}x", self.speed_ratio()),
            format!("goal >= {SPEED_GOAL}x: {}", met(g.speed)),
        ));
        figures.push(Figure::text(
            "shrink",
            "guest MemTotal before -> after, unplug / inflate",
            format!(
                "{:.0} -> {:.0} / {:.0} -> {:.0} MiB",
                u.total_before_mib, u.total_after_mib, i.total_before_mib, i.total_after_mib
            ),
            format!(
                "unplug {:+.0} MiB of {mib}: {}",
                fall(self.unplug.total_drop_mib),
                met(g.mem_total)
            ),
        ));
        figures.push(Figure::text(
            "shrink",
            "host residency before -> after, unplug / inflate",
            format!(
                "{:.0} -> {:.0} / {:.0} -> {:.0} MiB",
                u.resident_before_mib,
                u.resident_after_mib,
                i.resident_before_mib,
                i.resident_after_mib
            ),
            format!(
                "unplug {:+.0} MiB = {:.1} % (goal >= {:.0} %): {}",
                fall(self.unplug.resident_drop_mib),
                self.unplug_residency_share() * 100.0,
                RESIDENCY_GOAL * 100.0,
                met(g.residency)
            ),
        ));
        figures
    }
}

/// A drop as a signed change (0, not -0, when nothing changed).
fn fall(drop: f64) -> f64 {
    if drop == 0.0 {
        0.0
    } else {
        -drop
    }
}

/// "met" or "NOT met".
fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(ms: f64, total: (f64, f64), resident: (f64, f64)) -> Step {
        Step {
            seconds: ms / 1e3,
            host_ms: ms / 10.0,
            total_before_mib: total.0,
            total_after_mib: total.1,
            resident_before_mib: resident.0,
            resident_after_mib: resident.1,
        }
    }

    fn run(unplug_ms: f64, inflate_ms: f64) -> Run {
        Run {
            unplug: step(unplug_ms, (370.0, 242.0), (384.0, 257.0)),
            inflate: step(inflate_ms, (242.0, 242.0), (257.0, 129.0)),
        }
    }

    #[test]
    fn medians_are_taken_per_field_and_the_ratio_of_the_median_times() {
        let runs = [
            run(900.0, 20_000.0),
            run(500.0, 18_000.0),
            run(700.0, 30_000.0),
        ];
        let s = Summary::of(128, &runs).expect("summary");
        assert_eq!(s.unplug.ms, vec![900.0, 500.0, 700.0]);
        assert!((s.unplug.step.seconds - 0.7).abs() < 1e-12);
        assert!((s.inflate.step.seconds - 20.0).abs() < 1e-12);
        assert!((s.speed_ratio() - 20.0 / 0.7).abs() < 1e-9);
        assert!((s.unplug.mib_per_s(128) - 128.0 / 0.7).abs() < 1e-9);
        assert_eq!(s.unplug.total_drop_mib, 128.0);
        assert_eq!(s.unplug.resident_drop_mib, 127.0);
        assert_eq!(s.inflate.total_drop_mib, 0.0);
        assert_eq!(
            s.goals(),
            Goals {
                speed: true,
                mem_total: true,
                residency: true
            }
        );
        assert!(Summary::of(128, &[]).is_none());
    }

    #[test]
    fn the_drops_are_medians_of_each_runs_drop() {
        // Field-wise medians would say 300 -> 200 (-100); the runs' own
        // drops are -50, -60, -100: median -60.
        let mut a = run(1.0, 10.0);
        a.unplug = step(1.0, (300.0, 250.0), (0.0, 0.0));
        let mut b = run(1.0, 10.0);
        b.unplug = step(1.0, (260.0, 200.0), (0.0, 0.0));
        let mut c = run(1.0, 10.0);
        c.unplug = step(1.0, (310.0, 210.0), (0.0, 0.0));
        let s = Summary::of(128, &[a, b, c]).expect("summary");
        assert_eq!(s.unplug.total_drop_mib, 60.0);
        assert_eq!(s.unplug.step.total_before_mib, 300.0);
    }

    #[test]
    fn each_goal_has_its_threshold() {
        // 9.9x is short of 10x.
        let s = Summary::of(128, &[run(1000.0, 9900.0)]).expect("summary");
        assert!(!s.goals().speed);
        let s = Summary::of(128, &[run(1000.0, 10_000.0)]).expect("summary");
        assert!(s.goals().speed);
        // MemTotal: 2 % may be missing, not more.
        let mut r = run(100.0, 10_000.0);
        r.unplug.total_after_mib = 370.0 - 125.5;
        assert!(Summary::of(128, &[r]).expect("s").goals().mem_total);
        r.unplug.total_after_mib = 370.0 - 125.0;
        assert!(!Summary::of(128, &[r]).expect("s").goals().mem_total);
        // Residency: 95 % of 128 MiB is 121.6 MiB.
        r.unplug.resident_after_mib = 384.0 - 121.6;
        assert!(Summary::of(128, &[r]).expect("s").goals().residency);
        r.unplug.resident_after_mib = 384.0 - 121.0;
        assert!(!Summary::of(128, &[r]).expect("s").goals().residency);
        // No statistics: MemTotal unknown, so not met.
        r.unplug.total_after_mib = f64::NAN;
        r.unplug.total_before_mib = f64::NAN;
        assert!(!Summary::of(128, &[r]).expect("s").goals().mem_total);
    }

    #[test]
    fn the_table_and_the_figures_say_it() {
        let s = Summary::of(128, &[run(640.0, 19_200.0)]).expect("summary");
        let t = s.table();
        assert!(
            t.contains("| virtio-mem unplug | 640 ms (min 640, max 640) | 64.0 ms | 200.0 | 370 -> 242 MiB (-128) | 384 -> 257 MiB (-127) |"),
            "{t}"
        );
        assert!(t.contains("| balloon inflate | 19200 ms"), "{t}");
        assert!(t.contains("242 -> 242 MiB (+0)"), "{t}");
        let lines = s.goal_lines();
        assert_eq!(
            lines[0],
            "unplug vs inflate: 30.0x faster (goal >= 10x: met)"
        );
        assert!(
            lines[2].contains("99.2 % of 128 MiB (goal >= 95 %: met)"),
            "{}",
            lines[2]
        );
        let f = s.figures();
        assert_eq!(f.len(), 5);
        assert_eq!(f[0].median, "640 ms (200.0 MiB/s, host madvise 64.0 ms)");
        assert_eq!(f[2].median, "30.0x");
        assert_eq!(f[3].median, "370 -> 242 / 242 -> 242 MiB");
        assert_eq!(f[4].median, "384 -> 257 / 257 -> 129 MiB");
    }
}
