//! How many long polls a queue keeps open, decided from what its receives bring back.
//!
//! Why adaptive: a receive loop is one SQS call at a time, so a loop moves at most
//! `batch_size` messages per round trip. On loopback a round trip takes microseconds and a few
//! loops fill any concurrency; on AWS it takes milliseconds and the same loops starve the
//! handlers (measured: one-event messages fell from ~7k to 3.6k msgs/s at 5 ms each way with
//! 8 loops). A fixed count large enough for AWS wastes one open long poll per loop on an idle
//! queue. So the count follows the evidence:
//!
//! - a receive that asked for a full batch (permits were free), got a full batch, and still
//!   leaves at least a batch of permits free says the queue has more than the loops fetch:
//!   one more loop (up to the configured maximum);
//! - an empty receive says the loops outnumber the messages: one fewer (down to one, so an
//!   idle queue costs one long poll);
//! - anything else (a partial batch, or permits running out) holds: the queue is nearly
//!   drained, or the handlers, not the receives, are the bound.
//!
//! Receive latency needs no separate input: at a higher latency each loop brings less per
//! second, permits stay free longer, more receives come back full with permits to spare, and
//! the count grows until the permits (the in-flight bound) are the limit. The rule is a pure
//! function of the observations ([`LoopController::observe`]) so it is tested without SQS.

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
}

/// The number of receive loops that should be polling one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopController {
    target: u32,
    max: u32,
}

impl LoopController {
    /// Start with one loop (an idle queue costs one long poll); grow to at most `max`.
    pub fn new(max: u32) -> Self {
        Self {
            target: 1,
            max: max.max(1),
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

    /// Take one receive's result into account; returns the new target.
    pub fn observe(&mut self, sample: ReceiveSample) -> u32 {
        let full_batch = sample.asked >= sample.batch_size && sample.got >= sample.asked;
        let room_for_another = sample.free_permits >= sample.batch_size as usize;
        if sample.got == 0 {
            self.target = self.target.saturating_sub(1).max(1);
        } else if full_batch && room_for_another {
            self.target = (self.target + 1).min(self.max);
        }
        self.target
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
        let (before, after) = {
            let mut c = self.lock();
            let before = c.target();
            (before, c.observe(sample))
        };
        if before != after {
            self.target.send_replace(after);
            self.peak
                .fetch_max(after, std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!("mailroom_receive_loops", "queue" => self.queue.to_string())
                .set(f64::from(after));
            tracing::debug!(queue = %self.queue, loops = after, "receive loops adjusted");
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
        ReceiveSample {
            asked,
            got,
            batch_size: 10,
            free_permits,
        }
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
}
