//! `memtide balance`: one balancer over several memtide processes, through
//! their control sockets. Each VM's agent reports come from its
//! `GET /memory/guest`; resizes go to its `PUT /balloon` and `PUT /memory`,
//! the same routes an operator uses. The VMs run with `--no-balancer`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memtide_balancer::driver::{self, ApplyError, Driver, VmPort};
use memtide_balancer::trace::{Trace, TRACE_VERSION};
use memtide_balancer::{Action, PolicyConfig, Report, SettingsError, VmSettings};

use crate::ctl::{call, CtlError};

/// Errors of `memtide balance`.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    /// A `--vm` argument that cannot be parsed.
    #[error("--vm {arg:?}: {why}")]
    VmArg {
        /// The argument.
        arg: String,
        /// What is wrong.
        why: String,
    },
    /// A VM's API could not be asked.
    #[error("VM {sock}: {source}")]
    Api {
        /// Its socket.
        sock: PathBuf,
        /// The failure.
        source: CtlError,
    },
    /// A VM's API answered something unexpected.
    #[error("VM {sock}: unexpected answer to {what}: {body}")]
    Answer {
        /// Its socket.
        sock: PathBuf,
        /// The request.
        what: &'static str,
        /// The answer.
        body: String,
    },
    /// A VM that runs its own balancer.
    #[error("VM {0} runs its own balancer; start it with --no-balancer")]
    OwnBalancer(PathBuf),
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
    ApiServer(#[from] crate::api::ApiError),
}

/// One `--vm` argument: `SOCKET[,name=N][,weight=W][,min=MIB][,buffer=PCT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmArg {
    /// The VM's API socket.
    pub sock: PathBuf,
    /// Name in decisions (default: vm0, vm1, ...).
    pub name: Option<String>,
    /// Weight (default 5000).
    pub weight: Option<u32>,
    /// Minimum, MiB (default: half the boot memory).
    pub minimum_mib: Option<u64>,
    /// Buffer, percent (default 20).
    pub buffer_pct: Option<u32>,
}

impl std::str::FromStr for VmArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let sock = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or("expected SOCKET[,name=N][,weight=W][,min=MIB][,buffer=PCT]")?;
        let mut arg = VmArg {
            sock: PathBuf::from(sock),
            name: None,
            weight: None,
            minimum_mib: None,
            buffer_pct: None,
        };
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key}={value:?} is not a number"))
            };
            match key {
                "name" => arg.name = Some(value.to_string()),
                "weight" => arg.weight = Some(u32::try_from(number()?).map_err(|e| e.to_string())?),
                "min" => arg.minimum_mib = Some(number()?),
                "buffer" => {
                    arg.buffer_pct = Some(u32::try_from(number()?).map_err(|e| e.to_string())?)
                }
                _ => return Err(format!("unknown key {key:?} (name, weight, min, buffer)")),
            }
        }
        Ok(arg)
    }
}

/// A VM behind its control socket.
pub struct RemoteVm {
    sock: PathBuf,
}

impl RemoteVm {
    fn get(&self, path: &str) -> Result<serde_json::Value, CtlError> {
        let body = call(&self.sock, "GET", path, "")?;
        Ok(serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
    }
}

/// The policy's report from a `GET /memory/guest` answer, with its age.
pub fn report_from_api(v: &serde_json::Value) -> Option<(Report, u64)> {
    let l = &v["latest"];
    let kib = |k: &str| l[k].as_u64();
    let report = Report {
        committed_mib: kib("committed_as_kib")? >> 10,
        visible_mib: kib("mem_total_kib")? >> 10,
        available_mib: kib("mem_available_kib")? >> 10,
        psi_some_avg10: l["psi"]["some_avg10"].as_f64().map(|p| p as f32),
        timestamp_ms: kib("uptime_ms")?,
        received_ms: 0,
    };
    Some((report, l["age_ms"].as_u64()?))
}

impl VmPort for RemoteVm {
    fn latest(&mut self) -> Option<(Report, u64)> {
        match self.get("/memory/guest") {
            Ok(v) => report_from_api(&v),
            Err(e) => {
                log::debug!("balance: {}: {e}", self.sock.display());
                None
            }
        }
    }

    fn apply(&mut self, action: &Action) -> Result<(), ApplyError> {
        let (what, path, body) = match *action {
            Action::Inflate { to_balloon_mib } | Action::Deflate { to_balloon_mib } => (
                "set the balloon target",
                "/balloon",
                format!("{{\"target_mib\":{to_balloon_mib}}}"),
            ),
            Action::HotAdd { slots, slot_mib } => (
                "hot-add memory",
                "/memory",
                format!("{{\"size_mib\":{}}}", u64::from(slots) * slot_mib),
            ),
        };
        call(&self.sock, "PUT", path, &body)
            .map(|_| ())
            .map_err(|e| ApplyError::Failed {
                what,
                detail: e.to_string(),
            })
    }
}

/// What one VM's API says about its memory: (boot MiB, maximum MiB, slot
/// MiB, has a balloon).
fn probe(sock: &Path) -> Result<(u64, u64, u64, bool), BalanceError> {
    let api = |source| BalanceError::Api {
        sock: sock.to_path_buf(),
        source,
    };
    if call(sock, "GET", "/balancer", "").is_ok() {
        return Err(BalanceError::OwnBalancer(sock.to_path_buf()));
    }
    let balloon = match call(sock, "GET", "/balloon", "") {
        Ok(_) => true,
        Err(CtlError::Refused { status: 400, .. }) => false,
        Err(e) => return Err(api(e)),
    };
    match call(sock, "GET", "/memory", "") {
        Ok(body) => {
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            let (Some(boot), Some(max)) = (v["boot_mib"].as_u64(), v["max_mib"].as_u64()) else {
                return Err(BalanceError::Answer {
                    sock: sock.to_path_buf(),
                    what: "GET /memory",
                    body,
                });
            };
            let slot = v["slots"][0]["size_mib"].as_u64().unwrap_or(128);
            Ok((boot, max, slot, balloon))
        }
        // No hot-add slots: the VM cannot grow past its boot memory; its
        // boot memory is what the balloon route calls guest RAM.
        Err(CtlError::Refused { status: 400, .. }) => {
            let body = call(sock, "GET", "/balloon", "").map_err(api)?;
            let v: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            let boot = v["guest_ram_mib"].as_u64().ok_or(BalanceError::Answer {
                sock: sock.to_path_buf(),
                what: "GET /balloon",
                body: body.clone(),
            })?;
            Ok((boot, boot, 128, balloon))
        }
        Err(e) => Err(api(e)),
    }
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
}

/// Runs the balancer until the duration ends or every VM is gone; returns
/// the recorded trace.
pub fn run(opts: &BalanceOptions) -> Result<Trace, BalanceError> {
    let mut vms: Vec<(VmSettings, Box<dyn VmPort>)> = Vec::new();
    let mut slot_mib = 128;
    for (i, arg) in opts.vms.iter().enumerate() {
        let (boot, max, slot, balloon) = probe(&arg.sock)?;
        slot_mib = slot;
        let name = arg.name.clone().unwrap_or_else(|| format!("vm{i}"));
        let minimum = if balloon {
            arg.minimum_mib.unwrap_or(boot / 2)
        } else {
            boot
        };
        let mut s = VmSettings::new(&name, boot, minimum, max);
        s.weight = arg.weight.unwrap_or(s.weight);
        s.buffer_pct = arg.buffer_pct.unwrap_or(s.buffer_pct);
        println!(
            "memtide balance: {name} ({}): boot {boot} MiB, range [{minimum}, {max}] MiB, weight {}, buffer {} %",
            arg.sock.display(),
            s.weight,
            s.buffer_pct
        );
        vms.push((
            s,
            Box::new(RemoteVm {
                sock: arg.sock.clone(),
            }),
        ));
    }
    let settings: Vec<VmSettings> = vms.iter().map(|(s, _)| s.clone()).collect();
    let policy = PolicyConfig {
        slot_mib,
        ..PolicyConfig::default()
    };
    let mut driver = Driver::new(policy, vms, opts.budget_mib)?;
    let status = driver.status();
    if let Some(sock) = &opts.api_sock {
        crate::api::start(sock, crate::api::ApiState::balancer_only(status.clone()))?;
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
    fn api_reports_convert_to_policy_reports() {
        let v = serde_json::json!({"latest": {
            "mem_total_kib": 262144, "mem_available_kib": 131072,
            "committed_as_kib": 204800, "uptime_ms": 9000, "age_ms": 120,
            "psi": {"some_avg10": 1.5}
        }});
        let (r, age) = report_from_api(&v).expect("report");
        assert_eq!(
            (r.visible_mib, r.available_mib, r.committed_mib),
            (256, 128, 200)
        );
        assert_eq!((r.timestamp_ms, age), (9000, 120));
        assert_eq!(r.psi_some_avg10, Some(1.5));
        assert!(report_from_api(&serde_json::json!({"latest": null})).is_none());
    }
}
