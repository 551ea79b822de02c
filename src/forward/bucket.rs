//! The forwarder's pace: a token bucket of `rate` requests per second holding at most `burst`
//! tokens, slowed by the application itself. A 429 or 503 halves the rate (down to a sixteenth
//! of the configured one) and pauses every sender until its `Retry-After`; each delivered request
//! then wins back a twentieth of the configured rate, so the pace climbs back over a few dozen
//! requests once the application copes again (additive increase, multiplicative decrease).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Shared by a forwarder's concurrent deliveries.
#[derive(Debug)]
pub struct TokenBucket {
    configured: f64,
    burst: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    rate: f64,
    last: Instant,
    paused_until: Option<Instant>,
}

const MIN_FRACTION: f64 = 1.0 / 16.0;
const RECOVERY_FRACTION: f64 = 1.0 / 20.0;

impl TokenBucket {
    /// Starts with one token: the first request goes at once, the burst builds while idle.
    pub fn new(rate_per_second: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            configured: rate_per_second,
            burst,
            state: Mutex::new(State {
                tokens: 1.0,
                rate: rate_per_second,
                last: Instant::now(),
                paused_until: None,
            }),
        }
    }

    /// Wait for a token and take it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().await;
                let now = Instant::now();
                if let Some(until) = s.paused_until.filter(|u| *u > now) {
                    until - now
                } else {
                    s.paused_until = None;
                    let elapsed = now.saturating_duration_since(s.last).as_secs_f64();
                    s.tokens = (s.tokens + elapsed * s.rate).min(self.burst);
                    s.last = now;
                    if s.tokens >= 1.0 {
                        s.tokens -= 1.0;
                        return;
                    }
                    Duration::from_secs_f64((1.0 - s.tokens) / s.rate)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The application asked to slow down: halve the rate, and hold every sender for
    /// `retry_after` when it said how long.
    pub async fn slow_down(&self, retry_after: Option<Duration>) {
        let mut s = self.state.lock().await;
        s.rate = (s.rate / 2.0).max(self.configured * MIN_FRACTION);
        if let Some(wait) = retry_after {
            let until = Instant::now() + wait;
            s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
            s.tokens = 0.0;
        }
    }

    /// A request was delivered: win back part of the configured rate.
    pub async fn delivered(&self) {
        let mut s = self.state.lock().await;
        if s.rate < self.configured {
            s.rate = (s.rate + self.configured * RECOVERY_FRACTION).min(self.configured);
        }
    }

    /// The current rate (requests per second), for logs and tests.
    pub async fn rate(&self) -> f64 {
        self.state.lock().await.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real time, kept short (tokio's paused clock needs a feature that would rebuild every
    // dependency a second time for the tests).
    #[tokio::test]
    async fn paces_at_the_configured_rate_after_the_burst() {
        let bucket = TokenBucket::new(100.0, 5);
        tokio::time::sleep(Duration::from_millis(100)).await; // fill the burst
        let start = Instant::now();
        for _ in 0..105 {
            bucket.acquire().await;
        }
        // 5 from the burst, then 100 at 100/s.
        let took = start.elapsed().as_secs_f64();
        assert!((0.95..=1.2).contains(&took), "{took}");
    }

    #[tokio::test]
    async fn slow_down_halves_the_rate_pauses_and_recovers() {
        let bucket = TokenBucket::new(16.0, 1);
        bucket.slow_down(Some(Duration::from_millis(300))).await;
        assert_eq!(bucket.rate().await, 8.0);
        let start = Instant::now();
        bucket.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "Retry-After held"
        );
        for _ in 0..10 {
            bucket.slow_down(None).await;
        }
        assert_eq!(bucket.rate().await, 1.0, "never below a sixteenth");
        for _ in 0..100 {
            bucket.delivered().await;
        }
        assert_eq!(
            bucket.rate().await,
            16.0,
            "back to the configured rate, not past it"
        );
    }
}
