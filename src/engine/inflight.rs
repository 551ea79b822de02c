//! Every message this process has received and not yet acked, with the concurrency permits it
//! holds. It is the single source of truth for three jobs: backpressure (a permit is released
//! only when its message leaves the registry, with its ack queued), the heartbeat (extend what
//! is still here), and shutdown (whatever is still here when the drain ends is released with
//! visibility 0). It also keeps what the in-flight limit follows (`limit.rs`): how long
//! messages held their permits, and the bytes of the bodies held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::acker::{Acker, QueueRef};

/// Permits for one message: its queue's and the process-wide one.
pub struct Permits {
    pub _queue: OwnedSemaphorePermit,
    pub _global: OwnedSemaphorePermit,
}

struct Entry {
    queue: QueueRef,
    receipt_handle: String,
    visibility_timeout_secs: u32,
    heartbeat: Option<Duration>,
    last_extended: Instant,
    /// When its receive ended.
    received: Instant,
    body_bytes: u64,
    _permits: Permits,
}

/// Token naming one received message in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u64);

#[derive(Clone, Default)]
pub struct InFlight {
    entries: Arc<Mutex<HashMap<Token, Entry>>>,
    next: Arc<AtomicU64>,
    /// Messages removed, and the microseconds they held their permits, since the last
    /// [`InFlight::take_held`].
    held: Arc<HeldCounters>,
    body_bytes: Arc<AtomicU64>,
}

#[derive(Default)]
struct HeldCounters {
    messages: AtomicU64,
    micros: AtomicU64,
}

/// What [`InFlight::take_held`] returns: messages that left, and their mean time here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub messages: u64,
    pub mean: Duration,
}

impl InFlight {
    pub fn insert(
        &self,
        queue: QueueRef,
        receipt_handle: String,
        visibility_timeout_secs: u32,
        heartbeat_secs: u32,
        body_bytes: usize,
        permits: Permits,
    ) -> Token {
        let token = Token(self.next.fetch_add(1, Ordering::Relaxed));
        let heartbeat =
            (heartbeat_secs > 0).then(|| Duration::from_secs(u64::from(heartbeat_secs)));
        let entry = Entry {
            queue,
            receipt_handle,
            visibility_timeout_secs,
            heartbeat,
            last_extended: Instant::now(),
            received: Instant::now(),
            body_bytes: body_bytes as u64,
            _permits: permits,
        };
        self.body_bytes
            .fetch_add(entry.body_bytes, Ordering::Relaxed);
        self.lock().insert(token, entry);
        token
    }

    /// The message's ack is being handed to the acker: forget it (no more heartbeats, not
    /// released on shutdown) and release its permits now; the acks awaiting SQS's answer are
    /// bounded separately, by the queue's `acks_pending` (`process.rs`, `Settle`).
    pub fn remove(&self, token: Token) {
        let Some(entry) = self.lock().remove(&token) else {
            return;
        };
        let micros = entry
            .received
            .elapsed()
            .as_micros()
            .min(u128::from(u64::MAX)) as u64;
        self.held.messages.fetch_add(1, Ordering::Relaxed);
        self.held.micros.fetch_add(micros, Ordering::Relaxed);
        self.body_bytes
            .fetch_sub(entry.body_bytes, Ordering::Relaxed);
    }

    /// Messages removed since the last call, and their mean time from receive to removal.
    pub fn take_held(&self) -> Held {
        let messages = self.held.messages.swap(0, Ordering::Relaxed);
        let micros = self.held.micros.swap(0, Ordering::Relaxed);
        Held {
            messages,
            mean: Duration::from_micros(micros.checked_div(messages).unwrap_or(0)),
        }
    }

    /// Mean body size of the messages here now (0 when none).
    pub fn mean_body_bytes(&self) -> u64 {
        let bytes = self.body_bytes.load(Ordering::Relaxed);
        bytes.checked_div(self.len() as u64).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn count_for(&self, queue: &str) -> usize {
        self.lock()
            .values()
            .filter(|e| &*e.queue.name == queue)
            .count()
    }

    /// Extend the visibility of every message whose heartbeat period has passed.
    pub fn beat(&self, acker: &Acker) -> usize {
        let now = Instant::now();
        let mut extended = 0;
        for entry in self.lock().values_mut() {
            if let Some(period) = entry.heartbeat {
                if now.duration_since(entry.last_extended) >= period {
                    entry.last_extended = now;
                    drop(acker.change_visibility(
                        &entry.queue,
                        entry.receipt_handle.clone(),
                        entry.visibility_timeout_secs,
                    ));
                    extended += 1;
                }
            }
        }
        extended
    }

    /// Make every message still here visible again at once, and forget them.
    pub fn release_all(&self, acker: &Acker) -> usize {
        let drained: Vec<Entry> = self.lock().drain().map(|(_, e)| e).collect();
        let bytes: u64 = drained.iter().map(|e| e.body_bytes).sum();
        self.body_bytes.fetch_sub(bytes, Ordering::Relaxed);
        for entry in &drained {
            drop(acker.change_visibility(&entry.queue, entry.receipt_handle.clone(), 0));
        }
        drained.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Token, Entry>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
