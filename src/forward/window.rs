//! The deliveries a leading forwarder holds, in feed order: waiting to be sent, being sent, or
//! ended (2xx or dead letter) but not yet acknowledged because one before them has not ended.
//!
//! Why a window and not pages: a page was acknowledged only once every delivery in it had
//! ended, so a slow endpoint kept a page open for tens of seconds and each restart re-sent all
//! of it. Here each end is recorded soon after it happens and the feed position moves over the
//! contiguous ended run at the front, so what a restart sends again is only what was in flight.
//!
//! Recording is batched: [`Window::take_settlement`] collects every end not yet recorded and the
//! ended front into one [`Settlement`], which the caller commits in one transaction while
//! deliveries go on, then hands back to [`Window::settled`]. Every operation on the hot path is
//! O(1) per delivery (a window holds thousands at high rates).

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

impl SlotState {
    fn ended(&self) -> bool {
        matches!(self, SlotState::Delivered | SlotState::DeadLettered { .. })
    }
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
}

/// An end to record: a delivery past the ended front that got its 2xx, or a dead letter (with
/// what the dead-letter row keeps).
#[derive(Debug, Clone)]
pub struct End {
    pub last: Position,
    pub key: String,
    pub body: bytes::Bytes,
    pub state: SlotState,
}

/// What one transaction records: ends, and the position to acknowledge (with the rows it moves
/// over) when the front has ended.
#[derive(Debug, Default)]
pub struct Settlement {
    pub ends: Vec<End>,
    pub ack: Option<(Position, usize)>,
    seqs: Vec<u64>,
    front_len: usize,
}

impl Settlement {
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty() && self.ack.is_none()
    }
}

/// The deliveries after the consumer's position, oldest first. Each has a sequence number that
/// stays its own while earlier ones leave the front.
#[derive(Debug, Default)]
pub struct Window {
    slots: VecDeque<Slot>,
    /// The sequence number of `slots[0]`.
    front: u64,
    /// The sequence number of the next delivery to send (all before it were started).
    next_unsent: u64,
    /// Ended deliveries whose end is not recorded yet, in the order they ended.
    unrecorded: Vec<u64>,
    /// How many slots at the front are known to have ended (a cache of the scan).
    ended_front: usize,
}

impl Window {
    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = seq.checked_sub(self.front)?;
        self.slots.get_mut(i as usize)
    }

    /// Add a delivery after the others; its sequence number.
    pub fn push(&mut self, slot: Slot) -> u64 {
        let seq = self.front + self.slots.len() as u64;
        self.slots.push_back(slot);
        seq
    }

    /// A delivery resumed from Postgres that had already ended (no request to send again, its
    /// end already recorded). Resumed deliveries come before any new one.
    pub fn push_ended(&mut self, first: Position, last: Position, rows: usize, state: PlanState) {
        let state = match state {
            PlanState::DeadLettered => SlotState::DeadLettered {
                attempts: 0,
                reason: String::new(),
            },
            _ => SlotState::Delivered,
        };
        let seq = self.push(Slot {
            first,
            last,
            delivery: Delivery {
                rows,
                ..Delivery::default()
            },
            oldest_stored_at: None,
            state,
        });
        if self.next_unsent == seq {
            self.next_unsent += 1;
        }
        self.advance_front();
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// How many wait to be sent.
    pub fn waiting(&self) -> usize {
        (self.front + self.slots.len() as u64).saturating_sub(self.next_unsent) as usize
    }

    /// The oldest waiting delivery, now marked as being sent: its sequence number and request.
    /// Resumed ended deliveries are skipped.
    pub fn start_next(&mut self) -> Option<(u64, Delivery)> {
        loop {
            let seq = self.next_unsent.max(self.front);
            let i = (seq - self.front) as usize;
            let waiting = self.slots.get(i)?.state == SlotState::Waiting;
            self.next_unsent = seq + 1;
            if waiting {
                let slot = &mut self.slots[i];
                slot.state = SlotState::Sending;
                return Some((seq, slot.delivery.clone()));
            }
        }
    }

    /// How delivery `seq` ended. `Stopped` (shutdown or a lost lead) changes nothing: the
    /// caller stops, and the delivery stays recorded as planned.
    pub fn end(&mut self, seq: u64, outcome: Delivered) {
        let Some(slot) = self.slot_mut(seq) else {
            return;
        };
        if slot.state != SlotState::Sending {
            return;
        }
        slot.state = match outcome {
            Delivered::Ok { .. } => SlotState::Delivered,
            Delivered::DeadLetter { attempts, reason } => {
                SlotState::DeadLettered { attempts, reason }
            }
            Delivered::Stopped => return,
        };
        self.unrecorded.push(seq);
        self.advance_front();
    }

    fn advance_front(&mut self) {
        while self
            .slots
            .get(self.ended_front)
            .is_some_and(|s| s.state.ended())
        {
            self.ended_front += 1;
        }
    }

    /// Everything to record now: the ends not recorded yet (a 2xx at the front needs no
    /// record of its own: the acknowledgement forgets it), and the ended front's reach.
    pub fn take_settlement(&mut self) -> Settlement {
        let front_len = self.ended_front;
        let front_end = self.front + front_len as u64;
        let seqs = std::mem::take(&mut self.unrecorded);
        let ends = seqs
            .iter()
            .filter_map(|&seq| {
                let slot = self.slots.get(seq.checked_sub(self.front)? as usize)?;
                let needed =
                    matches!(slot.state, SlotState::DeadLettered { .. }) || seq >= front_end;
                needed.then(|| End {
                    last: slot.last,
                    key: slot.delivery.key.clone(),
                    body: slot.delivery.body.clone(),
                    state: slot.state.clone(),
                })
            })
            .collect();
        let ack = (front_len > 0).then(|| {
            let rows = self
                .slots
                .iter()
                .take(front_len)
                .map(|s| s.delivery.rows)
                .sum();
            (self.slots[front_len - 1].last, rows)
        });
        Settlement {
            ends,
            ack,
            seqs,
            front_len,
        }
    }

    /// `s` committed: drop the recorded bodies, and the acknowledged front.
    pub fn settled(&mut self, s: Settlement) {
        for seq in &s.seqs {
            if let Some(slot) = self.slot_mut(*seq) {
                slot.delivery.body = bytes::Bytes::new();
            }
        }
        self.slots.drain(..s.front_len);
        self.front += s.front_len as u64;
        self.ended_front -= s.front_len;
    }

    /// `s` did not commit: its ends are to be recorded again.
    pub fn unsettled(&mut self, s: Settlement) {
        let mut seqs = s.seqs;
        seqs.append(&mut self.unrecorded);
        self.unrecorded = seqs;
    }

    /// When the oldest row not yet delivered was stored.
    pub fn oldest_pending_stored_at(&self) -> Option<DateTime<Utc>> {
        self.slots
            .get(self.ended_front)
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
        assert_eq!(w.waiting(), 2);
        assert_eq!(w.start_next().map(|(s, _)| s), Some(a));
        assert_eq!(w.start_next().map(|(s, _)| s), Some(b));
        assert_eq!(w.start_next().map(|(s, _)| s), None);
        assert_eq!(w.waiting(), 0);
        w.end(b, Delivered::Ok { attempts: 1 });
        let s = w.take_settlement();
        assert_eq!(s.ends.iter().map(|e| e.last).collect::<Vec<_>>(), [pos(29)]);
        assert_eq!(s.ack, None, "the first has not ended");
        w.settled(s);
        assert!(w.take_settlement().is_empty());
        w.end(
            a,
            Delivered::DeadLetter {
                attempts: 3,
                reason: "no".into(),
            },
        );
        let s = w.take_settlement();
        assert_eq!(s.ends.len(), 1, "the dead letter, with its body");
        assert_eq!(&s.ends[0].body[..], b"[]");
        assert_eq!(s.ack, Some((pos(29), 29)), "both, over their 29 rows");
        w.settled(s);
        assert_eq!(w.len(), 0);
        // Sequence numbers stay: a late answer for an acknowledged delivery is ignored.
        w.end(a, Delivered::Ok { attempts: 1 });
        let c = w.push(slot(30, 30));
        assert_eq!(c, 2);
        assert_eq!(w.waiting(), 1);
        assert!(w.take_settlement().is_empty());
    }

    /// A settlement that did not commit is taken again, with the ends that came meanwhile.
    #[test]
    fn an_uncommitted_settlement_is_recorded_again() {
        let mut w = Window::default();
        let a = w.push(slot(1, 1));
        let b = w.push(slot(2, 2));
        w.start_next();
        w.start_next();
        w.end(b, Delivered::Ok { attempts: 1 });
        let s = w.take_settlement();
        w.end(a, Delivered::Ok { attempts: 1 });
        w.unsettled(s);
        let s = w.take_settlement();
        assert_eq!(s.ack, Some((pos(2), 2)));
        assert!(
            s.ends.is_empty(),
            "2xx at the front are forgotten by the ack"
        );
        w.settled(s);
        assert_eq!(w.len(), 0);
    }

    /// Deliveries resumed as ended are not sent again, and count toward the front.
    #[test]
    fn resumed_ended_deliveries_are_not_sent_again() {
        let mut w = Window::default();
        w.push_ended(pos(1), pos(4), 4, PlanState::Delivered);
        let b = w.push(slot(5, 5));
        assert_eq!(w.waiting(), 1);
        assert_eq!(w.start_next().map(|(s, _)| s), Some(b));
        let s = w.take_settlement();
        assert_eq!(s.ack, Some((pos(4), 4)));
        w.settled(s);
        w.end(b, Delivered::Ok { attempts: 1 });
        assert_eq!(w.take_settlement().ack, Some((pos(5), 1)));
    }
}
