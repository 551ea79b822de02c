//! Shared test helpers: an in-memory [`Sink`] and fixture loading.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use mailroom_router::{Attribute, AttributeValue, Sink, SinkError};

#[derive(Debug, Clone)]
pub struct Sent {
    pub queue_url: String,
    pub body: String,
    pub attributes: Vec<Attribute>,
}

impl Sent {
    pub fn attribute(&self, name: &str) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }
}

/// Records what it is given; can be told to fail.
#[derive(Default)]
pub struct FakeSink {
    pub sent: Mutex<Vec<Sent>>,
    pub objects: Mutex<Vec<(String, String, Bytes)>>,
    pub fail_sqs: AtomicBool,
    pub fail_s3: AtomicBool,
}

impl FakeSink {
    pub fn failing_sqs() -> Self {
        let sink = Self::default();
        sink.fail_sqs.store(true, Ordering::SeqCst);
        sink
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.sent.lock().expect("lock").clone()
    }

    pub fn objects(&self) -> Vec<(String, String, Bytes)> {
        self.objects.lock().expect("lock").clone()
    }
}

impl Sink for FakeSink {
    async fn send_message(
        &self,
        queue_url: &str,
        body: String,
        attributes: Vec<Attribute>,
    ) -> Result<String, SinkError> {
        if self.fail_sqs.load(Ordering::SeqCst) {
            return Err(SinkError::Sqs {
                queue_url: queue_url.to_owned(),
                reason: "fake outage".to_owned(),
            });
        }
        let mut sent = self.sent.lock().expect("lock");
        sent.push(Sent {
            queue_url: queue_url.to_owned(),
            body,
            attributes,
        });
        Ok(format!("msg-{}", sent.len()))
    }

    async fn put_object(&self, bucket: &str, key: &str, bytes: Bytes) -> Result<(), SinkError> {
        if self.fail_s3.load(Ordering::SeqCst) {
            return Err(SinkError::S3 {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                reason: "fake outage".to_owned(),
            });
        }
        self.objects
            .lock()
            .expect("lock")
            .push((bucket.to_owned(), key.to_owned(), bytes));
        Ok(())
    }
}

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(data_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn fixture_str(name: &str) -> String {
    String::from_utf8(fixture(name)).expect("fixture is UTF-8")
}
