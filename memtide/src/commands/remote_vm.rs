//! A VM behind its control socket, for `memtide balance`.
//!
//! A poller thread per VM asks `GET /memory/guest` every interval, with the
//! client's time limits, and keeps the latest answer; the balancer reads
//! that copy and never waits on a socket. A VM whose API times out (a
//! stopped or stuck memtide) shows why as its `last_error`, its actions
//! fail at once, and the other VMs keep being balanced. For a VM with
//! virtio-mem the poller also asks `GET /memory/virtio-mem`, and the
//! balancer's plug and unplug go to `PUT /memory/virtio-mem`.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use memtide_api::{
    AgentReport, BalloonStatistics, BalloonTarget, Client, ClientError, GuestMemory, HotAdd,
};
use memtide_balancer::driver::{ApplyError, VirtioMemNow, VmPort};
use memtide_balancer::stall::StallCounters;
use memtide_balancer::{Action, Report};

/// The policy's report from a `GET /memory/guest` answer, with its age.
pub fn report_from_api(v: &GuestMemory) -> Option<(Report, u64)> {
    let l: &AgentReport = v.latest.as_ref()?;
    let report = Report {
        committed_mib: l.committed_as_kib >> 10,
        visible_mib: l.mem_total_kib >> 10,
        available_mib: l.mem_available_kib >> 10,
        psi_some_avg10: l.psi.map(|p| percent_f32(p.some_avg10)),
        psi_some_total_us: l.psi.map(|p| p.some_total_us),
        stalls: None,
        timestamp_ms: l.uptime_ms,
        received_ms: 0,
    };
    Some((report, l.age_ms))
}

/// The guest's stall and OOM counters from a `GET /balloon/statistics`
/// answer, if the guest sends them.
pub fn stalls_from_api(s: &BalloonStatistics) -> Option<StallCounters> {
    let g = s.guest.as_ref()?;
    StallCounters::from_stats(g.oom_kills, g.alloc_stalls)
}

/// The guest's stall counters, asked for while the VM has a balloon
/// (`ask` turns false at the first 4xx: a VM without a balloon answers
/// 400, an older memtide without the route 404).
fn poll_stalls(api: &Client, ask: &mut bool) -> Option<StallCounters> {
    if !*ask {
        return None;
    }
    match api.get_balloon_statistics() {
        Ok(s) => stalls_from_api(&s),
        Err(ClientError::Status { status, .. }) if (400..500).contains(&status) => {
            *ask = false;
            None
        }
        Err(e) => {
            log::debug!("balance: {}: balloon statistics: {e}", api.path().display());
            None
        }
    }
}

/// What the poller last saw.
#[derive(Debug, Default)]
struct Polled {
    /// The latest report, its age when fetched, and when it was fetched.
    latest: Option<(Report, u64, Instant)>,
    /// Why the last poll failed.
    fault: Option<String>,
    /// The virtio-mem device's sizes and when the poll that read them
    /// began.
    vmem: Option<(VirtioMemNow, Instant)>,
}

/// A PSI average (a percentage) as the policy's `f32`.
#[allow(
    clippy::cast_possible_truncation,
    reason = "a percentage (0-100) needs no more than f32's precision; `as` rounds to nearest"
)]
fn percent_f32(p: f64) -> f32 {
    p as f32
}

fn lock(p: &Mutex<Polled>) -> MutexGuard<'_, Polled> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A VM reached through its control socket.
pub struct RemoteVm {
    api: Client,
    polled: Arc<Mutex<Polled>>,
    /// When the VM answered the balancer's last PUT of the virtio-mem
    /// requested size: a poll that began before it may not show it yet.
    vmem_put: Option<Instant>,
}

impl RemoteVm {
    /// Starts polling `api` every `interval` (and its virtio-mem device,
    /// when `virtio_mem`) on a thread that ends when this value is dropped
    /// (after its current request).
    pub fn start(api: Client, interval: Duration, virtio_mem: bool) -> std::io::Result<Self> {
        let polled = Arc::new(Mutex::new(Polled::default()));
        let weak = Arc::downgrade(&polled);
        let poller = api.clone();
        std::thread::Builder::new()
            .name("balance-poll".into())
            .spawn(move || poll(&poller, &weak, interval, virtio_mem))?;
        Ok(Self {
            api,
            polled,
            vmem_put: None,
        })
    }
}

/// Asks for the guest's memory (and the virtio-mem device's sizes, with
/// `virtio_mem`, and the balloon's stall counters) until the [`RemoteVm`]
/// is gone.
fn poll(api: &Client, polled: &Weak<Mutex<Polled>>, interval: Duration, virtio_mem: bool) {
    let mut ask_stats = true;
    loop {
        let began = Instant::now();
        let vmem = virtio_mem
            .then(|| api.get_virtio_mem().ok())
            .flatten()
            .map(|v| {
                (
                    VirtioMemNow {
                        requested_mib: v.requested_mib,
                        plugged_mib: v.plugged_mib,
                    },
                    began,
                )
            });
        let answer = api.get_guest_memory();
        let stalls = match answer {
            Ok(_) => poll_stalls(api, &mut ask_stats),
            Err(_) => None,
        };
        let Some(polled) = polled.upgrade() else {
            return;
        };
        {
            let mut p = lock(&polled);
            if vmem.is_some() {
                p.vmem = vmem;
            }
            match answer {
                Ok(v) => {
                    p.latest = report_from_api(&v).map(|(mut r, age)| {
                        r.stalls = stalls;
                        (r, age, Instant::now())
                    });
                    p.fault = None;
                }
                Err(e) => {
                    log::debug!("balance: {}: {e}", api.path().display());
                    p.latest = None;
                    p.fault = Some(e.to_string());
                }
            }
        }
        drop(polled);
        std::thread::sleep(interval);
    }
}

impl VmPort for RemoteVm {
    fn latest(&mut self) -> Option<(Report, u64)> {
        let p = lock(&self.polled);
        p.latest.map(|(r, age, at)| {
            let since = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX);
            (r, age.saturating_add(since))
        })
    }

    fn virtio_mem(&mut self) -> Option<VirtioMemNow> {
        let p = lock(&self.polled);
        let (v, began) = p.vmem?;
        self.vmem_put.is_none_or(|put| began > put).then_some(v)
    }

    fn apply(&mut self, action: &Action) -> Result<(), ApplyError> {
        let what = match action {
            Action::Inflate { .. } | Action::Deflate { .. } => "set the balloon target",
            Action::HotAdd { .. } => "hot-add memory",
            Action::Plug { .. } | Action::Unplug { .. } | Action::KeepPlugged { .. } => {
                "set the virtio-mem requested size"
            }
        };
        if let Some(fault) = self.fault() {
            // Do not wait out another timeout on a VM that is not answering.
            return Err(ApplyError::Failed {
                what,
                detail: fault,
            });
        }
        let result = match *action {
            Action::Inflate { to_balloon_mib } | Action::Deflate { to_balloon_mib } => {
                self.api.put(
                    memtide_api::paths::BALLOON,
                    &BalloonTarget {
                        target_mib: to_balloon_mib,
                    },
                )
            }
            Action::HotAdd { slots, slot_mib } => self.api.put(
                memtide_api::paths::MEMORY,
                &HotAdd {
                    size_mib: u64::from(slots) * slot_mib,
                },
            ),
            Action::Plug { to_requested_mib }
            | Action::Unplug { to_requested_mib }
            | Action::KeepPlugged { to_requested_mib } => {
                let put = self.api.set_virtio_mem_requested(to_requested_mib);
                // Stamped once the PUT is answered, not before it is sent:
                // a poll that began in between could reach the VM's API
                // ahead of the PUT and read the old size, and the balancer
                // took that for the device's state for a tick (a demo trace
                // of 2026-12-03: web's 80 MiB unplug read back as undone,
                // 720 MiB assigned under a 640 MiB budget).
                self.vmem_put = Some(Instant::now());
                put
            }
        };
        result.map_err(|e| ApplyError::Failed {
            what,
            detail: e.to_string(),
        })
    }

    fn fault(&self) -> Option<String> {
        lock(&self.polled).fault.clone()
    }
}

#[cfg(test)]
#[path = "remote_vm_tests.rs"]
mod tests;
