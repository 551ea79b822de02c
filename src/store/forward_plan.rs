//! A forwarder's recorded deliveries (`mailroom_forward_deliveries`, migration
//! `20261207000020`): each delivery is written here before its first attempt, so the rows it
//! carries and its Idempotency-Key never change, whatever is stored after it or however often
//! the process restarts; its end (2xx or dead letter) is written as it happens, so a restart
//! sends again only what was in flight.

use sqlx::{PgConnection, Row};

use super::feed::Position;
use super::StoreError;

/// How a recorded delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    /// Not known to have ended: sent again (same rows, same key) after a restart.
    Planned,
    /// The application answered 2xx.
    Delivered,
    /// Kept as a dead letter.
    DeadLettered,
}

impl PlanState {
    fn as_str(self) -> &'static str {
        match self {
            PlanState::Planned => "planned",
            PlanState::Delivered => "delivered",
            PlanState::DeadLettered => "dead_lettered",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "planned" => Some(PlanState::Planned),
            "delivered" => Some(PlanState::Delivered),
            "dead_lettered" => Some(PlanState::DeadLettered),
            _ => None,
        }
    }
}

/// One recorded delivery: the rows from `first` to `last` (both included), `rows` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedDelivery {
    pub first: Position,
    pub last: Position,
    pub rows: i32,
    pub state: PlanState,
}

/// Record `deliveries` for `forwarder`, before any is sent. A delivery already recorded (the
/// same last row) is kept as it was.
pub async fn record(
    conn: &mut PgConnection,
    forwarder: &str,
    deliveries: &[PlannedDelivery],
) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&PlannedDelivery) -> u64| -> Vec<String> {
        deliveries.iter().map(|d| f(d).to_string()).collect()
    };
    let first_xid = text(|d| d.first.xid);
    let last_xid = text(|d| d.last.xid);
    let first_id: Vec<i64> = deliveries.iter().map(|d| d.first.id).collect();
    let last_id: Vec<i64> = deliveries.iter().map(|d| d.last.id).collect();
    let rows: Vec<i32> = deliveries.iter().map(|d| d.rows).collect();
    sqlx::query(
        "INSERT INTO mailroom_forward_deliveries
             (forwarder, first_xid, first_id, last_xid, last_id, rows)
         SELECT $1, u.first_xid::xid8, u.first_id, u.last_xid::xid8, u.last_id, u.rows
         FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::int[])
              AS u(first_xid, first_id, last_xid, last_id, rows)
         ON CONFLICT (forwarder, last_xid, last_id) DO NOTHING",
    )
    .bind(forwarder)
    .bind(first_xid)
    .bind(first_id)
    .bind(last_xid)
    .bind(last_id)
    .bind(rows)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query("recording forwarder deliveries"))?;
    Ok(())
}

/// `forwarder`'s recorded deliveries past `position` (the consumer's), in feed order; the ones
/// at or behind it (acknowledged by a process that stopped before deleting them) are deleted.
pub async fn load(
    conn: &mut PgConnection,
    forwarder: &str,
    position: Position,
) -> Result<Vec<PlannedDelivery>, StoreError> {
    forget_upto(conn, forwarder, position).await?;
    let rows = sqlx::query(
        "SELECT first_xid::text, first_id, last_xid::text, last_id, rows, state
         FROM mailroom_forward_deliveries WHERE forwarder = $1
         ORDER BY last_xid, last_id",
    )
    .bind(forwarder)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::query("reading forwarder deliveries"))?;
    rows.iter()
        .map(|row| {
            let xid = |i: usize| -> Result<u64, sqlx::Error> {
                let text: String = row.try_get(i)?;
                text.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
            };
            let state: String = row.try_get(5)?;
            Ok(PlannedDelivery {
                first: Position {
                    xid: xid(0)?,
                    id: row.try_get(1)?,
                },
                last: Position {
                    xid: xid(2)?,
                    id: row.try_get(3)?,
                },
                rows: row.try_get(4)?,
                state: PlanState::parse(&state).ok_or_else(|| {
                    sqlx::Error::Decode(format!("unknown delivery state {state:?}").into())
                })?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::query("reading forwarder deliveries"))
}

/// Mark the deliveries ending at `lasts` as ended (`state` is Delivered or DeadLettered).
pub async fn mark_ended(
    conn: &mut PgConnection,
    forwarder: &str,
    lasts: &[Position],
    state: PlanState,
) -> Result<(), StoreError> {
    if lasts.is_empty() {
        return Ok(());
    }
    let xids: Vec<String> = lasts.iter().map(|p| p.xid.to_string()).collect();
    let ids: Vec<i64> = lasts.iter().map(|p| p.id).collect();
    sqlx::query(
        "UPDATE mailroom_forward_deliveries d SET state = $2, ended_at = now()
         FROM UNNEST($3::text[], $4::bigint[]) AS u(last_xid, last_id)
         WHERE d.forwarder = $1 AND d.last_xid = u.last_xid::xid8 AND d.last_id = u.last_id",
    )
    .bind(forwarder)
    .bind(state.as_str())
    .bind(xids)
    .bind(ids)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query("recording ended forwarder deliveries"))?;
    Ok(())
}

/// Forget `forwarder`'s deliveries up to `upto` (acknowledged in the same transaction).
pub async fn forget_upto(
    conn: &mut PgConnection,
    forwarder: &str,
    upto: Position,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM mailroom_forward_deliveries
         WHERE forwarder = $1 AND (last_xid, last_id) <= ($2::text::xid8, $3)",
    )
    .bind(forwarder)
    .bind(upto.xid.to_string())
    .bind(upto.id)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query(
        "forgetting acknowledged forwarder deliveries",
    ))?;
    Ok(())
}

/// Forget every recorded delivery of `forwarder` after `after` (their rows could not be read
/// back as they were: they are cut again).
pub async fn forget_after(
    conn: &mut PgConnection,
    forwarder: &str,
    after: Position,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM mailroom_forward_deliveries
         WHERE forwarder = $1 AND (last_xid, last_id) > ($2::text::xid8, $3)",
    )
    .bind(forwarder)
    .bind(after.xid.to_string())
    .bind(after.id)
    .execute(&mut *conn)
    .await
    .map_err(StoreError::query("forgetting forwarder deliveries"))?;
    Ok(())
}
