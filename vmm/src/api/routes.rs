//! The control API's routes, independent of sockets.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/balloon` | target, actual and inflated MiB, driver state, guest RAM resident on the host |
//! | PUT | `/balloon` | `{"target_mib": N}`: set the balloon target |
//! | GET | `/balloon/statistics` | the guest's latest balloon statistics and the host-side counters |
//! | GET | `/memory` | boot, plugged and maximum MiB, and every hot-add slot |
//! | PUT | `/memory` | `{"size_mib": N}`: hot-add N MiB (whole slots, up to the maximum) |

use std::sync::atomic::Ordering;
use std::sync::Arc;

use memtide_devices::virtio::balloon::BalloonShared;
use serde::Deserialize;

use super::http::{Request, Response};

/// What the routes can see and change.
pub struct ApiState {
    /// The balloon, if the VM has one.
    pub balloon: Option<Arc<BalloonShared>>,
    /// Memory hot-add, if the VM has slots.
    pub hotplug: Option<Arc<std::sync::Mutex<crate::hot_add::MemoryHotplug>>>,
    /// Boot RAM in MiB (with hot-added memory: the upper bound for balloon
    /// targets).
    pub ram_mib: u64,
    /// Measures host-resident guest RAM in MiB.
    pub resident_mib: Box<dyn Fn() -> u64 + Send + Sync>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalloonTarget {
    target_mib: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HotAdd {
    size_mib: u64,
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
            let slots: Vec<_> = s
                .slots
                .iter()
                .map(|sl| {
                    serde_json::json!({
                        "base": sl.base,
                        "size_mib": sl.size_mib,
                        "present": sl.present,
                        "ost_status": sl.ost_status,
                        "online_ms": sl.online_ms,
                    })
                })
                .collect();
            Response::json(
                200,
                serde_json::json!({
                    "boot_mib": s.boot_mib,
                    "plugged_mib": s.plugged_mib,
                    "max_mib": s.max_mib,
                    "slots": slots,
                })
                .to_string(),
            )
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
                Err(crate::hot_add::HotAddError::Refused(e)) => {
                    Response::error(400, &e.to_string())
                }
                Err(e) => Response::error(500, &e.to_string()),
            }
        }
        _ => Response::error(405, "method not allowed"),
    }
}

/// Guest RAM now: boot memory plus hot-added memory.
fn ram_mib(state: &ApiState) -> u64 {
    state
        .hotplug
        .as_ref()
        .map_or(state.ram_mib, |h| crate::api::lock(h).status().plugged_mib)
}

/// Answers one request.
pub fn handle(state: &ApiState, req: &Request) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/balloon") => with_balloon(state, |b| {
            let s = b.status();
            Response::json(
                200,
                serde_json::json!({
                    "target_mib": s.target_mib,
                    "actual_mib": s.actual_mib,
                    "inflated_mib": s.inflated_mib,
                    "driver_ready": s.driver_ready,
                    "guest_ram_mib": ram_mib(state),
                    "guest_ram_resident_mib": (state.resident_mib)(),
                })
                .to_string(),
            )
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
            let guest = stats.map(|s| {
                serde_json::json!({
                    "total_memory": s.total_memory,
                    "free_memory": s.free_memory,
                    "available_memory": s.available_memory,
                    "disk_caches": s.disk_caches,
                    "swap_in": s.swap_in,
                    "swap_out": s.swap_out,
                    "major_faults": s.major_faults,
                    "minor_faults": s.minor_faults,
                    "updated_ms": s.updated_ms,
                })
            });
            Response::json(
                200,
                serde_json::json!({
                    "guest": guest,
                    "host": {
                        "inflate_requests": c(&k.inflate_requests),
                        "deflate_requests": c(&k.deflate_requests),
                        "pfns_out_of_range": c(&k.pfns_out_of_range),
                        "pfns_duplicate": c(&k.pfns_duplicate),
                        "malformed_descriptors": c(&k.malformed_descriptors),
                        "discard_calls": c(&k.discard_calls),
                        "discard_errors": c(&k.discard_errors),
                        "discard_ns": c(&k.discard_ns),
                        "reported_pages": c(&k.reported_pages),
                    }
                })
                .to_string(),
            )
        }),
        (_, "/balloon" | "/balloon/statistics") => Response::error(405, "method not allowed"),
        (_, "/memory") => memory_route(state, req),
        _ => Response::error(404, &format!("no route for {} {}", req.method, req.path)),
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
            ram_mib: 256,
            resident_mib: Box::new(|| 42),
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
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["target_mib"], 64);
        assert_eq!(v["guest_ram_resident_mib"], 42);
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
    fn statistics_without_guest_report_are_null() {
        let r = handle(&state(true), &req("GET", "/balloon/statistics", ""));
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert!(v["guest"].is_null());
        assert_eq!(v["host"]["inflate_requests"], 0);
    }
}
