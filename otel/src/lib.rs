//! Traces from the SendGrid request to the Postgres row, the way the ecosystem does them:
//! OpenTelemetry spans exported with OTLP, configured by the standard `OTEL_*` variables, and the
//! W3C `traceparent` carried from the router to the worker as an SQS message attribute (the
//! X-Ray `AWSTraceHeader` that Lambda and SQS set is read too).
//!
//! **Off by default, and free when off.** Mailroom's spans are at TRACE level under the target
//! [`TARGET`]; the log layer's default filter (`info`) does not enable them, so when no exporter
//! is configured every such span is a disabled callsite (one cached check, no allocation). When
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, [`layer`]
//! returns a tracing layer that enables exactly those spans and exports them in batches.
//!
//! Variables read: `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the
//! collector; `/v1/traces` is appended to the first), `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf`, the default, or `http/json`), `OTEL_TRACES_EXPORTER` (`none` turns export
//! off), `OTEL_SDK_DISABLED=true`, `OTEL_SERVICE_NAME`, and the SDK's own (`OTEL_BSP_*`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`).

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, Filtered};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The target of every Mailroom span meant for traces.
pub const TARGET: &str = "mailroom_trace";

/// The SQS message attribute that carries the W3C trace context.
pub const TRACEPARENT_ATTRIBUTE: &str = "traceparent";
/// The SQS message system attribute X-Ray (and Lambda) set.
pub const AWS_TRACE_HEADER: &str = "AWSTraceHeader";

#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not supported (use http/protobuf or http/json)")]
    Protocol(String),
}

/// The exporting provider, once [`layer`] installed one: [`shutdown`] flushes it.
static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

/// Export what is buffered now (a Lambda invocation's spans, before the sandbox freezes).
/// Blocking; does nothing when export is off.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// Export what is still buffered and stop the exporter: call once, as the process ends (the
/// worker after its drain, the router on exit). Does nothing when export is off.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    }
}

/// Where to export, from the environment; None when export is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// The full traces URL (`.../v1/traces`).
    pub endpoint: String,
    pub json: bool,
    pub service_name: String,
}

impl ExportConfig {
    /// Read the standard variables through `var`.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        default_service: &str,
    ) -> Result<Option<Self>, OtelError> {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
        {
            return Ok(None);
        }
        let endpoint = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _) => traces,
            (None, Some(base)) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None) => return Ok(None),
        };
        let json = match set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("http/protobuf") => false,
            Some("http/json") => true,
            Some(other) => return Err(OtelError::Protocol(other.to_string())),
        };
        Ok(Some(Self {
            endpoint,
            json,
            service_name: set("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_string()),
        }))
    }
}

/// A boxed layer for any subscriber built on a registry.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// The tracing layer that exports Mailroom's spans; None when the environment configures no
/// exporter. The exporter runs on its own thread (batches, blocking HTTP), so this works inside
/// or outside a runtime. Call [`shutdown`] before the process exits.
pub fn layer<S>(default_service: &str) -> Result<Option<BoxedLayer<S>>, OtelError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(config) = ExportConfig::from_vars(|k| std::env::var(k).ok(), default_service)? else {
        return Ok(None);
    };
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(config.endpoint.clone())
        .with_protocol(if config.json {
            Protocol::HttpJson
        } else {
            Protocol::HttpBinary
        })
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("mailroom");
    let _ = PROVIDER.set(provider);
    let layer: Filtered<_, _, S> = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|meta| meta.target() == TARGET));
    Ok(Some(Box::new(layer)))
}

/// The W3C `traceparent` of `span`, when it is exported (None when tracing is off).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The remote parent a message carries: its `traceparent` attribute, else the X-Ray
/// `AWSTraceHeader` (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1`).
pub fn remote_parent(
    traceparent: Option<&str>,
    aws_trace_header: Option<&str>,
) -> Option<SpanContext> {
    if let Some(tp) = traceparent {
        let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        let sc = cx.span().span_context().clone();
        if sc.is_valid() {
            return Some(sc);
        }
    }
    aws_trace_header.and_then(parse_aws_trace_header)
}

/// X-Ray's header: the trace id is the 8 + 24 hex digits of `Root` without the version and dash.
pub fn parse_aws_trace_header(header: &str) -> Option<SpanContext> {
    let mut root = None;
    let mut parent = None;
    let mut sampled = true;
    for part in header.split(';') {
        match part.trim().split_once('=') {
            Some(("Root", v)) => root = Some(v),
            Some(("Parent", v)) => parent = Some(v),
            Some(("Sampled", v)) => sampled = v != "0",
            _ => {}
        }
    }
    let mut fields = root?.split('-');
    if fields.next()? != "1" {
        return None;
    }
    let trace_hex = format!("{}{}", fields.next()?, fields.next()?);
    let trace_id = TraceId::from_hex(&trace_hex).ok()?;
    let span_id = SpanId::from_hex(parent?).ok()?;
    let sc = SpanContext::new(
        trace_id,
        span_id,
        if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    sc.is_valid().then_some(sc)
}

/// Make `span` a child of `parent` (a remote span context).
pub fn set_remote_parent(span: &tracing::Span, parent: SpanContext) {
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
}

/// The span context of `span` (to link to it), when it is exported.
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Link `span` to `other` (a batch's span to each of its messages).
pub fn add_link(span: &tracing::Span, other: SpanContext) {
    span.add_link(other);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() {
        let none = |_: &str| None;
        assert_eq!(ExportConfig::from_vars(none, "svc").unwrap(), None);
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = ExportConfig::from_vars(
            vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")]),
            "mailroom",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert!(!c.json);
        assert_eq!(c.service_name, "mailroom");
        let c = ExportConfig::from_vars(
            vars(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/traces"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_SERVICE_NAME", "mailroom-eu"),
            ]),
            "mailroom",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.endpoint.as_str(), c.json, c.service_name.as_str()),
            ("http://c/traces", true, "mailroom-eu")
        );
        for off in [
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ][..],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                ("OTEL_SDK_DISABLED", "true"),
            ][..],
        ] {
            let off: &'static [(&str, &str)] = Box::leak(off.to_vec().into_boxed_slice());
            assert_eq!(ExportConfig::from_vars(vars(off), "m").unwrap(), None);
        }
        assert!(ExportConfig::from_vars(
            vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            ]),
            "m"
        )
        .is_err());
    }

    #[test]
    fn traceparent_and_x_ray_headers_parse() {
        let sc = remote_parent(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None,
        )
        .expect("W3C");
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        // The example from the X-Ray documentation.
        let sc = remote_parent(
            Some("garbage"),
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"),
        )
        .expect("X-Ray");
        assert_eq!(
            sc.trace_id().to_string(),
            "5759e988bd862e3fe1be46a994272793"
        );
        assert_eq!(sc.span_id().to_string(), "53995c3f42cd8ad8");
        assert!(
            parse_aws_trace_header("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1").is_none()
        );
        assert!(parse_aws_trace_header(
            "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"
        )
        .is_none());
        assert!(remote_parent(None, None).is_none());
    }
}
