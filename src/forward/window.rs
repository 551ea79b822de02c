//! The deliveries a leading forwarder holds, in feed order: waiting to be sent, being sent, or
//! ended (2xx or dead letter) but not yet acknowledged because one before them has not ended.
//!
//! Why a window and not pages: a page was acknowledged only once every delivery in it had
//! ended, so a slow endpoint kept a page open for tens of seconds and each restart re-sent all
//! of it. Here each end is recorded as it happens ([`Window::unrecorded_ends`]) and the feed
//! position moves over the contiguous ended run at the front ([`Window::pop_ended_front`]), so
//! what a restart sends again is only what was in flight.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::deliver::{Delivered, Delivery};
use crate::store::feed::Position;
use crate::store::forward_plan::PlanState;

/// How one delivery stands in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    Waiting,
    Sending,
    Delivered,
    DeadLettered { attempts: u32, reason: String },
}

/// One recorded delivery.
#[derive(Debug, Clone)]
pub struct Slot {
    pub first: Position,
    pub last: Position,
    /// The request; its body is dropped once the end is recorded (only positions are needed
    /// after that).
    pub delivery: Delivery,
    /// When its oldest row was stored (the lag metric); None for a slot resumed as ended.
    pub oldest_stored_at: Option<DateTime<Utc>>,
    pub state: SlotState,
    /// Whether its end is in Postgres.
    pub end_recorded: bool,
}

impl Slot {
    fn ended(&self) -> bool {
        matches!(
            self.state,
            SlotState::Delivered | SlotState::DeadLettered { .. }
        )
    }
}

/// The deliveries after the consumer's position, oldest first. Each has a sequence number that
/// stays its own while earlier ones leave the front.
#[derive(Debug, Default)]
pub struct Window {
    slots: VecDeque<Slot>,
    /// The sequence number of `slots[0]`.
    front: u64,
}

impl Window {
    /// Add a delivery after the others; its sequence number.
    pub fn push(&mut self, slot: Slot) -> u64 {
        self.slots.push_back(slot);
        self.front + self.slots.len() as u64 - 1
    }

    /// A delivery resumed from Postgres that had already ended (no request to send again).
    pub fn push_ended(&mut self, first: Position, last: Position, rows: usize, state: PlanState) {
        let state = match state {
            PlanState::DeadLettered => SlotState::DeadLettered {
                attempts: 0,
                reason: String::new(),
            },
            _ => SlotState::Delivered,
        };
        self.push(Slot {
            first,
            last,
            delivery: Delivery {
                rows,
                ..Delivery::default()
            },
            oldest_stored_at: None,
            state,
            end_recorded: true,
        });
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// How many wait to be sent.
    pub fn waiting(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == SlotState::Waiting)
            .count()
    }

    /// The oldest waiting delivery, now marked as being sent: its sequence number and request.
    pub fn start_next(&mut self) -> Option<(u64, Delivery)> {
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.state == SlotState::Waiting)?;
        slot.state = SlotState::Sending;
        Some((self.front + i as u64, slot.delivery.clone()))
    }

    /// How delivery `seq` ended. `Stopped` puts it back to waiting.
    pub fn end(&mut self, seq: u64, outcome: Delivered) {
        let Some(slot) = seq
            .checked_sub(self.front)
            .and_then(|i| self.slots.get_mut(i as usize))
        else {
            return;
        };
        slot.state = match outcome {
            Delivered::Ok { .. } => SlotState::Delivered,
            Delivered::DeadLetter { attempts, reason } => {
                SlotState::DeadLettered { attempts, reason }
            }
            Delivered::Stopped => SlotState::Waiting,
        };
    }

    /// Ended deliveries whose end is not in Postgres yet.
    pub fn unrecorded_ends(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.ended() && !s.end_recorded)
    }

    /// How many at the front have ended (what the position can move over).
    pub fn ended_front(&self) -> usize {
        self.slots.iter().take_while(|s| s.ended()).count()
    }

    /// The last position of the ended front and how many rows it holds; None when the oldest
    /// delivery has not ended.
    pub fn ended_front_reach(&self) -> Option<(Position, usize)> {
        let n = self.ended_front();
        let last = self.slots.get(n.checked_sub(1)?)?.last;
        let rows = self.slots.iter().take(n).map(|s| s.delivery.rows).sum();
        Some((last, rows))
    }

    /// Note every end as recorded, and drop their bodies.
    pub fn mark_recorded(&mut self) {
        for s in self.slots.iter_mut().filter(|s| s.ended()) {
            s.end_recorded = true;
            s.delivery.body = bytes::Bytes::new();
        }
    }

    /// Take the ended deliveries at the front (acknowledged by the caller).
    pub fn pop_ended_front(&mut self) -> Vec<Slot> {
        let n = self.ended_front();
        self.front += n as u64;
        self.slots.drain(..n).collect()
    }

    /// When the oldest row not yet delivered was stored.
    pub fn oldest_pending_stored_at(&self) -> Option<DateTime<Utc>> {
        self.slots
            .iter()
            .find(|s| !s.ended())
            .and_then(|s| s.oldest_stored_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(id: i64) -> Position {
        Position { xid: 7, id }
    }

    fn slot(first: i64, last: i64) -> Slot {
        Slot {
            first: pos(first),
            last: pos(last),
            delivery: Delivery {
                key: format!("k:{first}-{last}"),
                body: bytes::Bytes::from_static(b"[]"),
                rows: (last - first + 1) as usize,
            },
            oldest_stored_at: None,
            state: SlotState::Waiting,
            end_recorded: false,
        }
    }

    /// Regression (issue 26, part 4): a page was acknowledged only when all of it had ended; an
    /// end later in the window must be recorded at once, and the front move only over the
    /// contiguous ended run.
    #[test]
    fn a_later_delivery_that_ended_waited_for_the_whole_page() {
        let mut w = Window::default();
        let a = w.push(slot(1, 25));
        let b = w.push(slot(26, 29));
        assert_eq!(w.start_next().map(|(s, _)| s), Some(a));
        assert_eq!(w.start_next().map(|(s, _)| s), Some(b));
        assert_eq!(w.start_next().map(|(s, _)| s), None);
        w.end(b, Delivered::Ok { attempts: 1 });
        assert_eq!(
            w.unrecorded_ends().map(|s| s.last).collect::<Vec<_>>(),
            [pos(29)]
        );
        assert_eq!(w.ended_front(), 0, "the first has not ended");
        w.mark_recorded();
        assert_eq!(w.unrecorded_ends().count(), 0);
        assert!(w.pop_ended_front().is_empty());
        w.end(
            a,
            Delivered::DeadLetter {
                attempts: 3,
                reason: "no".into(),
            },
        );
        let front = w.pop_ended_front();
        assert_eq!(
            front.iter().map(|s| s.last).collect::<Vec<_>>(),
            [pos(25), pos(29)]
        );
        assert_eq!(w.len(), 0);
        // Sequence numbers stay: a late answer for a popped slot is ignored.
        w.end(a, Delivered::Ok { attempts: 1 });
        let c = w.push(slot(30, 30));
        assert_eq!(c, 2);
        w.end(c, Delivered::Stopped);
        assert_eq!(w.waiting(), 1, "a stopped delivery waits to be sent again");
    }
}
