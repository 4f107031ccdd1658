//! Optional OTLP trace export (`[tracing] otlp_endpoint`, off by default).
//!
//! Each request on the public listener is one server span, `remote_console`, whose parent is
//! the caller's `traceparent` when it sent a valid one, so the gateway shows up inside the
//! caller's trace. Spans go to the collector over OTLP/HTTP (protobuf) with the OpenTelemetry
//! SDK's batch processor. The span carries no token, URL or user id beyond what the access log
//! already holds (request id, route, status).
//!
//! The SDK's batch processor exports from a thread of its own, while the HTTP client (hyper)
//! needs the tokio runtime: [`OnRuntime`] hands each export to the runtime and waits for it.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter, Tracer};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TracingConfig;
use crate::telemetry::trace_context::TraceContext;

/// The running exporter; [`OtlpExport::shutdown`] flushes what is still buffered.
pub struct OtlpExport {
    provider: SdkTracerProvider,
}

impl OtlpExport {
    /// Builds the exporter when `config` names an endpoint. Call inside the tokio runtime.
    pub fn start(config: &TracingConfig) -> Result<Option<(OtlpExport, Tracer)>, String> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client =
            opentelemetry_http::hyper::HyperClient::new(https, Duration::from_secs(10), None);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: tokio::runtime::Handle::current(),
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("bms-console-gateway");
        Ok(Some((OtlpExport { provider }, tracer)))
    }

    /// Exports the spans still buffered and stops the exporter.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

/// The span of one request, child of the caller's trace when it sent a `traceparent`.
pub fn request_span(request_id: &str, trace: Option<&TraceContext>) -> tracing::Span {
    let span = tracing::info_span!(
        "remote_console",
        otel.kind = "server",
        request_id = %request_id,
    );
    if let Some(parent) = trace.and_then(remote_parent) {
        // Without the OpenTelemetry layer (export off) there is nothing to attach to.
        let _ = span.set_parent(parent);
    }
    span
}

fn remote_parent(trace: &TraceContext) -> Option<opentelemetry::Context> {
    let trace_id = TraceId::from_hex(&trace.trace_id).ok()?;
    let span_id = SpanId::from_hex(&trace.parent_id).ok()?;
    let flags = if trace.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    Some(opentelemetry::Context::new().with_remote_span_context(context))
}

/// Runs the OTLP exporter's calls on the tokio runtime.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = self.inner.clone();
        match self
            .runtime
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(result) => result,
            Err(e) => Err(OTelSdkError::InternalFailure(e.to_string())),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once while the provider is built, before any export shares the exporter.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}
