//! Rate-limited log lines.
//!
//! A guest can write a bad MMIO register twenty thousand times a second and
//! a local client can send a malformed agent frame as fast as a socket
//! carries it; each used to cost one log line, so the guest or the client
//! chose how much stderr memtide wrote. Every call site of
//! [`warn_limited!`] gets its own budget: [`BURST`] lines per [`WINDOW`],
//! and the first line after a quiet window says how many were dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines a call site may log per window.
pub const BURST: u32 = 10;

/// The window over which [`BURST`] applies.
pub const WINDOW: Duration = Duration::from_secs(5);

/// One call site's budget.
#[derive(Debug)]
pub struct LogLimit {
    state: Mutex<Option<State>>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A fresh budget (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(None),
        }
    }

    /// Whether a line may be logged at `now`; `Some(n)` admits it, `n`
    /// being how many lines this site dropped since it last logged one.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = guard.get_or_insert(State {
            window_start: now,
            logged: 0,
            suppressed: 0,
        });
        if now.saturating_duration_since(s.window_start) >= WINDOW {
            s.window_start = now;
            s.logged = 0;
        }
        if s.logged >= BURST {
            s.suppressed = s.suppressed.saturating_add(1);
            return None;
        }
        s.logged += 1;
        Some(std::mem::take(&mut s.suppressed))
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// `log::warn!` with a per-call-site budget of [`BURST`] lines per
/// [`WINDOW`]; the first line after dropped ones names how many.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMIT: $crate::LogLimit = $crate::LogLimit::new();
        if let Some(dropped) = LIMIT.admit(::std::time::Instant::now()) {
            if dropped > 0 {
                ::log::warn!("({dropped} similar lines dropped by the log limit)");
            }
            ::log::warn!($($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_logged_then_the_rest_of_the_window_is_counted() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limit.admit(t0), Some(0));
        }
        for _ in 0..20_000 {
            assert_eq!(limit.admit(t0 + Duration::from_millis(10)), None);
        }
        assert_eq!(limit.admit(t0 + WINDOW), Some(20_000), "the drop is named");
        assert_eq!(limit.admit(t0 + WINDOW), Some(0), "and only once");
    }

    #[test]
    fn the_macro_compiles_at_a_call_site() {
        for i in 0..3 {
            warn_limited!("line {i}");
        }
    }
}
