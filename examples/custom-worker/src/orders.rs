//! The `orders` handler: JSON order messages from the application's own queue into
//! `app_orders`, one transaction per batch, idempotent on `order_id` (a redelivered or
//! duplicated message adds no row).

use mailroom::{BoxFuture, ErrorClass, Handler, Job, Outcome, Setup, Store};
use serde::Deserialize;

/// `[handlers.orders]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// Currency of orders that do not name one.
    #[serde(default = "default_currency")]
    pub default_currency: String,
    /// Orders above this total are refused as bad data (dead letters), not stored.
    pub max_total_cents: Option<i64>,
}

fn default_currency() -> String {
    "USD".into()
}

/// One order message, as the application's producer sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    pub order_id: String,
    pub customer_email: String,
    pub total_cents: i64,
    pub currency: Option<String>,
}

/// A config that cannot work, refused at start (and by `mailroom-app check`).
#[derive(Debug, thiserror::Error)]
pub enum OrdersConfigError {
    #[error("default_currency must be a three-letter code, got {0:?}")]
    Currency(String),
}

pub struct Orders {
    store: Store,
    config: OrdersConfig,
}

impl Orders {
    /// The factory `Worker::handler` calls with the `[handlers.orders]` section.
    pub fn from_config(config: OrdersConfig, setup: &Setup<'_>) -> Result<Self, OrdersConfigError> {
        let c = &config.default_currency;
        if c.len() != 3 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
            return Err(OrdersConfigError::Currency(c.clone()));
        }
        Ok(Self {
            store: setup.store(),
            config,
        })
    }

    /// A message's order, or why it will never be one.
    fn decode(&self, job: &Job) -> Result<Order, String> {
        let order: Order = serde_json::from_slice(&job.envelope.body)
            .map_err(|e| format!("order message is not a valid order: {e}"))?;
        if let Some(max) = self.config.max_total_cents {
            if order.total_cents > max {
                return Err(format!(
                    "order {} total {} is above max_total_cents {max}",
                    order.order_id, order.total_cents
                ));
            }
        }
        Ok(order)
    }

    /// Store the batch's orders in one transaction; commit before anything is answered Done.
    async fn store_all(&self, orders: &[(&Job, Order)]) -> Result<(), (ErrorClass, String)> {
        let failed = |e: sqlx::Error| (mailroom::classify(&e), format!("storing orders: {e}"));
        let mut tx = self
            .store
            .begin()
            .await
            .map_err(|e| (e.class(), e.to_string()))?;
        for (job, order) in orders {
            sqlx::query(
                "INSERT INTO app_orders (order_id, customer_email, total_cents, currency, sqs_message_id)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(&order.order_id)
            .bind(&order.customer_email)
            .bind(order.total_cents)
            .bind(order.currency.as_deref().unwrap_or(&self.config.default_currency))
            .bind(&job.message_id)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        }
        tx.commit().await.map_err(failed)
    }
}

impl Handler for Orders {
    fn handle_batch<'a>(&'a self, jobs: &'a [Job]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let mut outcomes = vec![Outcome::Done; jobs.len()];
            let mut good = Vec::new();
            let mut good_index = Vec::new();
            for (i, job) in jobs.iter().enumerate() {
                match self.decode(job) {
                    Ok(order) => {
                        good.push((job, order));
                        good_index.push(i);
                    }
                    Err(reason) => outcomes[i] = Outcome::dead_letter(reason),
                }
            }
            if !good.is_empty() {
                if let Err((class, reason)) = self.store_all(&good).await {
                    let outcome = match class {
                        ErrorClass::Transient => Outcome::transient(reason),
                        _ => Outcome::retry(reason),
                    };
                    for i in good_index {
                        outcomes[i] = outcome.clone();
                    }
                }
            }
            outcomes
        })
    }
}
