//! How many long polls a queue keeps open, decided from what its receives bring back and how
//! long they take.
//!
//! Why adaptive: a receive loop is one SQS call at a time, so a loop moves at most
//! `batch_size` messages per round trip. On loopback a round trip takes a millisecond or two
//! and a few loops fill any concurrency; at 20 ms each way it takes ~45 ms and 16 loops held
//! the one-event load to ~3,500 msgs/s. A fixed count large enough for AWS wastes one open
//! long poll per loop on an idle queue, and on a near server it costs CPU for nothing
//! (measured: a maximum of 64 loops under the first rule alone cost 60% more worker CPU per
//! message on loopback). So the count follows the evidence:
//!
//! - a receive that asked for a full batch (permits were free), got a full batch, and still
//!   leaves at least a batch of permits free says the queue has more than the loops fetch:
//!   one more loop (up to the configured maximum), provided the receives are not slowing down;
//! - the round trip of full receives (a full receive returns as soon as SQS has the messages,
//!   so its time is the service's, not the long poll's) is smoothed, and the least smoothed
//!   value of the last half minute is the round trip with nothing queued at SQS. While the
//!   current one is within 1.5x of it (or 1 ms more) another loop adds rate; past twice it
//!   (and 2 ms more) the loops queue at SQS or for this process's CPU, and another loop adds
//!   only cost: one fewer. Between the two, hold;
//! - a receive that could ask for less than a batch says the loops split the permits the
//!   handlers free between them: each call brings fewer messages for the same cost, at no
//!   more rate. One fewer. This is what stopped the loops on loopback, where the permits
//!   (not SQS) are the bound: with it, a maximum of 64 costs no more CPU per message than 16;
//! - loops are taken away at most once per smoothed round trip, since the receives already
//!   under way when one goes still carry the old evidence;
//! - an empty receive says the loops outnumber the messages: one fewer (down to one, so an
//!   idle queue costs one long poll);
//! - a partial batch holds: the queue is nearly drained.
//!
//! So at 20 ms each way, where the round trip stays ~45 ms however many loops poll and the
//! in-flight limit grows to keep permits free, the count grows to the maximum; on loopback it
//! stays near what the old fixed maximum of 16 gave. The rule is a pure function of the
//! observations ([`LoopController::observe`]) so it is tested without SQS.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Half a minute of round-trip minima, one per second, make the baseline.
const BASELINE_BUCKETS: usize = 30;
const BUCKET: Duration = Duration::from_secs(1);
/// Below this, a longer round trip is scheduling noise, not a queue.
const SLACK: Duration = Duration::from_millis(1);

/// What one receive saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveSample {
    /// Messages the receive asked for (the permits it held).
    pub asked: u32,
    /// Messages it brought.
    pub got: u32,
    /// The queue's `batch_size`: the most one receive may ask for.
    pub batch_size: u32,
    /// Permits free right after it (the smaller of the queue's and the process's).
    pub free_permits: usize,
    /// The receive call's round trip.
    pub took: Duration,
    /// When it ended.
    pub at: Instant,
}

impl ReceiveSample {
    /// Asked for a full batch and got it: SQS had more waiting, and answered at once.
    fn full(&self) -> bool {
        self.asked >= self.batch_size && self.got >= self.asked
    }
}

/// The round trip of full receives: smoothed, and its least smoothed value per second for the
/// last half minute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RoundTrips {
    smoothed: Option<Duration>,
    minima: VecDeque<(Instant, Duration)>,
}

impl RoundTrips {
    fn observe(&mut self, took: Duration, at: Instant) {
        // Smoothed as TCP smooths its round trip (RFC 6298): an eighth of each new sample.
        let smoothed = match self.smoothed {
            None => took,
            Some(s) => s - s / 8 + took / 8,
        };
        self.smoothed = Some(smoothed);
        match self.minima.back_mut() {
            Some((start, min)) if at.saturating_duration_since(*start) < BUCKET => {
                *min = (*min).min(smoothed);
            }
            _ => self.minima.push_back((at, smoothed)),
        }
        while self.minima.front().is_some_and(|(start, _)| {
            at.saturating_duration_since(*start) >= BUCKET * BASELINE_BUCKETS as u32
        }) {
            self.minima.pop_front();
        }
    }

    fn baseline(&self) -> Option<Duration> {
        self.minima.iter().map(|(_, min)| *min).min()
    }
}

/// What the round trips say about another loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// No slower than with nothing queued: another loop adds rate.
    Unqueued,
    /// Between: hold.
    Slower,
    /// Twice as slow and more: the loops queue, one fewer.
    Queued,
}

/// The number of receive loops that should be polling one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopController {
    target: u32,
    max: u32,
    round_trips: RoundTrips,
    /// The last time a loop was taken away for slow receives or short permits: at most one per
    /// round trip, since the receives already under way when a loop goes still carry the old
    /// evidence.
    last_shrink: Option<Instant>,
}

impl LoopController {
    /// Start with one loop (an idle queue costs one long poll); grow to at most `max`.
    pub fn new(max: u32) -> Self {
        Self {
            target: 1,
            max: max.max(1),
            round_trips: RoundTrips::default(),
            last_shrink: None,
        }
    }

    /// Loops that should be polling now.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// The configured bound.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The smoothed round trip of full receives, and the least of it in the last half minute.
    pub fn round_trips(&self) -> Option<(Duration, Duration)> {
        Some((self.round_trips.smoothed?, self.round_trips.baseline()?))
    }

    /// Take one receive's result into account; returns the new target.
    pub fn observe(&mut self, sample: ReceiveSample) -> u32 {
        let full_batch = sample.full();
        if full_batch {
            self.round_trips.observe(sample.took, sample.at);
        }
        let room_for_another = sample.free_permits >= sample.batch_size as usize;
        if sample.got == 0 {
            self.target = self.target.saturating_sub(1).max(1);
        } else if sample.asked < sample.batch_size {
            // Too few permits for a full batch: the loops split what the handlers free between
            // them, and each receive brings less for the same call (more worker and SQS CPU per
            // message, the same rate).
            self.shrink_once_per_round_trip(sample.at);
        } else if full_batch {
            match self.pace() {
                Pace::Queued => self.shrink_once_per_round_trip(sample.at),
                Pace::Unqueued if room_for_another => self.target = (self.target + 1).min(self.max),
                Pace::Unqueued | Pace::Slower => {}
            }
        }
        self.target
    }

    fn shrink_once_per_round_trip(&mut self, at: Instant) {
        let round_trip = self.round_trips.smoothed.unwrap_or_default();
        let due = self
            .last_shrink
            .is_none_or(|last| at.saturating_duration_since(last) >= round_trip);
        if due && self.target > 1 {
            self.target -= 1;
            self.last_shrink = Some(at);
        }
    }

    fn pace(&self) -> Pace {
        let Some((now, baseline)) = self.round_trips() else {
            return Pace::Unqueued;
        };
        if now > baseline * 2 && now > baseline + SLACK * 2 {
            Pace::Queued
        } else if now <= baseline.mul_f64(1.5) || now <= baseline + SLACK {
            Pace::Unqueued
        } else {
            Pace::Slower
        }
    }
}

/// One queue's loop count as its receive loops share it: the controller, the target each loop
/// watches (loop `i` polls while `i < target`, else parks holding no permits), and how many
/// long polls are open right now.
pub struct LoopState {
    queue: std::sync::Arc<str>,
    controller: std::sync::Mutex<LoopController>,
    target: tokio::sync::watch::Sender<u32>,
    polling: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicU32,
}

impl LoopState {
    pub fn new(queue: std::sync::Arc<str>, max: u32) -> Self {
        let controller = LoopController::new(max);
        let (target, _) = tokio::sync::watch::channel(controller.target());
        metrics::gauge!("mailroom_receive_loops", "queue" => queue.to_string())
            .set(f64::from(controller.target()));
        Self {
            queue,
            target,
            peak: std::sync::atomic::AtomicU32::new(controller.target()),
            controller: std::sync::Mutex::new(controller),
            polling: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The configured bound: how many loops are spawned (most of them parked when idle).
    pub fn max(&self) -> u32 {
        self.lock().max()
    }

    /// Loops that should be polling now.
    pub fn target(&self) -> u32 {
        *self.target.borrow()
    }

    /// The highest target since start.
    pub fn peak(&self) -> u32 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Long polls open right now.
    pub fn polling(&self) -> usize {
        self.polling.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A receiver of the target, for one loop to watch.
    pub(super) fn watch(&self) -> tokio::sync::watch::Receiver<u32> {
        self.target.subscribe()
    }

    /// Count a long poll open for as long as the returned guard lives.
    pub(super) fn poll_open(&self) -> PollOpen<'_> {
        self.polling
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PollOpen(self)
    }

    /// Take one receive's result into account; wakes parked loops when the target grew.
    pub(super) fn observe(&self, sample: ReceiveSample) {
        let (before, after, round_trips) = {
            let mut c = self.lock();
            let before = c.target();
            let after = c.observe(sample);
            (before, after, c.round_trips())
        };
        if before != after {
            self.target.send_replace(after);
            self.peak
                .fetch_max(after, std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!("mailroom_receive_loops", "queue" => self.queue.to_string())
                .set(f64::from(after));
            let (round_trip, fastest) = round_trips.unzip();
            tracing::debug!(
                queue = %self.queue,
                loops = after,
                ?round_trip,
                ?fastest,
                "receive loops adjusted"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoopController> {
        // The controller is two integers updated in one step: a poisoned lock is still sound.
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A long poll in progress (see [`LoopState::poll_open`]).
pub(super) struct PollOpen<'a>(&'a LoopState);

impl Drop for PollOpen<'_> {
    fn drop(&mut self) {
        self.0
            .polling
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every queue's loop count, for tests and operators: `Engine::receive_loops`.
#[derive(Clone, Default)]
pub struct ReceiveLoops {
    pub(super) queues: Vec<std::sync::Arc<LoopState>>,
}

impl ReceiveLoops {
    /// The loop state of the queue labelled `queue`.
    pub fn queue(&self, queue: &str) -> Option<&LoopState> {
        self.queues
            .iter()
            .find(|q| &*q.queue == queue)
            .map(|q| q.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(asked: u32, got: u32, free_permits: usize) -> ReceiveSample {
        timed(
            asked,
            got,
            free_permits,
            Duration::from_millis(1),
            Instant::now(),
        )
    }

    fn timed(
        asked: u32,
        got: u32,
        free_permits: usize,
        took: Duration,
        at: Instant,
    ) -> ReceiveSample {
        ReceiveSample {
            asked,
            got,
            batch_size: 10,
            free_permits,
            took,
            at,
        }
    }

    /// Full receives with permits to spare, each `took` long, one every `every`, from `start`.
    fn full_receives(
        c: &mut LoopController,
        start: Instant,
        n: u32,
        every: Duration,
        took: impl Fn(u32) -> Duration,
    ) -> Vec<u32> {
        (0..n)
            .map(|i| c.observe(timed(10, 10, 500, took(i), start + every * i)))
            .collect()
    }

    #[test]
    fn starts_at_one_loop() {
        assert_eq!(LoopController::new(16).target(), 1);
        assert_eq!(LoopController::new(0).max(), 1, "at least one loop");
    }

    #[test]
    fn full_receives_with_free_permits_grow_to_the_maximum_and_no_further() {
        let mut c = LoopController::new(4);
        let targets: Vec<u32> = (0..6).map(|_| c.observe(sample(10, 10, 100))).collect();
        assert_eq!(targets, vec![2, 3, 4, 4, 4, 4]);
    }

    #[test]
    fn empty_receives_shrink_to_one_loop_and_no_further() {
        let mut c = LoopController::new(16);
        for _ in 0..10 {
            c.observe(sample(10, 10, 100));
        }
        assert_eq!(c.target(), 11);
        let targets: Vec<u32> = (0..12).map(|_| c.observe(sample(10, 0, 200))).collect();
        assert_eq!(targets.last(), Some(&1));
        assert_eq!(targets[..10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn no_growth_when_the_permits_are_the_bound() {
        let mut c = LoopController::new(16);
        // Asked for fewer than a batch: the handlers hold the rest of the permits.
        assert_eq!(c.observe(sample(3, 3, 0)), 1);
        // A full batch, but no room left for another loop's batch.
        assert_eq!(c.observe(sample(10, 10, 9)), 1);
    }

    #[test]
    fn a_partial_batch_holds() {
        let mut c = LoopController::new(16);
        c.observe(sample(10, 10, 100));
        c.observe(sample(10, 10, 100));
        assert_eq!(c.observe(sample(10, 4, 100)), 3);
    }

    /// A queue that fills again after going idle grows back.
    #[test]
    fn idle_then_busy_grows_again() {
        let mut c = LoopController::new(8);
        for _ in 0..5 {
            c.observe(sample(10, 0, 200));
        }
        assert_eq!(c.target(), 1);
        for _ in 0..3 {
            c.observe(sample(10, 10, 150));
        }
        assert_eq!(c.target(), 4);
    }

    const MS: Duration = Duration::from_millis(1);

    /// A distant SQS: every round trip 45 ms however many loops poll, so nothing queues there
    /// and the loops grow to the maximum.
    #[test]
    fn round_trips_that_stay_flat_let_the_loops_grow_to_the_maximum() {
        let mut c = LoopController::new(64);
        let targets = full_receives(&mut c, Instant::now(), 100, MS, |_| MS * 45);
        assert_eq!(targets[..3], [2, 3, 4]);
        assert_eq!(c.target(), 64);
        assert_eq!(c.round_trips(), Some((MS * 45, MS * 45)));
    }

    /// A near SQS server that slows as more loops poll: growth stops where the round trip
    /// passes 1.5x (and 1 ms more than) the fastest, and loops go once it passes twice (and
    /// 2 ms more).
    #[test]
    fn round_trips_that_rise_with_the_loops_stop_growth_then_take_loops_away() {
        let mut c = LoopController::new(64);
        let start = Instant::now();
        // 2 ms at first, then half a millisecond more per loop polling: queueing at the server.
        let mut targets = Vec::new();
        for i in 0..200u32 {
            let took = MS * 2 + MS * (c.target() - 1) / 2;
            targets.push(c.observe(timed(10, 10, 500, took, start + MS * 10 * i)));
        }
        let peak = *targets.iter().max().unwrap();
        assert!(
            peak < 16,
            "growth stopped well short of the maximum: {targets:?}"
        );
        let (now, baseline) = c.round_trips().unwrap();
        assert_eq!(baseline, MS * 2);
        assert!(
            now <= baseline * 2 + MS * 2,
            "the loops settle where the round trip is not queued: {now:?}, {targets:?}"
        );
        assert!(
            targets[100..].iter().all(|&t| t >= 2),
            "a slower server still gets more than one loop: {targets:?}"
        );
    }

    /// Receives that could ask for only part of a batch (the loops split the free permits)
    /// take loops away, one per round trip, however fast the receives are.
    #[test]
    fn receives_short_of_permits_take_a_loop_away_once_per_round_trip() {
        let mut c = LoopController::new(64);
        let start = Instant::now();
        full_receives(&mut c, start, 9, MS, |_| MS * 4);
        assert_eq!(c.target(), 10);
        // 3 permits each, a receive ending every 0.5 ms, for 40 ms: one loop per 4 ms.
        let targets: Vec<u32> = (0..80u32)
            .map(|i| c.observe(timed(3, 3, 0, MS * 4, start + MS * 10 + MS * i / 2)))
            .collect();
        assert_eq!(c.target(), 1, "{targets:?}");
        assert_eq!(targets[0], 9, "the first takes one at once");
        assert_eq!(targets[7], 9, "the next waits a round trip: {targets:?}");
        assert_eq!(targets[8], 8, "{targets:?}");
    }

    #[test]
    fn a_round_trip_between_fast_and_queued_holds() {
        let mut c = LoopController::new(64);
        let start = Instant::now();
        full_receives(&mut c, start, 3, MS, |_| MS * 20);
        assert_eq!(c.target(), 4);
        // 35 ms from now on: once smoothed past 1.5x (30 ms) it stops growing, and below 2x
        // (40 ms) it takes nothing away.
        let later = start + Duration::from_secs(2);
        let targets = full_receives(&mut c, later, 40, MS * 50, |_| MS * 35);
        let (now, _) = c.round_trips().unwrap();
        assert!(now > MS * 30 && now <= MS * 35, "{now:?}");
        assert!(
            targets.iter().skip(10).all(|&t| t == targets[10]),
            "held once the round trip settled between the two: {targets:?}"
        );
    }

    #[test]
    fn queued_round_trips_take_at_most_one_loop_per_round_trip() {
        let mut c = LoopController::new(64);
        let start = Instant::now();
        full_receives(&mut c, start, 15, MS, |_| MS * 2);
        assert_eq!(c.target(), 16);
        // Suddenly 100 ms round trips, a receive ending every millisecond (16 loops).
        let later = start + MS * 100;
        let targets = full_receives(&mut c, later, 400, MS, |_| MS * 100);
        let taken = 16 - c.target();
        assert!(taken >= 2, "loops were taken away: {targets:?}");
        // Shrinks start once the smoothed round trip passes 14 ms, then at most one per
        // smoothed round trip (at least 14 ms) over 400 ms.
        assert!(
            taken <= 400 / 14,
            "at most one per round trip: {taken}, {targets:?}"
        );
    }

    #[test]
    fn the_fastest_round_trip_is_forgotten_after_half_a_minute() {
        let mut c = LoopController::new(64);
        let start = Instant::now();
        full_receives(&mut c, start, 1, MS, |_| MS * 2);
        let later = start + Duration::from_secs(5);
        full_receives(&mut c, later, 50, MS * 10, |_| MS * 40);
        assert_eq!(
            c.round_trips().unwrap().1,
            MS * 2,
            "still within the window"
        );
        // Over half a minute after the last of those: only the new round trip is left.
        let much_later = start + Duration::from_secs(40);
        full_receives(&mut c, much_later, 1, MS, |_| MS * 40);
        let (_, baseline) = c.round_trips().unwrap();
        assert!(
            baseline > MS * 30,
            "the 2 ms of 40 s ago is gone: {baseline:?}"
        );
    }

    /// Partial and empty receives (long polls that waited) say nothing about the round trip.
    #[test]
    fn only_full_receives_are_timed() {
        let mut c = LoopController::new(64);
        let start = Instant::now();
        c.observe(timed(10, 3, 500, Duration::from_secs(20), start));
        c.observe(timed(10, 0, 500, Duration::from_secs(20), start));
        assert_eq!(c.round_trips(), None);
        c.observe(timed(10, 10, 500, MS * 4, start));
        assert_eq!(c.round_trips(), Some((MS * 4, MS * 4)));
    }
}
