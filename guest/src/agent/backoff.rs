//! A capped exponential back-off for reconnecting.

use std::time::Duration;

/// Delays that start at `first` and double on every failure up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off whose next delay is `first`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first.min(max),
        }
    }

    /// The delay before the next attempt; the one after it is doubled (up
    /// to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = d.saturating_mul(2).min(self.max);
        d
    }

    /// Starts again from the first delay (after a connection that lasted).
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(2000));
        let seq: Vec<_> = (0..7).map(|_| b.next_delay()).collect();
        assert_eq!(seq, [100, 200, 400, 800, 1600, 2000, 2000].map(ms).to_vec());
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
    }
}
