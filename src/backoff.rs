//! Exponential backoff with full jitter, for calls to services that may be down. A failing SQS
//! or Postgres must not turn the worker into a busy loop, and many workers restarting together
//! must not retry in lockstep.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: 0,
        }
    }

    /// Record a failure and return how long to wait before the next try.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self
            .base
            .saturating_mul(1u32 << self.failures.min(16).saturating_sub(1));
        let ceiling = exp.min(self.max);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
    }

    /// Record a success; returns how many failures preceded it.
    pub fn succeed(&mut self) -> u32 {
        std::mem::take(&mut self.failures)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_under_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.fail();
        assert!(first <= Duration::from_millis(100) && first >= Duration::from_millis(50));
        for _ in 0..40 {
            assert!(b.fail() <= Duration::from_secs(2));
        }
        assert_eq!(b.succeed(), 41);
        assert_eq!(b.failures(), 0);
    }
}
