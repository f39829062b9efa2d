//! The balancer of `memtide run`: one VM, driven in-process. Its port reads
//! the agent reports the vsock reader keeps and resizes through the same
//! calls as the control API (`PUT /balloon`, `PUT /memory`,
//! `PUT /memory/virtio-mem`).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memtide_balancer::driver::{ApplyError, Driver, SharedStatus, VirtioMemNow, VmPort};
use memtide_balancer::reader::{to_policy_report, AgentReports};
use memtide_balancer::{Action, PolicyConfig, Report, VirtioMemSettings, VmSettings};
use memtide_devices::virtio::balloon::BalloonShared;
use memtide_devices::virtio::mem::VirtioMemShared;

use crate::config::BalancerConfig;
use crate::memory::hotplug::MemoryHotplug;

/// Errors from starting the balancer.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// The balancer settings do not work.
    #[error("balancer: {0}")]
    Settings(#[from] memtide_balancer::SettingsError),
    /// The thread could not start.
    #[error("start the balancer thread: {0}")]
    Thread(std::io::Error),
}

/// A VM in this process.
#[derive(Debug)]
pub struct LocalVm {
    /// The agent's reports.
    pub reports: Arc<AgentReports>,
    /// The balloon, if any.
    pub balloon: Option<Arc<BalloonShared>>,
    /// Hot-add, if any.
    pub hotplug: Option<Arc<Mutex<MemoryHotplug>>>,
    /// virtio-mem, if any: the balancer then plugs and unplugs its blocks.
    pub virtio_mem: Option<Arc<VirtioMemShared>>,
}

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

impl VmPort for LocalVm {
    fn latest(&mut self) -> Option<(Report, u64)> {
        let snap = self.reports.snapshot();
        let received = snap.latest?;
        let age = snap.now_ms.saturating_sub(received.received_ms);
        let mut report = to_policy_report(&received);
        report.stalls = self.balloon.as_ref().and_then(|b| stall_counters(b));
        Some((report, age))
    }

    fn virtio_mem(&mut self) -> Option<VirtioMemNow> {
        let s = self.virtio_mem.as_ref()?.status();
        Some(VirtioMemNow {
            requested_mib: s.requested / MIB,
            plugged_mib: s.plugged / MIB,
        })
    }

    fn apply(&mut self, action: &Action) -> Result<(), ApplyError> {
        if let Some(mib) = action.virtio_mem_requested_mib() {
            let dev = self
                .virtio_mem
                .as_ref()
                .ok_or(ApplyError::Unsupported("this VM has no virtio-mem device"))?;
            return dev.set_requested_mib(mib).map_err(|e| ApplyError::Failed {
                what: "set the virtio-mem requested size",
                detail: e.to_string(),
            });
        }
        match *action {
            Action::Inflate { to_balloon_mib } | Action::Deflate { to_balloon_mib } => {
                let balloon = self
                    .balloon
                    .as_ref()
                    .ok_or(ApplyError::Unsupported("this VM has no balloon"))?;
                balloon
                    .set_target_mib(to_balloon_mib)
                    .map_err(|e| ApplyError::Failed {
                        what: "set the balloon target",
                        detail: e.to_string(),
                    })
            }
            Action::HotAdd { slots, slot_mib } => {
                let hotplug = self
                    .hotplug
                    .as_ref()
                    .ok_or(ApplyError::Unsupported("this VM has no hot-add slots"))?;
                memtide_devices::bus::lock(hotplug)
                    .add(u64::from(slots) * slot_mib)
                    .map(|_| ())
                    .map_err(|e| ApplyError::Failed {
                        what: "hot-add memory",
                        detail: e.to_string(),
                    })
            }
            Action::Plug { .. } | Action::Unplug { .. } | Action::KeepPlugged { .. } => {
                Err(ApplyError::Unsupported("virtio-mem action handled above"))
            }
        }
    }
}

/// The guest's stall and OOM counters from its latest balloon statistics.
fn stall_counters(b: &BalloonShared) -> Option<memtide_balancer::stall::StallCounters> {
    let stats = memtide_devices::bus::lock(&b.stats);
    let s = stats.as_ref()?;
    memtide_balancer::stall::StallCounters::from_stats(s.oom_kills, s.alloc_stalls)
}

/// The VM's settings as the policy sees them: what it cannot do (shrink
/// without a balloon or virtio-mem, grow without slots or virtio-mem) is
/// taken out of its range. With virtio-mem the maximum (from
/// [`BalancerConfig`]) includes the device region.
pub fn settings(cfg: &BalancerConfig, vm: &LocalVm) -> VmSettings {
    let startup = cfg.startup_mib;
    let mut s = VmSettings::new("vm", startup, cfg.minimum_mib, cfg.maximum_mib);
    if vm.balloon.is_none() && vm.virtio_mem.is_none() {
        s.minimum_mib = startup;
    }
    if vm.hotplug.is_none() && vm.virtio_mem.is_none() {
        s.maximum_mib = startup;
    }
    s.virtio_mem = vm.virtio_mem.as_ref().map(|d| {
        let r = d.region();
        VirtioMemSettings::for_linux_guest(r.size / MIB, r.block_size / MIB)
    });
    s.buffer_pct = cfg.buffer_pct;
    s.weight = cfg.weight;
    s
}

/// Starts the balancer thread for `vm`; returns its status for the API.
pub fn start(
    cfg: &BalancerConfig,
    vm: LocalVm,
    slot_mib: u64,
    stop: Arc<AtomicBool>,
) -> Result<SharedStatus, BalanceError> {
    let policy = PolicyConfig {
        slot_mib,
        idle_reclaim_after_ms: cfg.idle_reclaim_after_ms,
        psi_calm_after_ms: cfg.calm_after_ms,
        host_reserve_pct: cfg.host_reserve_pct,
        ..PolicyConfig::default()
    };
    let settings = settings(cfg, &vm);
    let driver = Driver::new(policy, vec![(settings, Box::new(vm))], cfg.budget_mib)?;
    let status = driver.status();
    driver
        .spawn(Duration::from_millis(cfg.interval_ms), stop)
        .map_err(BalanceError::Thread)?;
    Ok(status)
}
