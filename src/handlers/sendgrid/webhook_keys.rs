//! Which keys verify an Event Webhook message in the worker, by the route it came in on.
//!
//! With several SendGrid webhooks, each signs with its own key, and the router routes each to
//! `/sendgrid/events/{name}` and writes the name into the envelope (`source.webhook`). The
//! worker's own check (defence in depth behind the router's) must then pick the key by that
//! name: `event_webhook_public_key` for the unnamed default route, `webhook_public_keys.NAME`
//! for a named one. During a key rotation a route has two keys and either verifies (the worker
//! has no overlap deadline of its own: it may handle a message long after the router accepted
//! it, so the router's deadline is the one that counts; remove the old key after it).
//!
//! A named route without an entry is not checked again here: the router verified it with that
//! route's key, and checking it with the default key would dead-letter every genuine event of
//! that webhook.

use std::collections::{BTreeMap, HashMap};

use mailroom_sendgrid::{PublicKey, SignatureError};

/// The parsed keys.
#[derive(Default)]
pub struct WebhookKeys {
    default: Vec<PublicKey>,
    named: HashMap<String, Vec<PublicKey>>,
}

/// A key that does not parse, and where it was configured.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {source}")]
pub struct KeyError {
    pub setting: String,
    #[source]
    pub source: SignatureError,
}

impl WebhookKeys {
    /// Parses the default route's keys (current, then previous) and the named routes'.
    pub fn parse(
        default: &[&str],
        named: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, KeyError> {
        let parse = |setting: String, value: &str| {
            PublicKey::from_base64(value.trim()).map_err(|source| KeyError { setting, source })
        };
        let default = default
            .iter()
            .map(|k| parse("event_webhook_public_key".into(), k))
            .collect::<Result<_, _>>()?;
        let named = named
            .iter()
            .map(|(name, keys)| {
                let keys = keys
                    .iter()
                    .map(|k| parse(format!("webhook_public_keys.{name}"), k))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((name.clone(), keys))
            })
            .collect::<Result<_, KeyError>>()?;
        Ok(Self { default, named })
    }

    /// Whether any key is configured.
    pub fn any(&self) -> bool {
        !self.default.is_empty() || self.named.values().any(|k| !k.is_empty())
    }

    /// The keys for a message from `webhook` (the envelope's route name); empty: not checked.
    pub fn for_webhook(&self, webhook: Option<&str>) -> &[PublicKey] {
        match webhook {
            None => &self.default,
            Some(name) => self.named.get(name).map_or(&[], Vec::as_slice),
        }
    }

    /// Verifies with each of `keys` in turn; the last error when none verifies.
    pub fn verify(
        keys: &[PublicKey],
        signature: &str,
        timestamp: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let mut last = None;
        for key in keys {
            match key.verify(signature, timestamp, body) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        last.map_or(Ok(()), Err)
    }
}
