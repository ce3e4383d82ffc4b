//! The request span as an OpenTelemetry span.
//!
//! With a `tracing-opentelemetry` layer installed (arlen-node's `otlp`
//! feature installs one when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; an
//! application with its own subscriber adds its own), every request's
//! `request` span continues the caller's W3C trace (its parent is the
//! incoming `traceparent`'s span) and the ids in the response's
//! `traceparent` and `X-Trace-Id`, and in what the sidecar sends upstream,
//! are that span's: the parent id the next hop records is a span the tracing
//! backend has. Without a layer the runtime's own fresh ids stay, at the cost
//! of one failed downcast per request.
//!
//! The layer must be built on the same `tracing-opentelemetry` as this
//! crate's (re-exported as [`tracing_opentelemetry`]), or the span is not
//! recognised and the runtime's fresh ids are used.

use std::sync::atomic::{AtomicBool, Ordering};

use http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use opentelemetry;
pub use tracing_opentelemetry;

use crate::trace::{parse_traceparent, RequestIds, TRACEPARENT};

/// The caller's span, from a valid incoming `traceparent`.
fn incoming(request_headers: &HeaderMap) -> Option<SpanContext> {
    let value = request_headers.get(&TRACEPARENT)?.to_str().ok()?;
    let (trace_id, flags) = parse_traceparent(value)?;
    let parent = value.trim().split('-').nth(2)?;
    Some(SpanContext::new(
        TraceId::from_hex(trace_id).ok()?,
        SpanId::from_hex(parent).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    ))
}

/// Whether [`layer`] made a layer: request spans then carry the fields an
/// exporter wants (`otel.name`, `otel.kind`, `status`) — spared otherwise,
/// since a formatting layer pays for every field of every request's span.
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// `tracing-opentelemetry`'s layer with `tracer`, for the request spans:
/// each is a server span named by its method with the response's status.
/// (A layer built by hand works too, with the ids right, but the spans are
/// named `request` and of kind internal.)
pub fn layer<S, T>(tracer: T) -> tracing_opentelemetry::OpenTelemetryLayer<S, T>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    T: opentelemetry::trace::Tracer + 'static,
    T::Span: Send + Sync,
{
    EXPORTING.store(true, Ordering::Relaxed);
    // What a request span needs; the rest (busy/idle timing at every poll,
    // source location, thread, target attributes) costs on every request.
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
}

/// The response's status on the exported span (an error for a 5xx), through
/// the OpenTelemetry layer alone.
pub(crate) fn finish(span: &tracing::Span, status: http::StatusCode) {
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_status(opentelemetry::trace::Status::error(status.to_string()));
    }
}

/// Makes `span` continue the caller's trace and `ids` name it, when an
/// OpenTelemetry layer records `span` (true: the ids changed); otherwise
/// changes nothing.
pub(crate) fn continue_trace(span: &tracing::Span, request_headers: &HeaderMap, ids: &mut RequestIds) -> bool {
    if ids.traceparent().is_none() {
        // Trace propagation is off: the span is exported as a root of its own.
        return false;
    }
    let parent = match incoming(request_headers) {
        Some(caller) => opentelemetry::Context::new().with_remote_span_context(caller),
        // A root: not a child of whatever span happens to be current.
        None => opentelemetry::Context::new(),
    };
    if span.set_parent(parent).is_err() {
        return false;
    }
    let context = span.context();
    let exported = context.span().span_context().clone();
    if !exported.is_valid() {
        return false;
    }
    ids.use_span(exported.trace_id().to_bytes(), exported.span_id().to_bytes(), exported.trace_flags().to_u8());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn an_incoming_traceparent_becomes_a_remote_parent() {
        let mut headers = HeaderMap::new();
        headers
            .insert(TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let caller = incoming(&headers).unwrap();
        assert_eq!(caller.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(caller.span_id().to_string(), "00f067aa0ba902b7");
        assert!(caller.is_sampled() && caller.is_remote());
        headers
            .insert(TRACEPARENT, HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
        assert!(!incoming(&headers).unwrap().is_sampled());
        headers
            .insert(TRACEPARENT, HeaderValue::from_static("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        assert!(incoming(&headers).is_none());
    }

    #[test]
    fn without_a_layer_the_fresh_ids_stay() {
        let mut ids = RequestIds::for_request(&HeaderMap::new(), true, true, false);
        let before = ids.traceparent().cloned();
        let span = tracing::info_span!("request");
        assert!(!continue_trace(&span, &HeaderMap::new(), &mut ids));
        assert_eq!(ids.traceparent().cloned(), before);
    }
}
