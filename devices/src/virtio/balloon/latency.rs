//! How long the guest takes to follow a balloon target: from the host
//! setting a new target to the guest driver writing an `actual` equal to
//! it, per direction (inflate, deflate), as histograms for `GET /metrics`.
//! A target replaced before the guest reached it is counted as
//! superseded, not timed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bucket upper bounds, seconds (the last bucket is +Inf).
pub const BUCKETS_S: [f64; 12] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// A fixed-bucket latency histogram updated without locks.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Non-cumulative counts per bucket of [`BUCKETS_S`], then +Inf.
    buckets: [AtomicU64; BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A histogram's values at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of all observations, seconds.
    pub sum_s: f64,
    /// Number of observations.
    pub count: u64,
    /// (upper bound in seconds, non-cumulative count); the last bound is
    /// `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS_S.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = BUCKETS_S.iter().copied().chain([f64::INFINITY]);
        // Nanoseconds to seconds: a float is what the exposition wants.
        #[allow(clippy::cast_precision_loss)]
        let sum_s = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot {
            sum_s,
            count: self.count.load(Ordering::Relaxed),
            buckets: bounds
                .zip(&self.buckets)
                .map(|(b, n)| (b, n.load(Ordering::Relaxed)))
                .collect(),
        }
    }
}

/// A target the guest has not reached yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    target_pages: u32,
    inflate: bool,
    since: Instant,
}

/// Times each balloon resize from target to `actual`.
#[derive(Debug, Default)]
pub struct ResizeLatency {
    pending: Mutex<Option<Pending>>,
    /// Target set above `actual` until the guest reached it.
    pub inflate: LatencyHistogram,
    /// Target set below `actual` until the guest reached it.
    pub deflate: LatencyHistogram,
    /// Targets replaced before the guest reached them.
    pub superseded: AtomicU64,
}

impl ResizeLatency {
    /// The host set `target_pages` while the guest's balloon held
    /// `actual_pages`, at `now`.
    pub fn target_set(&self, actual_pages: u32, target_pages: u32, now: Instant) {
        let mut p = crate::bus::lock(&self.pending);
        if p.take().is_some() {
            self.superseded.fetch_add(1, Ordering::Relaxed);
        }
        if target_pages != actual_pages {
            *p = Some(Pending {
                target_pages,
                inflate: target_pages > actual_pages,
                since: now,
            });
        }
    }

    /// The guest wrote `actual_pages` at `now`.
    pub fn actual_written(&self, actual_pages: u32, now: Instant) {
        let mut p = crate::bus::lock(&self.pending);
        let Some(pending) = *p else {
            return;
        };
        if pending.target_pages != actual_pages {
            return;
        }
        *p = None;
        let took = now.saturating_duration_since(pending.since);
        if pending.inflate {
            self.inflate.observe(took);
        } else {
            self.deflate.observe(took);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resize_is_timed_when_actual_reaches_the_target() {
        let l = ResizeLatency::default();
        let t0 = Instant::now();
        l.target_set(0, 8192, t0);
        l.actual_written(4096, t0 + Duration::from_millis(100));
        assert_eq!(l.inflate.snapshot().count, 0, "halfway is not done");
        l.actual_written(8192, t0 + Duration::from_millis(300));
        let s = l.inflate.snapshot();
        assert_eq!(s.count, 1);
        assert!((s.sum_s - 0.3).abs() < 1e-9);
        assert_eq!(s.buckets.iter().find(|b| b.1 == 1).map(|b| b.0), Some(0.5));
        l.actual_written(8192, t0 + Duration::from_secs(9));
        assert_eq!(l.inflate.snapshot().count, 1, "timed once");

        l.target_set(8192, 0, t0);
        l.actual_written(0, t0 + Duration::from_secs(200));
        let d = l.deflate.snapshot();
        assert_eq!(d.count, 1);
        assert_eq!(d.buckets.last(), Some(&(f64::INFINITY, 1)));
    }

    #[test]
    fn a_replaced_target_is_superseded_and_an_unchanged_one_is_not_timed() {
        let l = ResizeLatency::default();
        let t0 = Instant::now();
        l.target_set(0, 100, t0);
        l.target_set(0, 200, t0);
        assert_eq!(l.superseded.load(Ordering::Relaxed), 1);
        l.target_set(50, 50, t0);
        assert_eq!(l.superseded.load(Ordering::Relaxed), 2);
        l.actual_written(50, t0);
        assert_eq!(l.inflate.snapshot().count + l.deflate.snapshot().count, 0);
    }
}
