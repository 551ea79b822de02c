//! The Lambda adapter: raw invocation JSON in, API Gateway response JSON out.
//!
//! The router takes the event as raw JSON rather than through `lambda_http::run`, because it
//! must also accept the legacy non-proxy events produced by the old API Gateway mapping
//! templates, which are no HTTP request at all. Proxy events (REST v1, HTTP API v2) are decoded
//! with `lambda_http`'s own request types, so base64 bodies and multi-value headers are handled
//! the way the AWS runtime does. A legacy event that fails is a Lambda *function error* whose
//! message starts with the status (`"503: ..."`), so a non-proxy integration response can map it
//! (selection pattern `^5\d\d:.*`) instead of answering 200.

use std::collections::HashMap;

use lambda_http::aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayV2httpResponse};
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::request::{LambdaRequest, RequestContext, RequestOrigin};
use lambda_http::RequestExt;
use serde_json::value::RawValue;

use crate::app::App;
use crate::request::{CallbackRequest, Reply};
use crate::sink::Sink;

/// A legacy event that could not be queued; its `Display` is `"<status>: <reason>"`.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {body}")]
pub struct LegacyFailure {
    pub status: u16,
    pub body: String,
}

/// Why an invocation failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    Legacy(#[from] LegacyFailure),
    #[error("not an API Gateway proxy event nor a legacy mapping-template event: {0}")]
    UnknownEvent(String),
    #[error("could not serialize the response: {0}")]
    Response(#[from] serde_json::Error),
}

/// Handles one invocation. `aws_request_id` is the Lambda request id, used when the event has
/// none of its own.
pub async fn handle_event<S: Sink>(
    app: &App<S>,
    event: &RawValue,
    aws_request_id: &str,
) -> Result<serde_json::Value, InvocationError> {
    if let Some(reply) = app.handle_legacy(event.get(), aws_request_id).await {
        return if reply.status.is_success() {
            Ok(serde_json::from_str(&reply.body)?)
        } else {
            Err(LegacyFailure {
                status: reply.status.as_u16(),
                body: reply.body,
            }
            .into())
        };
    }
    let lambda_request: LambdaRequest = serde_json::from_str(event.get())
        .map_err(|e| InvocationError::UnknownEvent(e.to_string()))?;
    let origin = lambda_request.request_origin();
    let request = to_callback_request(lambda_request.into(), aws_request_id);
    let reply = app.handle(request).await;
    to_response(&origin, reply)
}

/// Normalizes a request decoded by `lambda_http`.
pub fn to_callback_request(request: http::Request<Body>, aws_request_id: &str) -> CallbackRequest {
    let (stage, request_id) = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => (ctx.stage.clone(), ctx.request_id.clone()),
        Some(RequestContext::ApiGatewayV2(ctx)) => (ctx.stage.clone(), ctx.request_id.clone()),
        _ => (None, None),
    };
    let stage_variables: HashMap<String, String> = request
        .stage_variables_ref()
        .map(|vars| {
            vars.iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let raw_path = request.raw_http_path();
    let path = if raw_path.is_empty() {
        request.uri().path().to_owned()
    } else {
        raw_path.to_owned()
    };
    let (parts, body) = request.into_parts();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match body {
        Body::Empty => bytes::Bytes::new(),
        Body::Text(text) => bytes::Bytes::from(text),
        Body::Binary(data) => bytes::Bytes::from(data),
        _ => bytes::Bytes::new(),
    };
    CallbackRequest {
        method: parts.method,
        path,
        stage,
        request_id: request_id.unwrap_or_else(|| aws_request_id.to_owned()),
        headers,
        body,
        stage_variables,
    }
}

/// Serializes a reply in the response format the event's origin expects.
pub fn to_response(
    origin: &RequestOrigin,
    reply: Reply,
) -> Result<serde_json::Value, InvocationError> {
    let status = i64::from(reply.status.as_u16());
    let response: http::Response<String> = reply.into_http();
    let (parts, body) = response.into_parts();
    let body = (!body.is_empty()).then_some(Body::Text(body));
    match origin {
        RequestOrigin::ApiGatewayV2 => {
            let mut out = ApiGatewayV2httpResponse::default();
            out.status_code = status;
            out.headers = parts.headers;
            out.body = body;
            Ok(serde_json::to_value(out)?)
        }
        _ => {
            let mut out = ApiGatewayProxyResponse::default();
            out.status_code = status;
            out.multi_value_headers = parts.headers;
            out.body = body;
            Ok(serde_json::to_value(out)?)
        }
    }
}

impl From<InvocationError> for lambda_runtime::Diagnostic {
    fn from(error: InvocationError) -> Self {
        let error_type = match &error {
            InvocationError::Legacy(_) => "MailroomLegacyFailure",
            InvocationError::UnknownEvent(_) => "MailroomUnknownEvent",
            InvocationError::Response(_) => "MailroomResponseError",
        };
        lambda_runtime::Diagnostic {
            error_type: error_type.to_owned(),
            error_message: error.to_string(),
        }
    }
}
