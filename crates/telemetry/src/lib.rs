//! OpenTelemetry traces of flowhost runs, exported over OTLP/HTTP (protobuf).
//!
//! A trace is built from the engine's event stream, not from calls sprinkled through the
//! engine: [`Traces::listener`] makes a [`Listener`] for one run, which turns the run's
//! transitions into spans as the journal commits them — one span for the run, one per task
//! attempt (`execute`), one per `revert`. The spans carry names, states, attempts and error
//! codes, never store values, arguments, results or error messages: those may hold secrets,
//! and a trace backend is read by more people than the run database. A run started under a
//! W3C `traceparent` (an HTTP request, `flowhost submit --traceparent`) becomes a child of
//! that span, so a worker's spans join the submitter's trace.
//!
//! Export never blocks or fails a run: spans go to the SDK's batching processor, which keeps
//! a bounded queue (spans past it are dropped) and exports from its own thread;
//! [`Traces::shutdown`] flushes what is queued, waiting at most a given time.

mod http;
mod run;

use std::sync::Arc;
use std::time::Duration;

use flowhost_core::events::Listener;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracer, SdkTracerProvider};

pub use run::{
    ATTEMPT, ERROR_CODE, EXECUTE_SPAN, FLOW, REVERT_SPAN, RUN_ID, RUN_SPAN, STATE, TASK,
};

/// The OTLP path of traces under a collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`
/// means it.
pub const TRACES_PATH: &str = "/v1/traces";

/// How long one export may take before it is given up (the HTTP client's deadline): a
/// collector that hangs must not hold the exporting thread, or a shutdown, for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why traces cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The endpoint is not an `http://` or `https://` URL.
    #[error("OTLP endpoint `{0}` is not an http:// or https:// URL")]
    Endpoint(String),
    /// The exporter could not be built.
    #[error("setting up the OTLP exporter: {0}")]
    Exporter(String),
}

/// The trace exporter of a process: cheap to clone, shared by every run.
#[derive(Clone)]
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Traces {
    /// Exports to the OTLP/HTTP collector at `endpoint`, a base URL such as
    /// `http://127.0.0.1:4318` (traces go to its `/v1/traces`, as for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`). The service is named by `OTEL_SERVICE_NAME`, by default
    /// `flowhost`; the batching follows the SDK's `OTEL_BSP_*` variables.
    pub fn otlp(endpoint: &str) -> Result<Self, TelemetryError> {
        let base = endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(TelemetryError::Endpoint(endpoint.to_owned()));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(format!("{base}{TRACES_PATH}"))
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(http::UreqClient::new(EXPORT_TIMEOUT))
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        // The queue, batch size and delay follow OTEL_BSP_* (2048 spans, 512, 5 s by default).
        let processor = BatchSpanProcessor::builder(exporter).build();
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("flowhost");
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("flowhost");
        Ok(Self { provider, tracer })
    }

    /// A listener for one run, whose spans form one trace: under the span `traceparent`
    /// names (W3C trace-context, `00-<trace id>-<span id>-<flags>`), or a new trace when
    /// there is none or it does not parse (as the W3C recommendation says: a malformed
    /// header is ignored, not an error).
    pub fn listener(&self, traceparent: Option<&str>) -> Arc<dyn Listener> {
        Arc::new(run::RunTrace::new(self.tracer.clone(), traceparent))
    }

    /// Exports what is queued and stops, waiting at most `timeout`: called once, as the
    /// process ends. Spans still queued then are lost, and so are spans of runs still going
    /// on; a failed export is logged, never an error of the process.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(error) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!("exporting the last traces: {error}");
        }
    }
}
