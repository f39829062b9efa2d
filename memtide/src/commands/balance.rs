//! `memtide balance`: one balancer over several memtide processes, through
//! their control sockets. Each VM's agent reports come from its
//! `GET /memory/guest`; resizes go to its `PUT /balloon`, `PUT /memory`
//! and `PUT /memory/virtio-mem`, the same routes an operator uses. The VMs run with `--no-balancer`.

pub use crate::vm_arg::VmArg;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memtide_balancer::driver::{self, Driver, VmPort};
use memtide_balancer::trace::{Trace, TRACE_VERSION};
use memtide_balancer::{PolicyConfig, SettingsError, VirtioMemSettings, VmSettings};

use memtide_api::{Client, ClientError, Timeouts};

use super::remote_vm::RemoteVm;

/// Time limit of each phase of one request to a VM's API: a VM that does
/// not answer within it is marked (`API timed out`) and skipped.
pub const VM_API_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for one VM's API with [`VM_API_TIMEOUT`].
fn client(sock: &Path) -> Client {
    Client::new(sock).with_timeouts(Timeouts::all(VM_API_TIMEOUT))
}

/// Errors of `memtide balance`.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// A VM's API could not be asked.
    #[error("VM {sock}: {source}")]
    Api {
        /// Its socket.
        sock: PathBuf,
        /// The failure.
        source: ClientError,
    },
    /// A VM that runs its own balancer.
    #[error("VM {0} runs its own balancer; start it with --no-balancer")]
    OwnBalancer(PathBuf),
    /// The `--admit` bounds make no sense.
    #[error("--admit: {0}")]
    Admit(memtide_balancer::admit::AdmitError),
    /// Settings out of order or range.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The trace could not be written.
    #[error("cannot write the trace to {path}: {source}")]
    Trace {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The status API could not start.
    #[error(transparent)]
    ApiServer(#[from] memtide_vmm::api::ApiError),
    /// A VM's poller thread could not start.
    #[error("cannot start the poller of VM {sock}: {source}")]
    Poller {
        /// Its socket.
        sock: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What one VM's API says about its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    /// Boot memory, MiB.
    pub boot_mib: u64,
    /// The most memory it may reach, MiB.
    pub max_mib: u64,
    /// Its hot-add slot size, MiB (`None`: no slots).
    pub slot_mib: Option<u64>,
    /// It has a balloon.
    pub balloon: bool,
    /// Its virtio-mem device, if any (`max_mib` includes its region).
    pub virtio_mem: Option<VirtioMemSettings>,
}

/// Asks one VM's API about its memory.
fn probe(sock: &Path) -> Result<Probed, BalanceError> {
    let api = |source| BalanceError::Api {
        sock: sock.to_path_buf(),
        source,
    };
    let client = client(sock);
    if client.get_balancer().is_ok() {
        return Err(BalanceError::OwnBalancer(sock.to_path_buf()));
    }
    let balloon = match client.get_balloon() {
        Ok(_) => true,
        Err(e) if e.status() == Some(400) => false,
        Err(e) => return Err(api(e)),
    };
    let virtio_mem = match client.get_virtio_mem() {
        Ok(v) => Some(VirtioMemSettings::for_linux_guest(
            v.region_mib,
            v.block_size_mib,
        )),
        Err(e) if e.status() == Some(400) => None,
        Err(e) => return Err(api(e)),
    };
    let region = virtio_mem.map_or(0, |v| v.region_mib);
    match client.get_memory() {
        Ok(m) => Ok(Probed {
            boot_mib: m.boot_mib,
            max_mib: m.max_mib + region,
            slot_mib: Some(m.slot_mib),
            balloon,
            virtio_mem,
        }),
        // No hot-add slots: the VM cannot grow past its boot memory; its
        // boot memory is what the balloon route calls guest RAM.
        Err(e) if e.status() == Some(400) => {
            // guest_ram_mib counts plugged virtio-mem memory too.
            let plugged = client.get_virtio_mem().map_or(0, |v| v.plugged_mib);
            let boot = client
                .get_balloon()
                .map_err(api)?
                .guest_ram_mib
                .saturating_sub(plugged);
            Ok(Probed {
                boot_mib: boot,
                max_mib: boot + region,
                slot_mib: None,
                balloon,
                virtio_mem,
            })
        }
        Err(e) => Err(api(e)),
    }
}

/// The balancer's settings for VM number `i` from its `--vm` argument and
/// what its API said; the slot size is the VM's own.
pub fn vm_settings(i: usize, arg: &VmArg, p: &Probed) -> VmSettings {
    let name = arg.name.clone().unwrap_or_else(|| format!("vm{i}"));
    let minimum = if p.balloon || p.virtio_mem.is_some() {
        arg.minimum_mib.unwrap_or(p.boot_mib / 2)
    } else {
        p.boot_mib
    };
    let mut s = VmSettings::new(&name, p.boot_mib, minimum, p.max_mib);
    s.weight = arg.weight.unwrap_or(s.weight);
    s.buffer_pct = arg.buffer_pct.unwrap_or(s.buffer_pct);
    s.slot_mib = p.slot_mib.filter(|&m| m > 0);
    s.virtio_mem = p.virtio_mem;
    s
}

/// Options of one `memtide balance` run.
#[derive(Debug, Clone)]
pub struct BalanceOptions {
    /// Host budget for all VMs, MiB.
    pub budget_mib: u64,
    /// The VMs.
    pub vms: Vec<VmArg>,
    /// Decision interval.
    pub interval: Duration,
    /// Stop after this long (`None`: until every VM is gone).
    pub duration: Option<Duration>,
    /// Write the JSON trace here (rewritten every few seconds and at the end).
    pub trace: Option<PathBuf>,
    /// Serve `GET /balancer` here (for `memtide top`).
    pub api_sock: Option<PathBuf>,
    /// The policy's knobs (`PolicyConfig::default()` but for the flags
    /// that change them, e.g. `--idle-reclaim-after-s`).
    pub policy: PolicyConfig,
}

/// Answers admission once (`--admit`): each VM's minimum from its
/// settings and its memory now from its API (guest RAM minus balloon).
pub fn admit_once(
    opts: &BalanceOptions,
    candidate: &memtide_balancer::admit::Candidate,
) -> Result<memtide_balancer::admit::Admission, BalanceError> {
    let mut running = Vec::with_capacity(opts.vms.len());
    for (i, arg) in opts.vms.iter().enumerate() {
        let probed = probe(&arg.sock)?;
        let s = vm_settings(i, arg, &probed);
        let api = |source| BalanceError::Api {
            sock: arg.sock.clone(),
            source,
        };
        let assigned = if probed.balloon {
            let b = client(&arg.sock).get_balloon().map_err(api)?;
            b.guest_ram_mib.saturating_sub(b.actual_mib)
        } else {
            probed.boot_mib
        };
        running.push(memtide_balancer::admit::Running {
            name: s.name,
            assigned_mib: assigned,
            minimum_mib: s.minimum_mib,
        });
    }
    memtide_balancer::admit::admit(opts.budget_mib, &running, candidate)
        .map_err(BalanceError::Admit)
}

/// Runs the balancer until the duration ends or every VM is gone; returns
/// the recorded trace.
pub fn run(opts: &BalanceOptions) -> Result<Trace, BalanceError> {
    if let Some(sock) = &opts.api_sock {
        // Refuse a path that cannot become the socket before asking any VM.
        memtide_vmm::api::check_path(sock)?;
    }
    let mut vms: Vec<(VmSettings, Box<dyn VmPort>)> = Vec::new();
    for (i, arg) in opts.vms.iter().enumerate() {
        let probed = probe(&arg.sock)?;
        let s = vm_settings(i, arg, &probed);
        println!(
            "memtide balance: {} ({}): boot {} MiB, range [{}, {}] MiB, weight {}, buffer {} %{}{}",
            s.name,
            arg.sock.display(),
            s.startup_mib,
            s.minimum_mib,
            s.maximum_mib,
            s.weight,
            s.buffer_pct,
            s.slot_mib
                .map(|m| format!(", slot {m} MiB"))
                .unwrap_or_default(),
            s.virtio_mem
                .map(|v| format!(
                    ", virtio-mem {} MiB in {} MiB blocks",
                    v.region_mib, v.block_mib
                ))
                .unwrap_or_default()
        );
        let port = RemoteVm::start(client(&arg.sock), opts.interval, s.virtio_mem.is_some())
            .map_err(|source| BalanceError::Poller {
                sock: arg.sock.clone(),
                source,
            })?;
        vms.push((s, Box::new(port)));
    }
    let settings: Vec<VmSettings> = vms.iter().map(|(s, _)| s.clone()).collect();
    let policy = opts.policy;
    let mut driver = Driver::new(policy, vms, opts.budget_mib)?;
    let status = driver.status();
    if let Some(sock) = &opts.api_sock {
        memtide_vmm::api::start(
            sock,
            memtide_vmm::api::ApiState::balancer_only(status.clone()),
        )?;
    }
    let start = Instant::now();
    let mut last_write = Instant::now();
    loop {
        let now = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        driver.tick_at(now);
        let trace = current_trace(opts.budget_mib, &settings, &status);
        if let Some(path) = &opts.trace {
            if last_write.elapsed() >= Duration::from_secs(5) {
                write_trace(path, &trace)?;
                last_write = Instant::now();
            }
        }
        let done = opts.duration.is_some_and(|d| start.elapsed() >= d)
            || opts.vms.iter().all(|v| !v.sock.exists());
        if done {
            if let Some(path) = &opts.trace {
                write_trace(path, &trace)?;
            }
            return Ok(trace);
        }
        std::thread::sleep(opts.interval);
    }
}

/// The trace so far.
fn current_trace(budget_mib: u64, settings: &[VmSettings], status: &driver::SharedStatus) -> Trace {
    Trace {
        version: TRACE_VERSION,
        budget_mib,
        vms: settings.to_vec(),
        ticks: driver::lock(status).timeline.iter().cloned().collect(),
    }
}

fn write_trace(path: &Path, trace: &Trace) -> Result<(), BalanceError> {
    std::fs::write(path, trace.to_json()).map_err(|source| BalanceError::Trace {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::remote_vm::report_from_api;
    use memtide_api::GuestMemory;

    #[test]
    fn vm_arguments_parse_with_and_without_options() {
        let a: VmArg = "/tmp/a.sock".parse().expect("plain");
        assert_eq!(a.sock, PathBuf::from("/tmp/a.sock"));
        assert_eq!((a.weight, a.minimum_mib), (None, None));
        let b: VmArg = "/tmp/b.sock,name=web,weight=8000,min=128,buffer=30"
            .parse()
            .expect("full");
        assert_eq!(b.name.as_deref(), Some("web"));
        assert_eq!(
            (b.weight, b.minimum_mib, b.buffer_pct),
            (Some(8000), Some(128), Some(30))
        );
        for bad in ["", ",weight=1", "/s,weight", "/s,weight=x", "/s,colour=red"] {
            assert!(bad.parse::<VmArg>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_vm_keeps_its_own_slot_size() {
        let arg: VmArg = "/tmp/a.sock".parse().expect("plain");
        let probed = |slot_mib| Probed {
            boot_mib: 256,
            max_mib: 1024,
            slot_mib,
            balloon: true,
            virtio_mem: None,
        };
        let a = vm_settings(0, &arg, &probed(Some(128)));
        let b = vm_settings(1, &arg, &probed(Some(512)));
        let c = vm_settings(2, &arg, &probed(None));
        assert_eq!(
            (a.slot_mib, b.slot_mib, c.slot_mib),
            (Some(128), Some(512), None)
        );
        assert_eq!((a.name.as_str(), b.name.as_str()), ("vm0", "vm1"));
        assert_eq!(a.minimum_mib, 128);
        let fixed = vm_settings(
            0,
            &arg,
            &Probed {
                balloon: false,
                ..probed(None)
            },
        );
        assert_eq!(fixed.minimum_mib, 256, "no balloon: cannot shrink");
    }

    #[test]
    fn api_reports_convert_to_policy_reports() {
        let v: GuestMemory = serde_json::from_value(serde_json::json!({"latest": {
            "seq": 1, "mem_total_kib": 262144, "mem_free_kib": 0, "mem_available_kib": 131072,
            "committed_as_kib": 204800, "commit_limit_kib": 0, "swap_total_kib": 0,
            "swap_free_kib": 0, "uptime_ms": 9000, "age_ms": 120, "pressure_pct": 78,
            "psi": {"some_avg10": 1.5, "full_avg10": 0.0, "some_total_us": 0, "full_total_us": 0}
        }, "reports": 1, "rejected": 0, "connections": 1, "last_error": null}))
        .expect("typed");
        let (r, age) = report_from_api(&v).expect("report");
        assert_eq!(
            (r.visible_mib, r.available_mib, r.committed_mib),
            (256, 128, 200)
        );
        assert_eq!((r.timestamp_ms, age), (9000, 120));
        assert_eq!(r.psi_some_avg10, Some(1.5));
        let none = GuestMemory { latest: None, ..v };
        assert!(report_from_api(&none).is_none());
    }
}
