//! How many messages this process holds at once, decided from how long they take to settle.
//!
//! Why adaptive: a message holds its permit from the end of its receive until its ack is
//! queued, and what SQS latency adds to each message's time (the receive's round trip, and the
//! waits it causes) is time the permit is held while nothing here works on it. By Little's law
//! the rate is the permits over that time: at 10-20 ms of SQS latency each way a fixed 200
//! permits held the one-event load to a third of what Postgres takes, while on loopback 200
//! are plenty and 1000 would only queue messages in memory (latency, RSS, and more to release
//! on shutdown). So the limit moves between `[worker] min_concurrency` and
//! `total_concurrency` on the evidence, in the manner of TCP Vegas:
//!
//! - how long a message takes from its receive's end to its ack being queued (decode, the
//!   batch window, waiting for a connection, the transaction) is measured every tick; the
//!   least of those means over the last half minute is the time with nothing queued here;
//! - when the receive loops had to wait for a permit (the limit was what held them) and
//!   messages take at most 1.5x that time (or 5 ms more), a larger limit would be used without
//!   queueing: grow by a quarter;
//! - when messages take more than twice that time (and 5 ms more), they queue in this process
//!   or in Postgres, and more permits would only lengthen the queue: shrink by a fifth;
//! - otherwise, or on too little evidence (an idle queue), hold.
//!
//! Growth also stops where the bodies of the messages in flight would pass
//! `max_body_bytes_in_flight` at their current mean size, so large inbound emails do not raise
//! memory the way one-event messages may.
//!
//! The rule is a pure function of the observations ([`LimitController::observe`]), tested
//! without SQS; [`ConcurrencyLimit`] applies it to the process-wide semaphore by holding back
//! the permits above the limit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often the limit is reconsidered.
pub const TICK: Duration = Duration::from_millis(100);
/// Ticks whose fastest mean is the time with nothing queued (30 s).
const BASELINE_TICKS: usize = 300;
/// Fewer completions in a tick than this say too little to act on.
const MIN_EVIDENCE: u64 = 20;
/// Below this, a difference in time is scheduling noise, not a queue.
const SLACK: Duration = Duration::from_millis(5);

/// What one tick saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSample {
    /// Messages whose acks were queued in the tick.
    pub completed: u64,
    /// Their mean time from the end of their receive to their ack being queued.
    pub mean_held: Duration,
    /// A receive loop had to wait for a process-wide permit in the tick.
    pub starved: bool,
    /// Mean body size of the messages in flight now (0: none).
    pub mean_body_bytes: u64,
}

/// The in-flight limit and the evidence it follows.
#[derive(Debug, Clone)]
pub struct LimitController {
    limit: u32,
    min: u32,
    max: u32,
    max_body_bytes: u64,
    recent: VecDeque<Duration>,
}

impl LimitController {
    /// Start at `min`, move within `min..=max`; growth stops where bodies in flight would pass
    /// `max_body_bytes`.
    pub fn new(min: u32, max: u32, max_body_bytes: u64) -> Self {
        let max = max.max(1);
        let min = min.clamp(1, max);
        Self {
            limit: min,
            min,
            max,
            max_body_bytes,
            recent: VecDeque::with_capacity(BASELINE_TICKS),
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The least mean time of the recent ticks: a message's time with nothing queued.
    pub fn baseline(&self) -> Option<Duration> {
        self.recent.iter().min().copied()
    }

    /// Take one tick into account; returns the new limit.
    pub fn observe(&mut self, sample: LimitSample) -> u32 {
        if sample.completed < MIN_EVIDENCE || self.min == self.max {
            return self.limit;
        }
        if self.recent.len() == BASELINE_TICKS {
            self.recent.pop_front();
        }
        self.recent.push_back(sample.mean_held);
        let baseline = self.baseline().unwrap_or(sample.mean_held);
        let held = sample.mean_held;
        let queued = held > baseline * 2 && held > baseline + SLACK;
        let unqueued = held <= baseline.mul_f64(1.5) || held <= baseline + SLACK;
        if queued {
            self.limit = (self.limit - self.limit / 5).max(self.min);
        } else if sample.starved && unqueued {
            let grown = self.limit.saturating_add((self.limit / 4).max(10));
            self.limit = grown
                .min(self.max)
                .min(self.memory_cap(sample.mean_body_bytes));
            self.limit = self.limit.max(self.min);
        }
        self.limit
    }

    /// The most messages whose bodies fit `max_body_bytes` at the current mean size.
    fn memory_cap(&self, mean_body_bytes: u64) -> u32 {
        match self.max_body_bytes.checked_div(mean_body_bytes) {
            Some(fit) => fit.min(u64::from(u32::MAX)) as u32,
            None => u32::MAX,
        }
    }
}

/// The process-wide permits, with those above the limit held back.
pub struct ConcurrencyLimit {
    permits: Arc<Semaphore>,
    max: u32,
    held_back: Mutex<Option<OwnedSemaphorePermit>>,
    controller: Mutex<LimitController>,
    starved: AtomicBool,
}

impl ConcurrencyLimit {
    pub fn new(min: u32, max: u32, max_body_bytes: u64) -> Self {
        let controller = LimitController::new(min, max, max_body_bytes);
        let max = controller.max;
        let permits = Arc::new(Semaphore::new(max as usize));
        let held_back = permits
            .clone()
            .try_acquire_many_owned(max - controller.limit())
            .ok();
        metrics::gauge!("mailroom_concurrency_limit").set(f64::from(controller.limit()));
        Self {
            permits,
            max,
            held_back: Mutex::new(held_back.filter(|p| p.num_permits() > 0)),
            controller: Mutex::new(controller),
            starved: AtomicBool::new(false),
        }
    }

    /// The semaphore the receive loops take a permit of per message.
    pub(super) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// A receive loop found no process-wide permit free.
    pub(super) fn note_starved(&self) {
        self.starved.store(true, Ordering::Relaxed);
    }

    /// Messages that may be in flight now (held back permits not counted). Shrinking waits for
    /// permits to come back, so this can be above [`ConcurrencyLimit::target`] for a while.
    pub fn current(&self) -> u32 {
        self.max
            - lock(&self.held_back)
                .as_ref()
                .map_or(0, |p| p.num_permits() as u32)
    }

    /// What the controller wants.
    pub fn target(&self) -> u32 {
        lock(&self.controller).limit()
    }

    /// The ceiling (`total_concurrency`).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// One tick: the controller's decision, then the held-back permits moved to match it.
    pub(super) fn tick(&self, completed: u64, mean_held: Duration, mean_body_bytes: u64) {
        let sample = LimitSample {
            completed,
            mean_held,
            starved: self.starved.swap(false, Ordering::Relaxed),
            mean_body_bytes,
        };
        let (before, target) = {
            let mut c = lock(&self.controller);
            (c.limit(), c.observe(sample))
        };
        self.apply(target);
        if before != target {
            metrics::gauge!("mailroom_concurrency_limit").set(f64::from(target));
            tracing::debug!(limit = target, ?mean_held, "in-flight limit adjusted");
        }
    }

    /// Hold back `max - target` permits: release some when growing; when shrinking take
    /// what is free now (the rest on later ticks, as messages finish).
    fn apply(&self, target: u32) {
        let mut held_back = lock(&self.held_back);
        let held = held_back.as_ref().map_or(0, |p| p.num_permits() as u32);
        let want = self.max - target;
        if want < held {
            if let Some(p) = held_back.as_mut() {
                drop(p.split((held - want) as usize));
            }
        } else if want > held {
            let free = self.permits.available_permits().min((want - held) as usize);
            if free > 0 {
                if let Ok(more) = self.permits.clone().try_acquire_many_owned(free as u32) {
                    match held_back.as_mut() {
                        Some(p) => p.merge(more),
                        None => *held_back = Some(more),
                    }
                }
            }
        }
        if held_back.as_ref().is_some_and(|p| p.num_permits() == 0) {
            *held_back = None;
        }
    }
}

/// The engine's task that reconsiders the limit every [`TICK`] until receiving stops.
pub(super) async fn adjust(shared: Arc<super::Shared>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let held = shared.inflight.take_held();
        shared
            .limit
            .tick(held.messages, held.mean, shared.inflight.mean_body_bytes());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each guarded value is updated in one step: a poisoned lock still holds a sound value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn busy(held_ms: u64, starved: bool) -> LimitSample {
        LimitSample {
            completed: 500,
            mean_held: MS * held_ms as u32,
            starved,
            mean_body_bytes: 2_000,
        }
    }

    fn controller() -> LimitController {
        LimitController::new(100, 1000, 64 << 20)
    }

    #[test]
    fn starts_at_the_floor() {
        assert_eq!(controller().limit(), 100);
        assert_eq!(LimitController::new(0, 0, 1).limit(), 1, "at least one");
        assert_eq!(
            LimitController::new(500, 200, 1).limit(),
            200,
            "min above max"
        );
    }

    /// SQS latency: the receive loops wait for permits while messages take no longer than
    /// before, so the limit grows to the ceiling and no further.
    #[test]
    fn starved_with_steady_times_grows_to_the_ceiling_and_no_further() {
        let mut c = controller();
        let limits: Vec<u32> = (0..12).map(|_| c.observe(busy(25, true))).collect();
        assert_eq!(limits[..4], [125, 156, 195, 243]);
        assert_eq!(limits.last(), Some(&1000));
        assert!(limits.windows(2).all(|w| w[0] <= w[1]));
    }

    /// Not starved: the limit is not what holds the receives, so it stays.
    #[test]
    fn permits_to_spare_hold_the_limit() {
        let mut c = controller();
        for _ in 0..10 {
            assert_eq!(c.observe(busy(25, false)), 100);
        }
    }

    /// Messages queue (here or in Postgres): shrink to the floor, and not below.
    #[test]
    fn doubled_times_shrink_the_limit_to_the_floor() {
        let mut c = controller();
        for _ in 0..10 {
            c.observe(busy(25, true));
        }
        let high = c.limit();
        assert!(high > 500, "{high}");
        assert_eq!(c.observe(busy(60, true)), high - high / 5);
        for _ in 0..30 {
            c.observe(busy(60, true));
        }
        assert_eq!(c.limit(), 100);
    }

    /// Between 1.5x and 2x the baseline: neither queue nor room, hold.
    #[test]
    fn a_moderate_rise_holds() {
        let mut c = controller();
        c.observe(busy(20, true));
        let before = c.limit();
        assert_eq!(c.observe(busy(35, true)), before);
    }

    /// A few milliseconds over a tiny baseline is noise, not a queue.
    #[test]
    fn small_absolute_differences_are_not_a_queue() {
        let mut c = controller();
        c.observe(busy(1, true));
        let before = c.limit();
        assert!(
            c.observe(busy(4, true)) > before,
            "4 ms over 1 ms still grows"
        );
        let before = c.limit();
        assert!(
            c.observe(busy(7, true)) < before,
            "7 ms over 1 ms is a queue"
        );
    }

    #[test]
    fn an_idle_tick_changes_nothing() {
        let mut c = controller();
        let idle = LimitSample {
            completed: 3,
            ..busy(500, true)
        };
        assert_eq!(c.observe(idle), 100);
        assert_eq!(
            c.baseline(),
            None,
            "too little evidence is not remembered either"
        );
    }

    /// Large bodies: growth stops where their bytes would pass the budget.
    #[test]
    fn large_bodies_cap_the_growth() {
        let mut c = LimitController::new(100, 1000, 64 << 20);
        let big = LimitSample {
            mean_body_bytes: 200 << 10,
            ..busy(25, true)
        };
        for _ in 0..20 {
            c.observe(big);
        }
        assert_eq!(c.limit(), 327, "64 MiB / 200 KiB");
    }

    #[test]
    fn fixed_bounds_never_move() {
        let mut c = LimitController::new(200, 200, 64 << 20);
        assert_eq!(c.observe(busy(25, true)), 200);
        assert_eq!(c.observe(busy(500, true)), 200);
    }

    /// The old baseline ages out: after half a minute of slower messages, they are the norm.
    #[test]
    fn the_baseline_is_the_fastest_of_the_last_half_minute() {
        let mut c = controller();
        c.observe(busy(10, false));
        for _ in 0..BASELINE_TICKS {
            c.observe(busy(40, false));
        }
        assert_eq!(c.baseline(), Some(MS * 40));
    }

    #[tokio::test]
    async fn the_semaphore_follows_the_target() {
        let limit = ConcurrencyLimit::new(10, 100, 64 << 20);
        assert_eq!(
            (limit.current(), limit.permits().available_permits()),
            (10, 10)
        );
        limit.tick(500, MS * 20, 1_000);
        assert_eq!(limit.current(), 10, "not starved: holds");
        limit.note_starved();
        limit.tick(500, MS * 20, 1_000);
        assert_eq!((limit.target(), limit.current()), (20, 20));
        assert_eq!(limit.permits().available_permits(), 20);
        // Shrinking while 15 permits are in use: only what is free is held back now.
        let in_use = limit.permits().clone().try_acquire_many_owned(15).unwrap();
        limit.tick(500, MS * 200, 1_000);
        assert_eq!(limit.target(), 16);
        assert_eq!(limit.current(), 16, "4 free taken back of the 4 wanted");
        for _ in 0..4 {
            limit.tick(500, MS * 200, 1_000);
        }
        assert_eq!(limit.target(), 10);
        assert_eq!(
            limit.current(),
            15,
            "the rest comes back as messages finish"
        );
        drop(in_use);
        limit.tick(0, Duration::ZERO, 0);
        assert_eq!(limit.current(), 10);
        assert_eq!(limit.permits().available_permits(), 10);
    }
}
