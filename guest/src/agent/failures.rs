//! Rate-limited error lines: a failure of a kind is printed when that kind
//! has printed nothing for a period (so the first one at once), otherwise
//! counted and mentioned in the next line; the end of a run of failures
//! can be announced. The agent must not fill the console with one line per
//! tick, even when a failure comes and goes.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The prefix of every line the agent prints.
pub const PREFIX: &str = "memtide-agent:";

/// The state of one kind of failure.
#[derive(Debug, Clone)]
struct Kind {
    name: &'static str,
    /// Failures in the current run (0: not failing).
    run: u64,
    /// Failures since the last line printed, not yet mentioned.
    unreported: u64,
    /// When the last line for this kind was printed.
    last_line: Option<Instant>,
}

/// Decides which failures are worth a line.
#[derive(Debug, Clone)]
pub struct FailureLog {
    repeat_every: Duration,
    kinds: Vec<Kind>,
}

impl FailureLog {
    /// A log that repeats an ongoing failure at most once per `repeat_every`.
    pub fn new(repeat_every: Duration) -> Self {
        Self {
            repeat_every,
            kinds: Vec::new(),
        }
    }

    fn kind(&mut self, name: &'static str) -> &mut Kind {
        let i = match self.kinds.iter().position(|k| k.name == name) {
            Some(i) => i,
            None => {
                self.kinds.push(Kind {
                    name,
                    run: 0,
                    unreported: 0,
                    last_line: None,
                });
                self.kinds.len() - 1
            }
        };
        &mut self.kinds[i]
    }

    /// Records a failure of `kind`; returns the line to print, if any.
    pub fn failed(
        &mut self,
        kind: &'static str,
        now: Instant,
        error: &dyn Display,
    ) -> Option<String> {
        let repeat_every = self.repeat_every;
        let k = self.kind(kind);
        k.run += 1;
        let due = k
            .last_line
            .is_none_or(|t| now.saturating_duration_since(t) >= repeat_every);
        if !due {
            k.unreported += 1;
            return None;
        }
        let line = if k.unreported == 0 {
            format!("{PREFIX} {error}")
        } else {
            format!(
                "{PREFIX} {error} ({} more since the last message)",
                k.unreported
            )
        };
        k.unreported = 0;
        k.last_line = Some(now);
        Some(line)
    }

    /// Records a success of `kind`; returns the number of failures in the
    /// run it ends (`None` when it was not failing).
    pub fn succeeded(&mut self, kind: &'static str) -> Option<u64> {
        let k = self.kind(kind);
        let run = std::mem::take(&mut k.run);
        (run > 0).then_some(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_then_one_line_per_period_then_recovery() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut log = FailureLog::new(s(60));
        let err = "/proc/pressure/memory: No such file or directory";
        assert_eq!(
            log.failed("psi", t0, &err).as_deref(),
            Some("memtide-agent: /proc/pressure/memory: No such file or directory")
        );
        for i in 1..240 {
            assert_eq!(
                log.failed("psi", t0 + Duration::from_millis(250 * i), &err),
                None
            );
        }
        let line = log
            .failed("psi", t0 + s(60), &err)
            .expect("a repeat after 60 s");
        assert!(
            line.ends_with("(239 more since the last message)"),
            "{line}"
        );
        assert_eq!(log.succeeded("psi"), Some(241));
        assert_eq!(log.succeeded("psi"), None);
        // A failure that comes and goes is still one line per period.
        assert_eq!(log.failed("psi", t0 + s(61), &err), None);
        assert_eq!(log.succeeded("psi"), Some(1));
        let line = log.failed("psi", t0 + s(120), &err).expect("due again");
        assert!(line.ends_with("(1 more since the last message)"), "{line}");
    }

    #[test]
    fn kinds_are_independent() {
        let t0 = Instant::now();
        let mut log = FailureLog::new(Duration::from_secs(60));
        assert!(log.failed("connect", t0, &"refused").is_some());
        assert!(log.failed("send", t0, &"broken pipe").is_some());
        assert!(log.failed("connect", t0, &"refused").is_none());
        assert_eq!(log.succeeded("send"), Some(1));
        assert_eq!(log.succeeded("meminfo"), None);
    }
}
