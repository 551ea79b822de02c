//! The one request shape the core understands, whatever carried it (API Gateway REST or HTTP
//! API through Lambda, or a plain HTTP connection in `serve`), and the response it answers.
//!
//! The adapters do the transport-specific work (base64 bodies, multi-value headers, stage
//! variables) so the core can be tested with plain values.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Method, StatusCode};

/// A callback request, normalized.
#[derive(Debug, Clone)]
pub struct CallbackRequest {
    pub method: Method,
    /// Path as received; may carry the API Gateway stage as its first segment.
    pub path: String,
    /// API Gateway stage (`$default` for HTTP APIs' default stage), when there is one.
    pub stage: Option<String>,
    /// API Gateway request id, or one made up by `serve`.
    pub request_id: String,
    /// Header names lower-cased, in the order received; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    /// Exact body bytes (already base64-decoded when API Gateway encoded them).
    pub body: Bytes,
    /// API Gateway stage variables.
    pub stage_variables: HashMap<String, String>,
}

impl CallbackRequest {
    /// A request with no stage, headers or variables (handy for tests and the bench).
    pub fn new(method: Method, path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method,
            path: path.into(),
            stage: None,
            request_id: uuid::Uuid::new_v4().to_string(),
            headers: Vec::new(),
            body: body.into(),
            stage_variables: HashMap::new(),
        }
    }

    /// Adds a header (name lower-cased).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// First header with this name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The router's answer: a status, a small JSON body, and extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    /// Small JSON text, e.g. `{"status":"queued","message_id":"..."}`.
    pub body: String,
}

impl Reply {
    /// A JSON reply `{"status": status_word, ...fields}`.
    pub fn json(status: StatusCode, fields: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: fields.to_string(),
        }
    }

    /// An error reply `{"error": reason}`.
    pub fn error(status: StatusCode, reason: impl Into<String>) -> Self {
        Self::json(status, serde_json::json!({ "error": reason.into() }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// As an `http::Response` (for `serve` and the Lambda adapter).
    pub fn into_http<B: From<String>>(self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.body));
        *response.status_mut() = self.status;
        for (name, value) in self.headers {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}
