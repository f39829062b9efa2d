//! The balancer thread: every tick it collects the VMs' latest agent
//! reports, runs one [`Balancer::step`], applies the resulting actions
//! through each VM's [`VmPort`] and publishes what it did for
//! `GET /balancer` and `memtide top`.
//!
//! The ports are how the driver reaches a VM: in `memtide run` they call
//! the balloon and hot-add code directly; `memtide balance` implements them
//! over each VM's control socket. Either way the actions go through the same
//! code paths as the control API's `PUT /balloon` and `PUT /memory`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::action::{Action, Decision};
use crate::policy::{Balancer, PolicyConfig};
use crate::report::Report;
use crate::settings::{SettingsError, VmSettings};
use crate::sim::Tick;

/// Timeline points kept for `GET /balancer` (at one tick per 500 ms, about
/// ten minutes).
pub const TIMELINE_LEN: usize = 1200;

/// Why an action could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The VM cannot do this kind of resize (no balloon, no hot-add).
    #[error("{0}")]
    Unsupported(&'static str),
    /// The VMM refused or failed the request.
    #[error("{what}: {detail}")]
    Failed {
        /// The request.
        what: &'static str,
        /// The VMM's answer.
        detail: String,
    },
}

/// A VM as the driver sees it.
pub trait VmPort: Send {
    /// The latest agent report and how long ago the host received it, ms.
    fn latest(&mut self) -> Option<(Report, u64)>;
    /// Applies one resize step.
    fn apply(&mut self, action: &Action) -> Result<(), ApplyError>;
    /// Why the VM cannot be reached now, if it cannot (a control socket
    /// that timed out); published as the VM's `last_error`.
    fn fault(&self) -> Option<String> {
        None
    }
    /// The VM's virtio-mem device now, if it has one and it can be asked:
    /// its requested and plugged sizes, MiB. The balancer learns from it
    /// whether an unplug came up short.
    fn virtio_mem(&mut self) -> Option<VirtioMemNow> {
        None
    }
}

/// What a VM's virtio-mem device says (`GET /memory/virtio-mem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMemNow {
    /// Requested size, MiB.
    pub requested_mib: u64,
    /// Plugged size, MiB.
    pub plugged_mib: u64,
}

/// One VM's line in the balancer's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmView {
    /// The VM's name.
    pub name: String,
    /// Memory the guest may use: plugged minus balloon, MiB.
    pub assigned_mib: u64,
    /// Boot plus hot-added memory, MiB.
    pub plugged_mib: u64,
    /// Memory held by the balloon, MiB.
    pub balloon_mib: u64,
    /// virtio-mem: the size the balancer asked the device for, MiB.
    pub virtio_mem_mib: u64,
    /// virtio-mem: the device's plugged size at the last look, MiB.
    pub virtio_mem_plugged_mib: u64,
    /// Memory the VM must keep, MiB (its settings' minimum).
    pub minimum_mib: u64,
    /// What the VM should have: committed plus buffer within its bounds, MiB.
    pub demand_mib: u64,
    /// Committed memory from the latest report, MiB.
    pub committed_mib: Option<u64>,
    /// committed / assigned × 100, from the latest report.
    pub pressure_pct: Option<u64>,
    /// The last decision's reason.
    pub reason: String,
    /// The last decision that changed something, with its host time (ms).
    pub last_action: Option<(u64, String)>,
    /// The last failure to apply an action.
    pub last_error: Option<String>,
    /// Actions decided so far, by kind.
    pub actions: ActionCounts,
    /// Failures to apply an action so far.
    pub errors: u64,
}

/// How many actions of each kind the balancer decided for one VM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionCounts {
    /// Balloon inflates (the guest gives memory up).
    pub inflate: u64,
    /// Balloon deflates (the guest gets memory back).
    pub deflate: u64,
    /// Hot-adds of memory slots.
    pub hot_add: u64,
    /// virtio-mem plugs (requested size raised).
    pub plug: u64,
    /// virtio-mem unplugs (requested size lowered).
    pub unplug: u64,
    /// Short unplugs given up (requested size set to what stayed plugged).
    pub keep_plugged: u64,
}

impl ActionCounts {
    /// Counts `action`.
    pub fn count(&mut self, action: &crate::action::Action) {
        use crate::action::Action;
        let n = match action {
            Action::Inflate { .. } => &mut self.inflate,
            Action::Deflate { .. } => &mut self.deflate,
            Action::HotAdd { .. } => &mut self.hot_add,
            Action::Plug { .. } => &mut self.plug,
            Action::Unplug { .. } => &mut self.unplug,
            Action::KeepPlugged { .. } => &mut self.keep_plugged,
        };
        *n = n.saturating_add(1);
    }
}

/// What the balancer shows: budget, per-VM views and a bounded timeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalancerStatus {
    /// The host memory budget for all VMs, MiB.
    pub budget_mib: u64,
    /// Ticks run.
    pub ticks: u64,
    /// Per-VM lines, in VM order.
    pub vms: Vec<VmView>,
    /// The latest ticks, oldest first, in the simulator's terms so that
    /// the same invariant checks run on a real timeline.
    pub timeline: VecDeque<Tick>,
}

/// The balancer status shared between the driver and its readers.
pub type SharedStatus = Arc<Mutex<BalancerStatus>>;

/// Locks the shared status (recovering from a poisoned lock: plain data).
pub fn lock(status: &SharedStatus) -> MutexGuard<'_, BalancerStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// The status without its timeline (budget, ticks, per-VM views): what
/// `GET /balancer` and `GET /metrics` show. Copying the whole timeline (up
/// to [`TIMELINE_LEN`] ticks) for each request made large allocations on
/// the API's short-lived threads, and glibc's first trim of such a
/// thread's heap opens `/proc/sys/vm/overcommit_memory`, a call the
/// sandbox of `memtide run` refuses (found with virtio-mem on a real
/// guest: the VM ended after about 2 minutes of polling `GET /balancer`).
pub fn summary(status: &SharedStatus) -> BalancerStatus {
    let s = lock(status);
    BalancerStatus {
        budget_mib: s.budget_mib,
        ticks: s.ticks,
        vms: s.vms.clone(),
        timeline: VecDeque::new(),
    }
}

/// The policy, the VMs it drives and the status it publishes.
pub struct Driver {
    balancer: Balancer,
    ports: Vec<Box<dyn VmPort>>,
    budget_mib: u64,
    status: SharedStatus,
    last_seen: Vec<Option<u64>>,
    epoch: Instant,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ports are trait objects without `Debug`; their count is enough.
        f.debug_struct("Driver")
            .field("balancer", &self.balancer)
            .field("ports", &self.ports.len())
            .field("budget_mib", &self.budget_mib)
            .field("status", &self.status)
            .field("last_seen", &self.last_seen)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Driver {
    /// A driver for `vms` (settings and port, in VM order) under
    /// `budget_mib`.
    pub fn new(
        cfg: PolicyConfig,
        vms: Vec<(VmSettings, Box<dyn VmPort>)>,
        budget_mib: u64,
    ) -> Result<Self, SettingsError> {
        let (settings, ports): (Vec<_>, Vec<_>) = vms.into_iter().unzip();
        let views = settings
            .iter()
            .map(|s| VmView {
                name: s.name.clone(),
                assigned_mib: s.startup_mib,
                plugged_mib: s.startup_mib,
                minimum_mib: s.minimum_mib,
                demand_mib: s.startup_mib,
                ..VmView::default()
            })
            .collect();
        let n = settings.len();
        Ok(Self {
            balancer: Balancer::new(cfg, settings)?,
            ports,
            budget_mib,
            status: Arc::new(Mutex::new(BalancerStatus {
                budget_mib,
                vms: views,
                // All of it now, before a sandbox starts: the timeline
                // never grows its buffer later.
                timeline: VecDeque::with_capacity(TIMELINE_LEN),
                ..BalancerStatus::default()
            })),
            last_seen: vec![None; n],
            epoch: Instant::now(),
        })
    }

    /// The status this driver publishes.
    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    /// One balancing step at host time `now_ms`: new reports in, decisions
    /// applied, status published. Returns the decisions.
    pub fn tick_at(&mut self, now_ms: u64) -> Vec<Decision> {
        let mut reports = Vec::new();
        let mut latest: Vec<Option<Report>> = Vec::with_capacity(self.ports.len());
        let mut errors: Vec<Option<String>> = self.ports.iter().map(|p| p.fault()).collect();
        for (i, port) in self.ports.iter_mut().enumerate() {
            let seen = port.latest().map(|(mut r, age_ms)| {
                r.received_ms = now_ms.saturating_sub(age_ms);
                r
            });
            if let Some(r) = seen {
                // Only a report the driver has not seen yet is news; the
                // agent's own clock (uptime) tells one report from another.
                if self.last_seen[i] != Some(r.timestamp_ms) {
                    self.last_seen[i] = Some(r.timestamp_ms);
                    reports.push((i, r));
                }
            }
            latest.push(seen);
            if let Some(v) = port.virtio_mem() {
                self.balancer
                    .observe_virtio_mem(i, v.requested_mib, v.plugged_mib, now_ms);
            }
        }
        let decisions = self.balancer.step(&reports, self.budget_mib, now_ms);
        for d in &decisions {
            let Some(port) = self.ports.get_mut(d.vm) else {
                continue;
            };
            for action in &d.actions {
                if let Err(e) = port.apply(action) {
                    log::warn!("balancer: vm {}: {action:?} failed: {e}", d.vm);
                    errors[d.vm] = Some(e.to_string());
                    break;
                }
            }
            if !d.is_noop() {
                log::info!("balancer: {}", d.reason);
            }
        }
        self.publish(now_ms, &decisions, &latest, errors);
        decisions
    }

    fn publish(
        &self,
        now_ms: u64,
        decisions: &[Decision],
        latest: &[Option<Report>],
        errors: Vec<Option<String>>,
    ) {
        let mut status = lock(&self.status);
        status.ticks += 1;
        let n = decisions.len();
        let any_vmem = (0..n).any(|i| {
            self.balancer
                .settings(i)
                .is_some_and(|s| s.virtio_mem.is_some())
        });
        let mut point = Tick {
            t_ms: now_ms,
            assigned: Vec::with_capacity(n),
            plugged: Vec::with_capacity(n),
            balloon: Vec::with_capacity(n),
            vmem: Vec::new(),
            vmem_plugged: Vec::new(),
            committed: Vec::with_capacity(n),
            target: Vec::with_capacity(n),
            honest: Vec::with_capacity(n),
            over_budget_mib: decisions.first().map_or(0, |d| d.over_budget_mib),
            reasons: Vec::with_capacity(n),
        };
        for d in decisions {
            let Some(state) = self.balancer.state(d.vm) else {
                continue;
            };
            let Some(view) = status.vms.get_mut(d.vm) else {
                continue;
            };
            let committed = latest.get(d.vm).copied().flatten().map(|r| r.committed_mib);
            view.assigned_mib = state.assigned_mib();
            view.plugged_mib = state.plugged_mib;
            view.balloon_mib = state.balloon_mib;
            view.virtio_mem_mib = state.vmem_requested_mib;
            view.virtio_mem_plugged_mib = state.vmem_plugged_mib;
            view.demand_mib = d.target_mib;
            view.committed_mib = committed;
            view.pressure_pct = committed
                .filter(|_| view.assigned_mib > 0)
                .map(|c| crate::resize::pressure_pct(c, view.assigned_mib));
            view.reason = d.reason.clone();
            if !d.is_noop() {
                view.last_action = Some((now_ms, d.reason.clone()));
            }
            for action in &d.actions {
                view.actions.count(action);
            }
            if let Some(e) = errors.get(d.vm).cloned().flatten() {
                view.last_error = Some(e);
                view.errors = view.errors.saturating_add(1);
            }
            point.assigned.push(view.assigned_mib);
            point.plugged.push(view.plugged_mib);
            point.balloon.push(view.balloon_mib);
            if any_vmem {
                point.vmem.push(view.virtio_mem_mib);
                point.vmem_plugged.push(view.virtio_mem_plugged_mib);
            }
            point.committed.push(committed.unwrap_or(0));
            point.target.push(view.demand_mib);
            point.honest.push(committed.is_some());
            point.reasons.push(if d.is_noop() {
                String::new()
            } else {
                d.reason.clone()
            });
        }
        if status.timeline.len() == TIMELINE_LEN {
            status.timeline.pop_front();
        }
        status.timeline.push_back(point);
    }

    /// Runs [`Driver::tick_at`] every `interval` on a thread named
    /// `balancer` until `stop` is set.
    pub fn spawn(
        mut self,
        interval: Duration,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("balancer".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.tick_at(now);
                    std::thread::sleep(interval);
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VM whose agent reports `committed` and whose resizes are recorded.
    struct FakeVm {
        committed: Arc<Mutex<Option<(u64, u64)>>>,
        applied: Arc<Mutex<Vec<Action>>>,
        refuse_hot_add: bool,
    }

    impl VmPort for FakeVm {
        fn latest(&mut self) -> Option<(Report, u64)> {
            let (committed, t) = (*self.committed.lock().ok()?)?;
            Some((Report::at(committed, 512, t), 0))
        }

        fn apply(&mut self, action: &Action) -> Result<(), ApplyError> {
            if self.refuse_hot_add && matches!(action, Action::HotAdd { .. }) {
                return Err(ApplyError::Unsupported("no hot-add slots"));
            }
            if let Ok(mut a) = self.applied.lock() {
                a.push(*action);
            }
            Ok(())
        }
    }

    type Handles = (Arc<Mutex<Option<(u64, u64)>>>, Arc<Mutex<Vec<Action>>>);

    fn fake(refuse_hot_add: bool) -> (Box<dyn VmPort>, Handles) {
        let committed = Arc::new(Mutex::new(None));
        let applied = Arc::new(Mutex::new(Vec::new()));
        (
            Box::new(FakeVm {
                committed: committed.clone(),
                applied: applied.clone(),
                refuse_hot_add,
            }),
            (committed, applied),
        )
    }

    fn set(h: &Handles, committed: u64, t: u64) {
        if let Ok(mut c) = h.0.lock() {
            *c = Some((committed, t));
        }
    }

    fn applied(h: &Handles) -> Vec<Action> {
        h.1.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// A driver for one VM (512 MiB startup, 256-1024 MiB) under 1024 MiB.
    fn one_vm(port: Box<dyn VmPort>) -> Driver {
        Driver::new(
            PolicyConfig::default(),
            vec![(VmSettings::new("a", 512, 256, 1024), port)],
            1024,
        )
        .expect("valid")
    }

    #[test]
    fn a_silent_agent_keeps_the_vm_as_it_is() {
        let (port, h) = fake(false);
        let mut d = one_vm(port);
        for t in 0..10 {
            d.tick_at(t * 500);
        }
        assert!(applied(&h).is_empty());
        let s = lock(&d.status()).clone();
        assert_eq!(s.ticks, 10);
        assert_eq!(s.vms[0].assigned_mib, 512);
        assert!(s.vms[0].reason.contains("no recent report"), "{s:?}");
    }

    #[test]
    fn demand_above_the_vm_hot_adds_and_is_published() {
        let (port, h) = fake(false);
        let mut d = one_vm(port);
        set(&h, 600, 1);
        d.tick_at(1000);
        let acts = applied(&h);
        assert!(
            acts.iter().any(|a| matches!(a, Action::HotAdd { .. })),
            "{acts:?}"
        );
        let s = lock(&d.status()).clone();
        assert!(s.vms[0].assigned_mib >= 720, "{:?}", s.vms[0]);
        assert_eq!(s.vms[0].demand_mib, 720);
        assert_eq!(s.vms[0].committed_mib, Some(600));
        assert!(s.vms[0].last_action.is_some());
        assert_eq!(s.timeline.len(), 1);
        assert!(
            !s.timeline[0].reasons[0].is_empty(),
            "the action is on the timeline"
        );
    }

    #[test]
    fn a_failed_action_is_reported_not_fatal() {
        let (port, h) = fake(true);
        let mut d = one_vm(port);
        set(&h, 600, 1);
        d.tick_at(1000);
        let s = lock(&d.status()).clone();
        assert_eq!(s.vms[0].last_error.as_deref(), Some("no hot-add slots"));
    }

    #[test]
    fn memory_moves_from_the_idle_vm_to_the_busy_one_under_a_tight_budget() {
        let (pa, ha) = fake(false);
        let (pb, hb) = fake(false);
        let mut d = Driver::new(
            PolicyConfig::default(),
            vec![
                (VmSettings::new("a", 512, 256, 1024), pa),
                (VmSettings::new("b", 512, 256, 1024), pb),
            ],
            1024,
        )
        .expect("valid");
        for step in 0..60u64 {
            let t = step * 500;
            set(&ha, 700, t + 1);
            set(&hb, 100, t + 1);
            d.tick_at(t);
        }
        let s = lock(&d.status()).clone();
        let total: u64 = s.vms.iter().map(|v| v.assigned_mib).sum();
        assert!(total <= 1024, "over budget: {s:?}");
        let ticks: Vec<Tick> = s.timeline.iter().cloned().collect();
        let settings = [
            VmSettings::new("a", 512, 256, 1024),
            VmSettings::new("b", 512, 256, 1024),
        ];
        crate::invariants::check_safety(&settings, 1024, &ticks).expect("safety");
        crate::invariants::check_no_hot_remove(&ticks).expect("no hot-remove");
        assert!(
            s.vms[0].assigned_mib > s.vms[1].assigned_mib,
            "busy a should hold more than idle b: {:?}",
            s.vms
        );
        assert!(applied(&hb)
            .iter()
            .any(|a| matches!(a, Action::Inflate { .. })));
    }

    #[test]
    fn the_timeline_is_bounded() {
        let (port, _h) = fake(false);
        let mut d = one_vm(port);
        for t in 0..(TIMELINE_LEN as u64 + 5) {
            d.tick_at(t);
        }
        let s = lock(&d.status()).clone();
        assert_eq!(s.timeline.len(), TIMELINE_LEN);
        assert_eq!(s.timeline.front().map(|p| p.t_ms), Some(5));
    }
}
