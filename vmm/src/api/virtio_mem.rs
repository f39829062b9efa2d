//! `GET` and `PUT /memory/virtio-mem`: the virtio-mem device's sizes and
//! counters, and the size the guest is asked to plug.

use std::sync::atomic::{AtomicU64, Ordering};

use memtide_api::{VirtioMemCounters, VirtioMemStatus, VirtioMemTarget};
use memtide_devices::virtio::mem::{RequestedSizeError, VirtioMemShared};

use super::http::{Request, Response};
use super::routes::ok_json;

const MIB: u64 = 1 << 20;

/// The status answer.
fn status(v: &VirtioMemShared) -> VirtioMemStatus {
    let s = v.status();
    let k = &v.counters;
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    VirtioMemStatus {
        requested_mib: s.requested / MIB,
        plugged_mib: s.plugged / MIB,
        block_size_mib: s.region.block_size / MIB,
        region_base: s.region.base,
        region_mib: s.region.size / MIB,
        driver_ready: s.driver_ready,
        counters: VirtioMemCounters {
            plug_requests: c(&k.plug_requests),
            unplug_requests: c(&k.unplug_requests),
            unplug_all_requests: c(&k.unplug_all_requests),
            state_requests: c(&k.state_requests),
            nacks: c(&k.nacks),
            errors: c(&k.errors),
            malformed_requests: c(&k.malformed_requests),
            discard_calls: c(&k.discard_calls),
            discard_errors: c(&k.discard_errors),
            discard_ns: c(&k.discard_ns),
        },
    }
}

/// Answers `/memory/virtio-mem`.
pub fn route(virtio_mem: Option<&VirtioMemShared>, req: &Request) -> Response {
    let Some(v) = virtio_mem else {
        return Response::error(
            400,
            "this VM has no virtio-mem device (start it with --virtio-mem-mib N)",
        );
    };
    match req.method.as_str() {
        "GET" => ok_json(&status(v)),
        "PUT" => {
            let t: VirtioMemTarget = match serde_json::from_slice(&req.body) {
                Ok(t) => t,
                Err(e) => {
                    return Response::error(400, &format!("expected {{\"requested_mib\": N}}: {e}"))
                }
            };
            match v.set_requested_mib(t.requested_mib) {
                Ok(()) => Response::no_content(),
                Err(e @ RequestedSizeError::Signal(_)) => Response::error(500, &e.to_string()),
                Err(e) => Response::error(400, &e.to_string()),
            }
        }
        _ => Response::error(405, "method not allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtide_devices::virtio::mem::RegionInfo;

    fn req(method: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: "/memory/virtio-mem".into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn refusals_are_400_and_change_nothing() {
        let v = VirtioMemShared::new(RegionInfo {
            base: 1 << 32,
            size: 256 * MIB,
            block_size: 2 * MIB,
        })
        .expect("shared");
        assert_eq!(route(None, &req("GET", "")).status, 400);
        let r = route(Some(&v), &req("GET", ""));
        assert_eq!(r.status, 200);
        let s: VirtioMemStatus = serde_json::from_str(&r.body).expect("typed");
        assert_eq!(
            (
                s.region_base,
                s.region_mib,
                s.block_size_mib,
                s.driver_ready
            ),
            (1 << 32, 256, 2, false)
        );
        for body in [
            "",
            "{",
            "{\"requested\": 2}",
            "{\"requested_mib\": -2}",
            "{\"requested_mib\": 128}", // not activated
        ] {
            let r = route(Some(&v), &req("PUT", body));
            assert_eq!(r.status, 400, "{body}: {}", r.body);
        }
        assert!(route(Some(&v), &req("PUT", "{\"requested_mib\": 128}"))
            .body
            .contains("not activated"));
        assert_eq!(route(Some(&v), &req("DELETE", "")).status, 405);
        assert_eq!(v.requested(), 0);
    }
}
