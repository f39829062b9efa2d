//! `GET /metrics`: the VM's (or `memtide balance`'s) state in the
//! OpenMetrics text format that Prometheus scrapes, encoded with the
//! `prometheus-client` crate. Each request takes a snapshot of the live
//! state ([`families`]) and a [`Collector`] writes it out; nothing is
//! stored between scrapes. `docs/metrics.md` lists every metric.

use std::sync::atomic::Ordering;

use memtide_devices::virtio::balloon::latency::HistogramSnapshot;
use memtide_devices::virtio::balloon::PAGE_SIZE;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::http::Response;
use super::routes::ApiState;

mod guest_stats;

/// The exposition's media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One sample's value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// A gauge in whole units.
    Int(i64),
    /// A gauge with a fraction (ratios).
    Float(f64),
    /// A monotonic counter.
    Counter(u64),
    /// A histogram.
    Histogram(HistogramSnapshot),
}

impl EncodeMetric for Value {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Value::Int(v) => encoder.encode_gauge(v),
            Value::Float(v) => encoder.encode_gauge(v),
            Value::Counter(v) => encoder.encode_counter::<NoLabelSet, _, u64>(v, None),
            Value::Histogram(h) => {
                encoder.encode_histogram::<NoLabelSet>(h.sum_s, h.count, &h.buckets, None)
            }
        }
    }

    fn metric_type(&self) -> MetricType {
        match self {
            Value::Int(_) | Value::Float(_) => MetricType::Gauge,
            Value::Counter(_) => MetricType::Counter,
            Value::Histogram(_) => MetricType::Histogram,
        }
    }
}

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// One metric family: a name (without the `memtide_` prefix, the unit
/// suffix and `_total`, which the encoder adds), help, unit and samples.
#[derive(Debug, Clone, PartialEq)]
struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    samples: Vec<(Labels, Value)>,
}

/// The families of one scrape, built up one metric at a time.
#[derive(Debug, Default)]
struct Families(Vec<Family>);

impl Families {
    fn push(&mut self, name: &'static str, help: &'static str, unit: Option<Unit>, v: Value) {
        self.labelled(name, help, unit, Vec::new(), v);
    }

    /// Adds a sample, to the family of that name if it exists.
    fn labelled(
        &mut self,
        name: &'static str,
        help: &'static str,
        unit: Option<Unit>,
        labels: Labels,
        v: Value,
    ) {
        if let Some(f) = self.0.iter_mut().find(|f| f.name == name) {
            f.samples.push((labels, v));
        } else {
            self.0.push(Family {
                name,
                help,
                unit,
                samples: vec![(labels, v)],
            });
        }
    }
}

/// MiB as bytes, saturating.
fn mib_bytes(mib: u64) -> Value {
    Value::Int(i64::try_from(mib.saturating_mul(1 << 20)).unwrap_or(i64::MAX))
}

/// KiB as bytes, saturating.
fn kib_bytes(kib: u64) -> Value {
    Value::Int(i64::try_from(kib.saturating_mul(1 << 10)).unwrap_or(i64::MAX))
}

/// `a / b` as a ratio (0 when `b` is 0).
fn ratio(a: u64, b: u64) -> Value {
    // Memory sizes far below 2^52 convert exactly.
    #[allow(clippy::cast_precision_loss)]
    let r = if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Value::Float(r)
}

/// The balloon's families.
fn balloon(f: &mut Families, b: &memtide_devices::virtio::balloon::BalloonShared) {
    let s = b.status();
    let k = &b.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let bytes = |a: &std::sync::atomic::AtomicU64| Value::Counter(n(a).saturating_mul(PAGE_SIZE));
    // Nanoseconds to seconds.
    #[allow(clippy::cast_precision_loss)]
    let discard_s = n(&k.discard_ns) as f64 / 1e9;
    let table: [(&'static str, &'static str, Option<Unit>, Value); 15] = [
        (
            "balloon_target",
            "Balloon size the host asks for.",
            Some(Unit::Bytes),
            mib_bytes(s.target_mib),
        ),
        (
            "balloon_actual",
            "Balloon size the guest driver reports (never above what the host saw inflated).",
            Some(Unit::Bytes),
            mib_bytes(s.actual_mib),
        ),
        (
            "balloon_host_inflated",
            "Guest memory the host has discarded and not seen deflated.",
            Some(Unit::Bytes),
            mib_bytes(s.inflated_mib),
        ),
        (
            "balloon_inflate_requests",
            "Inflate buffers the guest sent.",
            None,
            Value::Counter(n(&k.inflate_requests)),
        ),
        (
            "balloon_deflate_requests",
            "Deflate buffers the guest sent.",
            None,
            Value::Counter(n(&k.deflate_requests)),
        ),
        (
            "balloon_inflate",
            "Memory the guest gave up through the balloon.",
            Some(Unit::Bytes),
            bytes(&k.inflated_pages_total),
        ),
        (
            "balloon_deflate",
            "Memory the guest took back from the balloon.",
            Some(Unit::Bytes),
            bytes(&k.deflated_pages_total),
        ),
        (
            "balloon_reported",
            "Free memory the guest reported (free page reporting).",
            Some(Unit::Bytes),
            bytes(&k.reported_pages),
        ),
        (
            "balloon_malformed_descriptors",
            "Balloon descriptors refused as malformed.",
            None,
            Value::Counter(n(&k.malformed_descriptors)),
        ),
        (
            "balloon_discard_calls",
            "madvise calls that returned ballooned memory to the host.",
            None,
            Value::Counter(n(&k.discard_calls)),
        ),
        (
            "balloon_discard_errors",
            "madvise calls that failed.",
            None,
            Value::Counter(n(&k.discard_errors)),
        ),
        (
            "balloon_discard_seconds",
            "Time spent returning ballooned memory to the host.",
            None,
            Value::Float(discard_s),
        ),
        (
            "balloon_resize_superseded",
            "Balloon targets replaced before the guest reached them (not timed).",
            None,
            Value::Counter(b.latency.superseded.load(Ordering::Relaxed)),
        ),
        (
            "balloon_partial_blocks",
            "2 MiB host blocks partly ballooned now (kept out of khugepaged's reach).",
            None,
            Value::Int(i64::try_from(n(&k.partial_blocks)).unwrap_or(i64::MAX)),
        ),
        (
            "balloon_discard_whole_blocks",
            "2 MiB host blocks discarded whole (every page ballooned).",
            None,
            Value::Counter(n(&k.whole_block_discards)),
        ),
    ];
    for (name, help, unit, value) in table {
        f.push(name, help, unit, value);
    }
    if let Some(stats) = super::lock(&b.stats).as_ref() {
        guest_stats::families(f, stats);
    }
    for (reason, counter) in [
        ("out_of_range", &k.pfns_out_of_range),
        ("duplicate", &k.pfns_duplicate),
    ] {
        f.labelled(
            "balloon_rejected_pages",
            "Page numbers from the guest that were refused.",
            None,
            vec![("reason", reason.to_string())],
            Value::Counter(n(counter)),
        );
    }
    for (direction, h) in [
        ("inflate", &b.latency.inflate),
        ("deflate", &b.latency.deflate),
    ] {
        f.labelled(
            "balloon_resize_duration",
            "From a new balloon target to the guest reporting it reached, per direction.",
            Some(Unit::Seconds),
            vec![("direction", direction.to_string())],
            Value::Histogram(h.snapshot()),
        );
    }
}

/// The virtio-mem device's families.
fn virtio_mem(f: &mut Families, v: &memtide_devices::virtio::mem::VirtioMemShared) {
    let s = v.status();
    let k = &v.counters;
    let n = |a: &std::sync::atomic::AtomicU64| Value::Counter(a.load(Ordering::Relaxed));
    let bytes = |b: u64| Value::Int(i64::try_from(b).unwrap_or(i64::MAX));
    f.push(
        "virtio_mem_requested",
        "Memory the host asks the guest to plug.",
        Some(Unit::Bytes),
        bytes(s.requested),
    );
    f.push(
        "virtio_mem_plugged",
        "Memory the guest has plugged.",
        Some(Unit::Bytes),
        bytes(s.plugged),
    );
    for (kind, counter) in [
        ("plug", &k.plug_requests),
        ("unplug", &k.unplug_requests),
        ("unplug_all", &k.unplug_all_requests),
        ("state", &k.state_requests),
    ] {
        f.labelled(
            "virtio_mem_requests",
            "Requests from the guest driver, by kind.",
            None,
            vec![("kind", kind.to_string())],
            n(counter),
        );
    }
    f.push(
        "virtio_mem_nacks",
        "Requests answered NACK.",
        None,
        n(&k.nacks),
    );
    f.push(
        "virtio_mem_malformed_requests",
        "Requests refused as malformed.",
        None,
        n(&k.malformed_requests),
    );
    f.push(
        "virtio_mem_discard_errors",
        "madvise calls on unplugged blocks that failed.",
        None,
        n(&k.discard_errors),
    );
}

/// The guest agent's families.
fn agent(f: &mut Families, a: &memtide_balancer::reader::AgentReports) {
    let s = a.snapshot();
    let bytes = Some(Unit::Bytes);
    if let Some(r) = &s.latest {
        let g = r.report;
        f.push(
            "guest_committed",
            "Committed_AS from the guest agent's latest report.",
            bytes.clone(),
            kib_bytes(g.committed_as_kib),
        );
        f.push(
            "guest_visible",
            "MemTotal from the guest agent's latest report.",
            bytes.clone(),
            kib_bytes(g.mem_total_kib),
        );
        f.push(
            "guest_available",
            "MemAvailable from the guest agent's latest report.",
            bytes,
            kib_bytes(g.mem_available_kib),
        );
        f.push(
            "guest_pressure_ratio",
            "Committed over visible memory (1 = 100 % pressure).",
            None,
            ratio(g.committed_as_kib, g.mem_total_kib),
        );
        if let Some(p) = g.psi {
            for (kind, centi) in [("some", p.some_avg10_centi), ("full", p.full_avg10_centi)] {
                f.labelled(
                    "guest_psi_memory_avg10_ratio",
                    "Share of the last 10 s the guest's tasks stalled on memory (PSI).",
                    None,
                    vec![("kind", kind.to_string())],
                    Value::Float(f64::from(centi) / 10_000.0),
                );
            }
        }
        let age_ms = s.now_ms.saturating_sub(r.received_ms);
        f.push(
            "guest_report_age",
            "Age of the guest agent's latest report.",
            Some(Unit::Seconds),
            Value::Float(f64::from(u32::try_from(age_ms).unwrap_or(u32::MAX)) / 1000.0),
        );
    }
    f.push(
        "agent_reports",
        "Guest agent reports accepted.",
        None,
        Value::Counter(s.reports),
    );
    f.push(
        "agent_reports_rejected",
        "Guest agent frames rejected.",
        None,
        Value::Counter(s.rejected),
    );
    f.push(
        "agent_connections",
        "Guest agent connections accepted.",
        None,
        Value::Counter(s.connections),
    );
}

/// The balancer's families, one sample per VM.
fn balancer(f: &mut Families, status: &memtide_balancer::driver::SharedStatus) {
    let s = memtide_balancer::driver::summary(status);
    let bytes = Some(Unit::Bytes);
    f.push(
        "balancer_budget",
        "Host memory the balancer shares out.",
        bytes.clone(),
        mib_bytes(s.budget_mib),
    );
    f.push(
        "balancer_ticks",
        "Balancer steps taken.",
        None,
        Value::Counter(s.ticks),
    );
    for v in &s.vms {
        let vm = || vec![("vm", v.name.clone())];
        f.labelled(
            "balancer_assigned",
            "Memory the balancer gives the VM (plugged minus balloon).",
            bytes.clone(),
            vm(),
            mib_bytes(v.assigned_mib),
        );
        f.labelled(
            "balancer_demand",
            "What the VM should have: committed plus buffer within its bounds.",
            bytes.clone(),
            vm(),
            mib_bytes(v.demand_mib),
        );
        f.labelled(
            "balancer_share_ratio",
            "The VM's assigned memory over the budget.",
            None,
            vm(),
            ratio(v.assigned_mib, s.budget_mib),
        );
        for (kind, n) in [
            ("inflate", v.actions.inflate),
            ("deflate", v.actions.deflate),
            ("hot_add", v.actions.hot_add),
            ("plug", v.actions.plug),
            ("unplug", v.actions.unplug),
            ("keep_plugged", v.actions.keep_plugged),
        ] {
            f.labelled(
                "balancer_actions",
                "Actions the balancer decided, by kind.",
                None,
                vec![("vm", v.name.clone()), ("kind", kind.to_string())],
                Value::Counter(n),
            );
        }
        f.labelled(
            "balancer_action_errors",
            "Actions that could not be applied.",
            None,
            vm(),
            Value::Counter(v.errors),
        );
    }
}

/// Every family `state` has now.
fn families(state: &ApiState) -> Families {
    let mut f = Families::default();
    let bytes = Some(Unit::Bytes);
    let is_vm = state.ram_mib > 0 || state.hotplug.is_some();
    if is_vm {
        let ram = super::routes::ram_mib(state);
        f.push(
            "guest_ram",
            "Guest RAM: boot plus hot-added memory.",
            bytes.clone(),
            mib_bytes(ram),
        );
        f.push(
            "guest_ram_resident",
            "Guest RAM resident on the host.",
            bytes.clone(),
            mib_bytes((state.resident_mib)()),
        );
    }
    if let Some(hp) = &state.hotplug {
        let s = super::lock(hp).status();
        f.push(
            "hotplug_plugged",
            "Boot plus hot-added memory.",
            bytes.clone(),
            mib_bytes(s.plugged_mib),
        );
        f.push(
            "hotplug_max",
            "Most memory hot-add can reach.",
            bytes,
            mib_bytes(s.max_mib),
        );
    }
    if let Some(b) = &state.balloon {
        balloon(&mut f, b);
    }
    if let Some(v) = &state.virtio_mem {
        virtio_mem(&mut f, v);
    }
    if let Some(a) = &state.agent {
        agent(&mut f, a);
    }
    if let Some(v) = &state.vsock {
        let s = v.status();
        f.push(
            "vsock_connections",
            "Open vsock connections.",
            None,
            Value::Int(i64::try_from(s.connections).unwrap_or(i64::MAX)),
        );
        f.push(
            "vsock_tx",
            "Bytes the guest sent over vsock.",
            Some(Unit::Bytes),
            Value::Counter(s.tx_bytes),
        );
        f.push(
            "vsock_rx",
            "Bytes the host sent to the guest over vsock.",
            Some(Unit::Bytes),
            Value::Counter(s.rx_bytes),
        );
        f.push(
            "vsock_malformed_packets",
            "vsock packets refused as malformed.",
            None,
            Value::Counter(s.malformed_packets),
        );
    }
    if let Some(b) = &state.balancer {
        balancer(&mut f, b);
    }
    f
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let Some((_, first)) = family.samples.first() else {
                continue;
            };
            let mut metric = encoder.encode_descriptor(
                family.name,
                family.help,
                family.unit.as_ref(),
                first.metric_type(),
            )?;
            if let [(labels, value)] = family.samples.as_slice() {
                if labels.is_empty() {
                    value.encode(metric)?;
                    continue;
                }
            }
            for (labels, value) in &family.samples {
                value.encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

/// `GET /metrics`.
pub fn route(state: &ApiState) -> Response {
    let mut registry = Registry::with_prefix("memtide");
    registry.register_collector(Box::new(families(state)));
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &registry) {
        Ok(()) => Response::ok_with(CONTENT_TYPE, text),
        Err(e) => Response::error(500, &format!("cannot encode the metrics: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use memtide_balancer::driver::{BalancerStatus, VmView};
    use memtide_balancer::reader::AgentReports;
    use memtide_devices::virtio::balloon::BalloonShared;

    use super::*;

    /// A sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the OpenMetrics text strictly enough to catch a malformed
    /// exposition: every line is a `# HELP`/`# TYPE`/`# UNIT` comment, a
    /// sample `name{l="v",...} value`, or the final `# EOF`; every sample
    /// belongs to the family the last `# TYPE` named.
    fn parse(text: &str) -> Vec<Sample> {
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.pop(), Some("# EOF"), "no # EOF at the end");
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        };
        let mut family = String::new();
        let mut out = Vec::new();
        for line in lines {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap_or_default();
                let name = parts.next().unwrap_or_default();
                assert!(matches!(kind, "HELP" | "TYPE" | "UNIT"), "comment: {line}");
                assert!(valid_name(name), "name in: {line}");
                if kind == "TYPE" {
                    family = name.to_string();
                }
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (
                    n,
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("labels: {line}")),
                ),
                None => (series, ""),
            };
            assert!(
                valid_name(name) && name.starts_with(&family),
                "{name} outside {family}"
            );
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("label: {line}"));
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    (
                        k.to_string(),
                        v.unwrap_or_else(|| panic!("quotes: {line}")).to_string(),
                    )
                })
                .collect();
            out.push((name.to_string(), labels, value));
        }
        out
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    fn state() -> ApiState {
        let balloon = Arc::new(BalloonShared::new().expect("balloon"));
        let agent = Arc::new(AgentReports::new());
        agent.accept(Ok(memtide_agent_proto::GuestReport {
            seq: 1,
            uptime_ms: 1000,
            mem_total_kib: 200 * 1024,
            mem_free_kib: 10 * 1024,
            mem_available_kib: 50 * 1024,
            committed_as_kib: 150 * 1024,
            commit_limit_kib: 100 * 1024,
            swap_total_kib: 0,
            swap_free_kib: 0,
            psi: Some(memtide_agent_proto::MemoryPressure {
                some_avg10_centi: 1250,
                full_avg10_centi: 0,
                some_total_us: 5,
                full_total_us: 0,
            }),
        }));
        let mut view = VmView {
            name: "a".into(),
            assigned_mib: 192,
            ..VmView::default()
        };
        view.actions.inflate = 3;
        let status = BalancerStatus {
            budget_mib: 512,
            vms: vec![view],
            ..BalancerStatus::default()
        };
        ApiState {
            balloon: Some(balloon),
            hotplug: None,
            ram_mib: 256,
            resident_mib: Box::new(|| 100),
            agent: Some(agent),
            vsock: None,
            balancer: Some(Arc::new(Mutex::new(status))),
            virtio_mem: None,
        }
    }

    #[test]
    fn the_exposition_parses_and_carries_the_state() {
        let s = state();
        if let Some(b) = &s.balloon {
            b.set_target_mib(64).expect("target");
        }
        let r = route(&s);
        assert_eq!((r.status, r.content_type), (200, CONTENT_TYPE));
        let samples = parse(&r.body);
        let mib = f64::from(1u32 << 20);
        assert_eq!(
            value(&samples, "memtide_balloon_target_bytes", &[]),
            64.0 * mib
        );
        assert_eq!(value(&samples, "memtide_guest_ram_bytes", &[]), 256.0 * mib);
        assert_eq!(
            value(&samples, "memtide_guest_ram_resident_bytes", &[]),
            100.0 * mib
        );
        assert_eq!(
            value(&samples, "memtide_guest_committed_bytes", &[]),
            150.0 * mib
        );
        assert_eq!(value(&samples, "memtide_guest_pressure_ratio", &[]), 0.75);
        assert_eq!(
            value(
                &samples,
                "memtide_guest_psi_memory_avg10_ratio",
                &[("kind", "some")]
            ),
            0.125
        );
        assert_eq!(value(&samples, "memtide_agent_reports_total", &[]), 1.0);
        assert_eq!(
            value(
                &samples,
                "memtide_balancer_actions_total",
                &[("vm", "a"), ("kind", "inflate")]
            ),
            3.0
        );
        assert_eq!(
            value(&samples, "memtide_balancer_share_ratio", &[("vm", "a")]),
            0.375
        );
        assert_eq!(
            value(
                &samples,
                "memtide_balloon_resize_duration_seconds_bucket",
                &[("direction", "inflate"), ("le", "+Inf")]
            ),
            0.0
        );
    }

    #[test]
    fn the_guest_reclaim_and_oom_counters_are_counters_when_reported() {
        let s = state();
        let Some(b) = &s.balloon else {
            panic!("balloon")
        };
        let before = parse(&route(&s).body);
        assert!(
            !before.iter().any(|x| x.0.starts_with("memtide_guest_oom")),
            "no guest statistics yet: no family"
        );
        *crate::api::lock(&b.stats) = Some(memtide_devices::virtio::balloon::BalloonStats {
            oom_kills: Some(2),
            alloc_stalls: Some(17),
            direct_scan: Some(8192),
            direct_reclaim: Some(4096),
            ..Default::default()
        });
        let samples = parse(&route(&s).body);
        assert_eq!(value(&samples, "memtide_guest_oom_kills_total", &[]), 2.0);
        assert_eq!(
            value(&samples, "memtide_guest_alloc_stalls_total", &[]),
            17.0
        );
        assert_eq!(
            value(
                &samples,
                "memtide_guest_reclaim_scanned_bytes_total",
                &[("kind", "direct")]
            ),
            8192.0
        );
        assert_eq!(
            value(
                &samples,
                "memtide_guest_reclaimed_bytes_total",
                &[("kind", "direct")]
            ),
            4096.0
        );
    }

    #[test]
    fn a_finished_resize_lands_in_the_histogram() {
        let s = state();
        let Some(b) = &s.balloon else {
            panic!("balloon")
        };
        let t0 = std::time::Instant::now();
        b.latency.target_set(0, 256, t0);
        b.latency
            .actual_written(256, t0 + std::time::Duration::from_millis(700));
        let samples = parse(&route(&s).body);
        let bucket = |le| {
            value(
                &samples,
                "memtide_balloon_resize_duration_seconds_bucket",
                &[("direction", "inflate"), ("le", le)],
            )
        };
        assert_eq!(
            (bucket("0.5"), bucket("1.0"), bucket("+Inf")),
            (0.0, 1.0, 1.0)
        );
        assert_eq!(
            value(
                &samples,
                "memtide_balloon_resize_duration_seconds_count",
                &[("direction", "inflate")]
            ),
            1.0
        );
    }

    #[test]
    fn balance_shows_the_budget_and_no_vm_metrics() {
        let status = BalancerStatus {
            budget_mib: 1024,
            ..BalancerStatus::default()
        };
        let s = ApiState::balancer_only(Arc::new(Mutex::new(status)));
        let samples = parse(&route(&s).body);
        assert_eq!(
            value(&samples, "memtide_balancer_budget_bytes", &[]),
            1024.0 * f64::from(1u32 << 20)
        );
        assert!(samples
            .iter()
            .all(|(n, _, _)| !n.starts_with("memtide_guest")));
    }
}
