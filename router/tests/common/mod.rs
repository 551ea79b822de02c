//! Shared test helpers: an in-memory [`Sink`] and fixture loading.
#![allow(dead_code)]

pub mod signer;

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
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
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
        grouping: mailroom_router::sink::Grouping<'_>,
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
            group_id: grouping.group_id.map(str::to_owned),
            dedup_id: grouping.dedup_id.map(str::to_owned),
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

/// A running `serve` on a loopback port; stops when dropped.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start<S: Sink + 'static>(app: mailroom_router::App<S>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(mailroom_router::serve::serve(
            std::sync::Arc::new(app),
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting and waits for in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran");
        }
    }

    /// POSTs `body` with `headers`; returns the status and response body.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        self.request(http::Method::POST, path, headers, body).await
    }

    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String) {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Full<Bytes>>();
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(http_body_util::Full::new(Bytes::from(body)))
            .expect("request");
        let response = client.request(request).await.expect("HTTP round trip");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
