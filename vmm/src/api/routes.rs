//! The control API's routes, independent of sockets.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/balloon` | target, actual and inflated MiB, driver state, guest RAM resident on the host |
//! | PUT | `/balloon` | `{"target_mib": N}`: set the balloon target |
//! | GET | `/balloon/statistics` | the guest's latest balloon statistics and the host-side counters |
//! | GET | `/memory` | boot, plugged and maximum MiB, and every hot-add slot |
//! | PUT | `/memory` | `{"size_mib": N}`: hot-add N MiB (whole slots, up to the maximum) |
//! | GET | `/memory/virtio-mem` | requested and plugged MiB, block size, region, driver state, counters |
//! | PUT | `/memory/virtio-mem` | `{"requested_mib": N}`: the size the guest is asked to plug |
//! | GET | `/memory/guest` | the guest memory agent's latest report, its age and the reader's counters |
//! | GET | `/vsock` | the vsock driver state, guest CID, connections and packet counters |
//! | GET | `/balancer` | budget and, per VM, assigned, demand, pressure, the last decision and its reason |
//! | POST | `/balancer/admit` | `{"startup_mib", "minimum_mib", "maximum_mib"}`: can such a VM start now while every running VM keeps its minimum, and with how much |
//! | GET | `/metrics` | all of the above in the OpenMetrics text format, for Prometheus (`docs/metrics.md`) |

use std::sync::atomic::Ordering;
use std::sync::Arc;

use memtide_api::{
    AdmitAnswer, AdmitRequest, AgentReport, BalancerStatus, BalancerVm, BalloonHostCounters,
    BalloonStatistics, BalloonStatus, BalloonTarget, GuestBalloonStats, GuestMemory, HotAdd,
    LastAction, MemoryStatus, Psi, SlotStatus, VsockStatus,
};
use memtide_balancer::driver::SharedStatus;
use memtide_balancer::reader::AgentReports;
use memtide_devices::virtio::balloon::BalloonShared;
use memtide_devices::virtio::mem::VirtioMemShared;
use memtide_devices::virtio::vsock::VsockShared;
use serde::Serialize;

use super::http::{Request, Response};

/// A 200 answer with `body` as JSON.
pub(super) fn ok_json<T: Serialize>(body: &T) -> Response {
    match serde_json::to_string(body) {
        Ok(json) => Response::json(200, json),
        Err(e) => Response::error(500, &format!("cannot encode the answer: {e}")),
    }
}

/// What the routes can see and change.
pub struct ApiState {
    /// The balloon, if the VM has one.
    pub balloon: Option<Arc<BalloonShared>>,
    /// Memory hot-add, if the VM has slots.
    pub hotplug: Option<Arc<std::sync::Mutex<crate::memory::hotplug::MemoryHotplug>>>,
    /// virtio-mem, if the VM has the device.
    pub virtio_mem: Option<Arc<VirtioMemShared>>,
    /// Boot RAM in MiB (with hot-added memory: the upper bound for balloon
    /// targets).
    pub ram_mib: u64,
    /// Measures host-resident guest RAM in MiB.
    pub resident_mib: Box<dyn Fn() -> u64 + Send + Sync>,
    /// The guest memory agent's reports, if the VM has a vsock device.
    pub agent: Option<Arc<AgentReports>>,
    /// The vsock device, if any.
    pub vsock: Option<Arc<VsockShared>>,
    /// The balancer's status, if it runs.
    pub balancer: Option<SharedStatus>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `resident_mib` is a closure without `Debug`.
        f.debug_struct("ApiState")
            .field("balloon", &self.balloon)
            .field("hotplug", &self.hotplug)
            .field("virtio_mem", &self.virtio_mem)
            .field("ram_mib", &self.ram_mib)
            .field("agent", &self.agent)
            .field("vsock", &self.vsock)
            .field("balancer", &self.balancer)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state of `memtide balance`: a balancer and no VM of its own
    /// (every VM route answers 400).
    pub fn balancer_only(status: SharedStatus) -> Self {
        Self {
            balloon: None,
            hotplug: None,
            virtio_mem: None,
            ram_mib: 0,
            resident_mib: Box::new(|| 0),
            agent: None,
            vsock: None,
            balancer: Some(status),
        }
    }
}

fn memory_route(state: &ApiState, req: &Request) -> Response {
    let Some(hp) = &state.hotplug else {
        return Response::error(
            400,
            "this VM has no hot-add slots (start it with --hotplug-slots N)",
        );
    };
    match req.method.as_str() {
        "GET" => {
            let s = crate::api::lock(hp).status();
            ok_json(&MemoryStatus {
                boot_mib: s.boot_mib,
                plugged_mib: s.plugged_mib,
                max_mib: s.max_mib,
                slot_mib: s.slots.first().map_or(0, |sl| sl.size_mib),
                slots: s
                    .slots
                    .iter()
                    .map(|sl| SlotStatus {
                        base: sl.base,
                        size_mib: sl.size_mib,
                        present: sl.present,
                        ost_status: sl.ost_status,
                        online_ms: sl.online_ms,
                    })
                    .collect(),
            })
        }
        "PUT" => {
            let add: HotAdd = match serde_json::from_slice(&req.body) {
                Ok(a) => a,
                Err(e) => {
                    return Response::error(400, &format!("expected {{\"size_mib\": N}}: {e}"))
                }
            };
            match crate::api::lock(hp).add(add.size_mib) {
                Ok(_) => Response::no_content(),
                Err(crate::memory::hotplug::HotAddError::Refused(e)) => {
                    Response::error(400, &e.to_string())
                }
                Err(e) => Response::error(500, &e.to_string()),
            }
        }
        _ => Response::error(405, "method not allowed"),
    }
}

/// Guest RAM now: boot memory plus hot-added memory plus plugged
/// virtio-mem memory.
pub(super) fn ram_mib(state: &ApiState) -> u64 {
    let boot_and_slots = state
        .hotplug
        .as_ref()
        .map_or(state.ram_mib, |h| crate::api::lock(h).status().plugged_mib);
    let virtio_mem = state.virtio_mem.as_ref().map_or(0, |v| v.plugged() >> 20);
    boot_and_slots + virtio_mem
}

/// Answers one request.
pub fn handle(state: &ApiState, req: &Request) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/balloon") => with_balloon(state, |b| {
            let s = b.status();
            ok_json(&BalloonStatus {
                target_mib: s.target_mib,
                actual_mib: s.actual_mib,
                inflated_mib: s.inflated_mib,
                driver_ready: s.driver_ready,
                guest_ram_mib: ram_mib(state),
                guest_ram_resident_mib: (state.resident_mib)(),
            })
        }),
        ("PUT", "/balloon") => with_balloon(state, |b| {
            let target: BalloonTarget = match serde_json::from_slice(&req.body) {
                Ok(t) => t,
                Err(e) => {
                    return Response::error(400, &format!("expected {{\"target_mib\": N}}: {e}"))
                }
            };
            let ram = ram_mib(state);
            if target.target_mib > ram {
                return Response::error(
                    400,
                    &format!(
                        "target_mib {} exceeds guest RAM ({ram} MiB)",
                        target.target_mib
                    ),
                );
            }
            match b.set_target_mib(target.target_mib) {
                Ok(()) => Response::no_content(),
                Err(e) => Response::error(500, &format!("cannot signal the device: {e}")),
            }
        }),
        ("GET", "/balloon/statistics") => with_balloon(state, |b| {
            let stats = crate::api::lock(&b.stats).clone();
            let k = &b.counters;
            let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            let guest = stats.map(|s| GuestBalloonStats {
                total_memory: s.total_memory,
                free_memory: s.free_memory,
                available_memory: s.available_memory,
                disk_caches: s.disk_caches,
                swap_in: s.swap_in,
                swap_out: s.swap_out,
                major_faults: s.major_faults,
                minor_faults: s.minor_faults,
                oom_kills: s.oom_kills,
                alloc_stalls: s.alloc_stalls,
                async_scan: s.async_scan,
                direct_scan: s.direct_scan,
                async_reclaim: s.async_reclaim,
                direct_reclaim: s.direct_reclaim,
                hugetlb_allocations: s.hugetlb_allocations,
                hugetlb_failures: s.hugetlb_failures,
                updated_ms: s.updated_ms,
            });
            ok_json(&BalloonStatistics {
                guest,
                host: BalloonHostCounters {
                    inflate_requests: c(&k.inflate_requests),
                    deflate_requests: c(&k.deflate_requests),
                    pfns_out_of_range: c(&k.pfns_out_of_range),
                    pfns_duplicate: c(&k.pfns_duplicate),
                    malformed_descriptors: c(&k.malformed_descriptors),
                    discard_calls: c(&k.discard_calls),
                    discard_errors: c(&k.discard_errors),
                    discard_ns: c(&k.discard_ns),
                    reported_pages: c(&k.reported_pages),
                },
            })
        }),
        (_, "/balloon" | "/balloon/statistics") => Response::error(405, "method not allowed"),
        (_, "/memory") => memory_route(state, req),
        (_, "/memory/virtio-mem") => super::virtio_mem::route(state.virtio_mem.as_deref(), req),
        ("GET", "/memory/guest") => guest_memory(state),
        ("GET", "/vsock") => vsock_route(state),
        ("GET", "/balancer") => balancer_route(state),
        ("GET", "/metrics") => super::metrics::route(state),
        ("POST", "/balancer/admit") => admit_route(state, req),
        (_, "/vsock" | "/balancer" | "/metrics" | "/balancer/admit") => {
            Response::error(405, "method not allowed")
        }
        (_, "/memory/guest") => Response::error(405, "method not allowed"),
        _ => Response::error(404, &format!("no route for {} {}", req.method, req.path)),
    }
}

/// `GET /memory/guest`: what the guest agent last said, in KiB as the
/// guest's `/proc/meminfo` does, with its age on the host clock.
fn guest_memory(state: &ApiState) -> Response {
    let Some(agent) = &state.agent else {
        return Response::error(
            400,
            "this VM has no guest agent channel (start it with --vsock-uds PATH)",
        );
    };
    let s = agent.snapshot();
    let latest = s.latest.map(|r| {
        let g = r.report;
        AgentReport {
            seq: g.seq,
            uptime_ms: g.uptime_ms,
            age_ms: s.now_ms.saturating_sub(r.received_ms),
            mem_total_kib: g.mem_total_kib,
            mem_free_kib: g.mem_free_kib,
            mem_available_kib: g.mem_available_kib,
            committed_as_kib: g.committed_as_kib,
            commit_limit_kib: g.commit_limit_kib,
            swap_total_kib: g.swap_total_kib,
            swap_free_kib: g.swap_free_kib,
            pressure_pct: (g.mem_total_kib > 0).then(|| g.committed_as_kib * 100 / g.mem_total_kib),
            psi: g.psi.map(|p| Psi {
                some_avg10: f64::from(p.some_avg10_centi) / 100.0,
                full_avg10: f64::from(p.full_avg10_centi) / 100.0,
                some_total_us: p.some_total_us,
                full_total_us: p.full_total_us,
            }),
        }
    });
    ok_json(&GuestMemory {
        latest,
        reports: s.reports,
        rejected: s.rejected,
        connections: s.connections,
        last_error: s.last_error,
    })
}

/// `GET /vsock`: the device's state and counters.
fn vsock_route(state: &ApiState) -> Response {
    let Some(v) = &state.vsock else {
        return Response::error(
            400,
            "this VM has no vsock device (start it with --vsock-uds PATH)",
        );
    };
    let s = v.status();
    ok_json(&VsockStatus {
        driver_ready: s.driver_ready,
        guest_cid: s.guest_cid,
        connections: s.connections,
        connections_opened: s.connections_opened,
        connections_reset: s.connections_reset,
        tx_packets: s.tx_packets,
        rx_packets: s.rx_packets,
        tx_bytes: s.tx_bytes,
        rx_bytes: s.rx_bytes,
        malformed_packets: s.malformed_packets,
    })
}

/// `GET /balancer`: the budget and one line per VM.
fn balancer_route(state: &ApiState) -> Response {
    let Some(b) = &state.balancer else {
        return Response::error(
            400,
            "no balancer runs for this VM (it needs --vsock-uds and no --no-balancer)",
        );
    };
    let s = memtide_balancer::driver::summary(b);
    ok_json(&BalancerStatus {
        budget_mib: s.budget_mib,
        ticks: s.ticks,
        assigned_total_mib: s.vms.iter().map(|v| v.assigned_mib).sum::<u64>(),
        vms: s
            .vms
            .into_iter()
            .map(|v| BalancerVm {
                name: v.name,
                assigned_mib: v.assigned_mib,
                plugged_mib: v.plugged_mib,
                balloon_mib: v.balloon_mib,
                virtio_mem_mib: v.virtio_mem_mib,
                virtio_mem_plugged_mib: v.virtio_mem_plugged_mib,
                demand_mib: v.demand_mib,
                committed_mib: v.committed_mib,
                pressure_pct: v.pressure_pct,
                reason: v.reason,
                last_action: v
                    .last_action
                    .map(|(t_ms, reason)| LastAction { t_ms, reason }),
                last_error: v.last_error,
            })
            .collect(),
    })
}

/// `POST /balancer/admit`: admission against the balancer's budget and
/// its VMs' current memory and minimums.
fn admit_route(state: &ApiState, req: &Request) -> Response {
    use memtide_balancer::admit::{admit, Candidate, Running};
    let Some(b) = &state.balancer else {
        return Response::error(
            400,
            "no balancer runs here (admission needs memtide balance or a VM's own balancer)",
        );
    };
    let ask: AdmitRequest = match serde_json::from_slice(&req.body) {
        Ok(a) => a,
        Err(e) => {
            return Response::error(
                400,
                &format!(
                    "expected {{\"startup_mib\": N, \"minimum_mib\": N, \"maximum_mib\": N}}: {e}"
                ),
            )
        }
    };
    let s = memtide_balancer::driver::summary(b);
    let running: Vec<Running> = s
        .vms
        .iter()
        .map(|v| Running {
            name: v.name.clone(),
            assigned_mib: v.assigned_mib,
            minimum_mib: v.minimum_mib,
        })
        .collect();
    let candidate = Candidate {
        startup_mib: ask.startup_mib,
        minimum_mib: ask.minimum_mib,
        maximum_mib: ask.maximum_mib,
    };
    match admit(s.budget_mib, &running, &candidate) {
        Ok(a) => ok_json(&AdmitAnswer {
            admit: a.admit,
            memory_mib: a.memory_mib,
            free_now_mib: a.free_now_mib,
            reclaim_mib: a.reclaim_mib,
            reason: a.reason,
        }),
        Err(e) => Response::error(400, &e.to_string()),
    }
}

fn with_balloon(state: &ApiState, f: impl FnOnce(&BalloonShared) -> Response) -> Response {
    match &state.balloon {
        Some(b) => f(b),
        None => Response::error(400, "this VM has no balloon (start it with --balloon)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(balloon: bool) -> ApiState {
        ApiState {
            balloon: balloon.then(|| Arc::new(BalloonShared::new().expect("shared"))),
            hotplug: None,
            virtio_mem: None,
            ram_mib: 256,
            resident_mib: Box::new(|| 42),
            agent: Some(Arc::new(AgentReports::new())),
            vsock: None,
            balancer: None,
        }
    }

    fn req(method: &str, path: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn set_and_get_target() {
        let s = state(true);
        assert_eq!(
            handle(&s, &req("PUT", "/balloon", "{\"target_mib\": 64}")).status,
            204
        );
        let r = handle(&s, &req("GET", "/balloon", ""));
        assert_eq!(r.status, 200);
        let v: BalloonStatus = serde_json::from_str(&r.body).expect("typed answer");
        assert_eq!((v.target_mib, v.guest_ram_resident_mib), (64, 42));
    }

    #[test]
    fn bad_requests_get_4xx_and_change_nothing() {
        let s = state(true);
        for body in [
            "",
            "{",
            "{\"target\": 1}",
            "{\"target_mib\": -1}",
            "{\"target_mib\": 300}",
        ] {
            let r = handle(&s, &req("PUT", "/balloon", body));
            assert_eq!(r.status, 400, "body {body:?}: {}", r.body);
        }
        assert_eq!(s.balloon.as_ref().map(|b| b.status().target_mib), Some(0));
        assert_eq!(handle(&s, &req("DELETE", "/balloon", "")).status, 405);
        assert_eq!(handle(&s, &req("GET", "/nope", "")).status, 404);
        assert_eq!(
            handle(&state(false), &req("GET", "/balloon", "")).status,
            400
        );
    }

    #[test]
    fn guest_memory_shows_the_latest_agent_report() {
        let s = state(false);
        let r = handle(&s, &req("GET", "/memory/guest", ""));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert!(v["latest"].is_null());
        let report = memtide_agent_proto::GuestReport {
            seq: 9,
            uptime_ms: 5000,
            mem_total_kib: 200_000,
            mem_free_kib: 50_000,
            mem_available_kib: 120_000,
            committed_as_kib: 150_000,
            commit_limit_kib: 100_000,
            swap_total_kib: 0,
            swap_free_kib: 0,
            psi: None,
        };
        if let Some(a) = &s.agent {
            a.accept(Ok(report));
        }
        let r = handle(&s, &req("GET", "/memory/guest", ""));
        assert_eq!(r.status, 200);
        let typed: GuestMemory = serde_json::from_str(&r.body).expect("typed answer");
        assert_eq!(typed.latest.map(|l| l.pressure_pct), Some(Some(75)));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["latest"]["seq"], 9);
        assert_eq!(v["latest"]["pressure_pct"], 75);
        assert_eq!(v["reports"], 1);
        assert_eq!(handle(&s, &req("PUT", "/memory/guest", "")).status, 405);
        let mut none = state(false);
        none.agent = None;
        assert_eq!(handle(&none, &req("GET", "/memory/guest", "")).status, 400);
    }

    #[test]
    fn admission_answers_from_the_balancer_status() {
        use memtide_balancer::driver::{BalancerStatus, VmView};
        let status = BalancerStatus {
            budget_mib: 1024,
            vms: vec![VmView {
                name: "a".into(),
                assigned_mib: 768,
                minimum_mib: 256,
                ..VmView::default()
            }],
            ..BalancerStatus::default()
        };
        let s = ApiState::balancer_only(Arc::new(std::sync::Mutex::new(status)));
        let ask = |body: &str| handle(&s, &req("POST", "/balancer/admit", body));
        let r = ask("{\"startup_mib\": 512, \"minimum_mib\": 256, \"maximum_mib\": 1024}");
        assert_eq!(r.status, 200, "{}", r.body);
        let a: AdmitAnswer = serde_json::from_str(&r.body).expect("typed answer");
        assert_eq!(
            (a.admit, a.memory_mib, a.free_now_mib, a.reclaim_mib),
            (true, 512, 256, 256)
        );
        let r = ask("{\"startup_mib\": 1024, \"minimum_mib\": 800, \"maximum_mib\": 1024}");
        let a: AdmitAnswer = serde_json::from_str(&r.body).expect("typed answer");
        assert!(!a.admit, "{a:?}");
        assert_eq!(ask("{\"startup_mib\": 1}").status, 400);
        assert_eq!(
            ask("{\"startup_mib\": 64, \"minimum_mib\": 128, \"maximum_mib\": 64}").status,
            400
        );
        assert_eq!(handle(&s, &req("GET", "/balancer/admit", "")).status, 405);
        assert_eq!(
            handle(&state(true), &req("POST", "/balancer/admit", "{}")).status,
            400
        );
    }

    #[test]
    fn statistics_without_guest_report_are_null() {
        let r = handle(&state(true), &req("GET", "/balloon/statistics", ""));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert!(v["guest"].is_null());
        assert_eq!(v["host"]["inflate_requests"], 0);
    }
}
