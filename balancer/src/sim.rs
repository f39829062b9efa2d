//! A trace-driven simulator: synthetic demand curves drive guests whose
//! reports feed the balancer every tick; the timeline it records is checked
//! against the policy's invariants.

use crate::policy::{Balancer, PolicyConfig};
use crate::report::Report;
use crate::settings::{SettingsError, VmSettings};

/// Idle demand used by [`Curve::Idle`], MiB.
pub const IDLE_MIB: u64 = 64;

/// Committed memory over time, MiB.
#[derive(Debug, Clone, PartialEq)]
pub enum Curve {
    /// Always the same.
    Constant(u64),
    /// An idle guest: [`IDLE_MIB`].
    Idle,
    /// `base + amplitude x sin(2 pi t / period_ms)`.
    Sine {
        /// Middle value.
        base: u64,
        /// Swing either side (at most `base`).
        amplitude: u64,
        /// Period.
        period_ms: u64,
    },
    /// `before` until `at_ms`, then `after`.
    Step {
        /// When it changes.
        at_ms: u64,
        /// Before.
        before: u64,
        /// After.
        after: u64,
    },
    /// Linear from `from` to `to` over `over_ms`, then flat.
    Ramp {
        /// Start.
        from: u64,
        /// End.
        to: u64,
        /// Duration.
        over_ms: u64,
    },
    /// `peak` during the last `for_ms` of every `every_ms`, `base` the
    /// rest of the time (the first burst starts at `every_ms - for_ms`).
    Burst {
        /// Between bursts.
        base: u64,
        /// During a burst.
        peak: u64,
        /// Period.
        every_ms: u64,
        /// Length of a burst.
        for_ms: u64,
    },
    /// `inner` ahead by `by_ms`: its value at `t + by_ms`.
    Shifted {
        /// How far ahead.
        by_ms: u64,
        /// The curve.
        inner: Box<Curve>,
    },
    /// A recorded series: (ms, MiB) points in time order; the value at
    /// `t` is that of the last point at or before `t` (the first before it).
    Recorded(Vec<(u64, u64)>),
    /// `base` plus deterministic noise of up to ±`pct` percent.
    Noisy {
        /// The underlying curve value.
        base: u64,
        /// Noise amplitude, percent.
        pct: u64,
        /// Seed of the noise.
        seed: u64,
    },
}

/// `x` rounded to whole MiB.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a float-to-int `as` saturates (negative and NaN to 0), the clamp a demand curve wants"
)]
pub(crate) fn round_mib(x: f64) -> u64 {
    x.round() as u64
}

impl Curve {
    /// When the curve stops changing, if it does (ms).
    pub fn settles_at_ms(&self) -> Option<u64> {
        if let Curve::Shifted { by_ms, inner } = self {
            return inner.settles_at_ms().map(|s| s.saturating_sub(*by_ms));
        }
        if let Curve::Recorded(points) = self {
            return Some(points.last().map_or(0, |p| p.0));
        }
        match *self {
            Curve::Constant(_) | Curve::Idle => Some(0),
            Curve::Step { at_ms, .. } => Some(at_ms),
            Curve::Ramp { over_ms, .. } => Some(over_ms),
            Curve::Sine { amplitude: 0, .. } | Curve::Noisy { pct: 0, .. } => Some(0),
            Curve::Burst { base, peak, .. } if base == peak => Some(0),
            Curve::Sine { .. }
            | Curve::Noisy { .. }
            | Curve::Burst { .. }
            | Curve::Shifted { .. } => None,
            // Handled above.
            Curve::Recorded(_) => Some(0),
        }
    }

    /// The value at `t_ms`.
    pub fn at(&self, t_ms: u64) -> u64 {
        if let Curve::Shifted { by_ms, inner } = self {
            return inner.at(t_ms.saturating_add(*by_ms));
        }
        if let Curve::Recorded(points) = self {
            let after = points.partition_point(|p| p.0 <= t_ms);
            return points.get(after.saturating_sub(1)).map_or(0, |p| p.1);
        }
        match *self {
            Curve::Constant(v) => v,
            Curve::Idle => IDLE_MIB,
            Curve::Sine {
                base,
                amplitude,
                period_ms,
            } => {
                let phase = (t_ms % period_ms.max(1)) as f64 / period_ms.max(1) as f64;
                let swing = amplitude.min(base) as f64 * (phase * std::f64::consts::TAU).sin();
                round_mib(base as f64 + swing)
            }
            Curve::Step {
                at_ms,
                before,
                after,
            } => {
                if t_ms < at_ms {
                    before
                } else {
                    after
                }
            }
            Curve::Ramp { from, to, over_ms } => {
                let f = t_ms.min(over_ms) as f64 / over_ms.max(1) as f64;
                round_mib(from as f64 + (to as f64 - from as f64) * f)
            }
            Curve::Burst {
                base,
                peak,
                every_ms,
                for_ms,
            } => {
                if t_ms % every_ms.max(1) >= every_ms.saturating_sub(for_ms) {
                    peak
                } else {
                    base
                }
            }
            // Handled above (it needs the boxed curve by reference).
            Curve::Shifted { .. } => 0,
            // Handled above.
            Curve::Recorded(_) => 0,
            Curve::Noisy { base, pct, seed } => {
                let mut x = seed ^ t_ms.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                x ^= x >> 33;
                x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
                x ^= x >> 33;
                let span = base * pct / 100;
                if span == 0 {
                    return base;
                }
                base - span + x % (2 * span + 1)
            }
        }
    }
}

/// How a simulated guest agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// Reports committed = the demand curve and visible = assigned.
    Honest,
    /// Stops reporting from this time on (ms).
    SilentFrom(u64),
    /// From this time on (ms), reports committed memory of 100x maximum.
    AbsurdFrom(u64),
}

impl Agent {
    /// Whether the agent reports the truth at `t_ms`.
    pub fn honest_at(&self, t_ms: u64) -> bool {
        match *self {
            Agent::Honest => true,
            Agent::SilentFrom(s) | Agent::AbsurdFrom(s) => t_ms < s,
        }
    }
}

/// Memory a simulated guest cannot unplug for a while (unmovable pages in
/// its virtio-mem blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    /// An unplug leaves at least this much plugged (MiB) ...
    pub mib: u64,
    /// ... until this time (ms); after it, blocks free up.
    pub until_ms: u64,
}

/// One simulated VM.
#[derive(Debug, Clone)]
pub struct SimVm {
    /// Its settings.
    pub settings: VmSettings,
    /// Its committed memory over time.
    pub demand: Curve,
    /// Its agent.
    pub agent: Agent,
    /// virtio-mem memory its guest cannot unplug, if any.
    pub pinned: Option<Pinned>,
}

impl SimVm {
    /// An honest VM with default buffer and weight.
    pub fn new(name: &str, startup: u64, min: u64, max: u64, demand: Curve) -> Self {
        Self {
            settings: VmSettings::new(name, startup, min, max),
            demand,
            agent: Agent::Honest,
            pinned: None,
        }
    }
}

/// The settings of `vms`, in order (what the invariant checks need).
pub fn settings_of(vms: &[SimVm]) -> Vec<VmSettings> {
    vms.iter().map(|v| v.settings.clone()).collect()
}

/// The state of every VM after one tick.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tick {
    /// Time, ms.
    pub t_ms: u64,
    /// Memory the guest may use, per VM.
    pub assigned: Vec<u64>,
    /// Plugged memory, per VM.
    pub plugged: Vec<u64>,
    /// Balloon size, per VM.
    pub balloon: Vec<u64>,
    /// virtio-mem: the requested size the balancer counts as assigned,
    /// per VM (empty in traces from before virtio-mem: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vmem: Vec<u64>,
    /// virtio-mem: what the device had plugged, per VM (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vmem_plugged: Vec<u64>,
    /// Committed memory (the demand curve), per VM.
    pub committed: Vec<u64>,
    /// The target the balancer used (committed + buffer within minimum
    /// and the reachable maximum), per VM; the VM's size if its report
    /// was not used.
    pub target: Vec<u64>,
    /// Whether the VM's agent told the truth this tick, per VM.
    pub honest: Vec<bool>,
    /// How far the VMs were over budget after the step, MiB.
    pub over_budget_mib: u64,
    /// The decisions' reasons, per VM.
    pub reasons: Vec<String>,
}

/// Runs `ticks` steps of `tick_ms` with `budget_mib`.
pub fn simulate(
    cfg: PolicyConfig,
    vms: &[SimVm],
    budget_mib: u64,
    tick_ms: u64,
    ticks: u64,
) -> Result<Vec<Tick>, SettingsError> {
    let mut b = Balancer::new(cfg, vms.iter().map(|v| v.settings.clone()).collect())?;
    let mut out = Vec::new();
    let any_vmem = vms.iter().any(|v| v.settings.virtio_mem.is_some());
    // Each guest's virtio-mem device: (requested, plugged), MiB.
    let mut dev = vec![(0u64, 0u64); vms.len()];
    for k in 0..ticks {
        let t = k * tick_ms;
        for (i, v) in vms.iter().enumerate() {
            if v.settings.virtio_mem.is_some() {
                b.observe_virtio_mem(i, dev[i].0, dev[i].1, t);
            }
        }
        let mut reports = Vec::new();
        for (i, v) in vms.iter().enumerate() {
            let visible = b.state(i).map_or(0, |s| s.assigned_mib());
            let committed = match v.agent {
                Agent::SilentFrom(s) if t >= s => continue,
                Agent::AbsurdFrom(s) if t >= s => v.settings.maximum_mib.saturating_mul(100),
                _ => v.demand.at(t),
            };
            reports.push((i, Report::at(committed, visible, t)));
        }
        let decisions = b.step(&reports, budget_mib, t);
        for d in &decisions {
            if let (Some(v), Some(g)) = (vms.get(d.vm), dev.get_mut(d.vm)) {
                for a in &d.actions {
                    guest_device_follows(g, a, v, t);
                }
            }
        }
        let states: Vec<_> = (0..vms.len()).filter_map(|i| b.state(i)).collect();
        out.push(Tick {
            t_ms: t,
            assigned: states.iter().map(|s| s.assigned_mib()).collect(),
            plugged: states.iter().map(|s| s.plugged_mib).collect(),
            balloon: states.iter().map(|s| s.balloon_mib).collect(),
            vmem: if any_vmem {
                states.iter().map(|s| s.vmem_requested_mib).collect()
            } else {
                Vec::new()
            },
            vmem_plugged: if any_vmem {
                dev.iter().map(|d| d.1).collect()
            } else {
                Vec::new()
            },
            committed: vms.iter().map(|v| v.demand.at(t)).collect(),
            target: decisions.iter().map(|d| d.target_mib).collect(),
            honest: vms.iter().map(|v| v.agent.honest_at(t)).collect(),
            over_budget_mib: decisions.first().map_or(0, |d| d.over_budget_mib),
            reasons: decisions.into_iter().map(|d| d.reason).collect(),
        });
    }
    Ok(out)
}

/// VM `vm`'s simulated virtio-mem driver acting on `action` at `t_ms`:
/// plugs at once; unplugs at once, but not below the whole blocks that
/// hold pinned memory.
fn guest_device_follows(
    dev: &mut (u64, u64),
    action: &crate::action::Action,
    vm: &SimVm,
    t_ms: u64,
) {
    use crate::action::Action;
    let Some(settings) = vm.settings.virtio_mem else {
        return;
    };
    match *action {
        Action::Plug { to_requested_mib } => *dev = (to_requested_mib, to_requested_mib),
        Action::Unplug { to_requested_mib } => {
            let stuck = vm
                .pinned
                .filter(|p| t_ms < p.until_ms)
                .map_or(0, |p| settings.ceil_blocks(p.mib).min(dev.1));
            *dev = (to_requested_mib, to_requested_mib.max(stuck));
        }
        Action::KeepPlugged { to_requested_mib } => dev.0 = to_requested_mib,
        Action::Deflate { .. } | Action::Inflate { .. } | Action::HotAdd { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves() {
        assert_eq!(Curve::Idle.at(5), IDLE_MIB);
        let step = Curve::Step {
            at_ms: 10,
            before: 1,
            after: 2,
        };
        assert_eq!((step.at(9), step.at(10)), (1, 2));
        let ramp = Curve::Ramp {
            from: 100,
            to: 200,
            over_ms: 100,
        };
        assert_eq!((ramp.at(0), ramp.at(50), ramp.at(500)), (100, 150, 200));
        let sine = Curve::Sine {
            base: 100,
            amplitude: 50,
            period_ms: 400,
        };
        assert_eq!((sine.at(0), sine.at(100), sine.at(300)), (100, 150, 50));
        let noisy = Curve::Noisy {
            base: 1000,
            pct: 5,
            seed: 1,
        };
        assert!((0..1000).all(|t| (950..=1050).contains(&noisy.at(t))));
        assert_eq!(sine.settles_at_ms(), None);
        let burst = Curve::Burst {
            base: 100,
            peak: 900,
            every_ms: 100,
            for_ms: 20,
        };
        assert_eq!(
            (burst.at(79), burst.at(80), burst.at(99), burst.at(100)),
            (100, 900, 900, 100)
        );
        let shifted = Curve::Shifted {
            by_ms: 200,
            inner: Box::new(sine.clone()),
        };
        assert_eq!((shifted.at(0), shifted.at(100)), (100, 50));
        assert_eq!(step.settles_at_ms(), Some(10));
    }

    #[test]
    fn the_guest_reports_what_it_was_given() {
        let vms = [SimVm::new("a", 512, 256, 2048, Curve::Constant(600))];
        let t = simulate(PolicyConfig::default(), &vms, 4096, 250, 2).expect("sim");
        assert_eq!(t[0].assigned, vec![720]);
        assert_eq!(t[0].target, vec![720]);
        assert!(
            t[0].reasons[0].contains("grow 208 MiB"),
            "{:?}",
            t[0].reasons
        );
    }
}
