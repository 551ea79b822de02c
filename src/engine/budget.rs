//! The byte budget for offloaded bodies in flight (fetched from S3, decoded, being stored).
//!
//! Why: concurrency bounds messages, not bytes. With hostile (or just large) S3 pointers of up to
//! the 64 MiB envelope limit, 8 inbound messages in flight held ~625 MiB. A body reserves its
//! size here (learned with a HEAD before it is read) and holds it until its batch's handler
//! finished; a body that does not fit waits, it is never refused, and one larger than the whole
//! budget takes all of it and runs alone. Bodies that came inline in SQS (under 256 KiB) are not
//! counted: concurrency already bounds them.
//!
//! What a body holds against what it is charged (its envelope's size O, a post of P = 3/4 O),
//! at its peak, while it is stored (BENCHMARKS.md, "Large inbound emails"): the body P (the
//! S3 text, decoded in place, `mailroom_envelope::decode_owned`), raw mode's decoded
//! attachments (about 3/4 P; everything stored as sent is a slice of the body), and the bind
//! of the largest value (sqlx's argument buffer and the connection's write buffer, P each,
//! given back after the statement): about 2.8 O in raw mode, 2.25 O in parsed mode. So the
//! worker's peak RSS stays under about 30 MiB + 3 x the budget, or 3 x the largest body when
//! one larger than the budget runs alone. Before the copies were removed a raw-mode body held
//! 3.55 O and every pooled connection kept a write buffer of its largest email.
//!
//! Deadlock-free by construction: a batch waits for budget only while it holds none; a batch
//! that holds some and needs more hands the rest of its messages to a later round, after its
//! own reservation is returned (`process.rs`).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Units of the semaphore: KiB, so a u32 permit count covers any body.
const UNIT: u64 = 1024;

#[derive(Debug, Clone)]
pub struct Budget {
    units: Arc<Semaphore>,
    total_units: u32,
}

/// A reservation, returned when dropped.
#[derive(Debug)]
pub struct Reserved(#[allow(dead_code)] OwnedSemaphorePermit);

impl Budget {
    pub fn new(bytes: u64) -> Self {
        let total_units = (bytes.div_ceil(UNIT)).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Self {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    fn units_for(&self, bytes: u64) -> u32 {
        (bytes.div_ceil(UNIT).max(1)).min(u64::from(self.total_units)) as u32
    }

    /// Wait until `bytes` (at most the whole budget) are free, and take them.
    pub async fn reserve(&self, bytes: u64) -> Reserved {
        let permit = self
            .units
            .clone()
            .acquire_many_owned(self.units_for(bytes))
            .await
            .expect("the budget semaphore is never closed");
        Reserved(permit)
    }

    /// Take `bytes` if they are free now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reserved> {
        self.units
            .clone()
            .try_acquire_many_owned(self.units_for(bytes))
            .ok()
            .map(Reserved)
    }

    /// Bytes free now (for tests and logs).
    pub fn available_bytes(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[tokio::test]
    async fn a_body_larger_than_the_budget_takes_all_of_it_and_others_wait() {
        let budget = Budget::new(10 * 1024 * 1024);
        let big = budget.reserve(64 * 1024 * 1024).await;
        assert_eq!(budget.available_bytes(), 0);
        assert!(budget.try_reserve(1).is_none(), "everything else waits");
        drop(big);
        let a = budget.try_reserve(4 * 1024 * 1024).expect("fits");
        let b = budget.try_reserve(6 * 1024 * 1024).expect("fits");
        assert!(budget.try_reserve(1024).is_none());
        drop((a, b));
        assert_eq!(budget.available_bytes(), 10 * 1024 * 1024);
    }
}
