//! Traces: every reconcile is a trace, whose id its log lines carry, and its span is exported
//! over OTLP/HTTP (protobuf) when the standard OpenTelemetry variables name an endpoint.
//!
//! Without an endpoint nothing is exported and no OpenTelemetry layer runs: the log lines still
//! carry a trace id, a random one, which tells the lines of one reconcile from those of the
//! reconciles running beside it.

use std::time::Duration;

use opentelemetry::trace::{TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_otlp::{ExporterBuildError, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use tracing::Subscriber;
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt as _};
use tracing_subscriber::registry::LookupSpan;

/// The `service.name` of the exported spans, unless OTEL_SERVICE_NAME (or a `service.name` in
/// OTEL_RESOURCE_ATTRIBUTES) names another.
pub const SERVICE_NAME: &str = "stepwise-controller";

/// The only OTLP protocol spoken: gRPC would bring a second HTTP stack (tonic), and JSON the
/// serde code of every OTLP message.
pub const PROTOCOL: &str = "http/protobuf";

/// How long the spans still queued at shutdown may take to leave.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Whether the environment asks for spans to be exported: an OTLP endpoint is named
/// (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT), and neither
/// OTEL_SDK_DISABLED=true nor an OTEL_TRACES_EXPORTER without `otlp` turns export off.
pub fn export_wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let named = |name: &str| var(name).is_some_and(|value| !value.trim().is_empty());
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
    // Unset or empty, the variable means its default, otlp.
    let otlp = var("OTEL_TRACES_EXPORTER")
        .filter(|value| !value.trim().is_empty())
        .is_none_or(|value| value.split(',').any(|exporter| exporter.trim() == "otlp"));
    !disabled && otlp && (named("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || named("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The protocol the environment asks for (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
/// OTEL_EXPORTER_OTLP_PROTOCOL) when it is not [`PROTOCOL`], which is used instead: worth a
/// warning, since a gRPC collector port (4317) does not answer it.
pub fn unsupported_protocol(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    let asked = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"]
        .into_iter()
        .find_map(|name| var(name).map(|value| value.trim().to_string()).filter(|value| !value.is_empty()))?;
    (!asked.eq_ignore_ascii_case(PROTOCOL)).then_some(asked)
}

/// The attributes the controller adds to the resource the SDK detected from the environment:
/// its service name where the SDK found none (it then says `unknown_service…`), its version
/// where OTEL_RESOURCE_ATTRIBUTES gives none.
fn resource_defaults(detected: &Resource) -> Vec<KeyValue> {
    let named =
        detected.get(&Key::new("service.name")).is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let versioned = detected.get(&Key::new("service.version")).is_some();
    let mut defaults = Vec::new();
    if !named {
        defaults.push(KeyValue::new("service.name", SERVICE_NAME));
    }
    if !versioned {
        defaults.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    defaults
}

/// The span exporter, when the environment asks for one. Spans leave in batches from a task on
/// the tokio runtime: a reconcile only queues its span (and drops it when the queue is full),
/// never waits on the collector.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// The exporter the standard OTEL_* variables describe (endpoint, headers, timeout, sampler,
    /// batch sizes and resource, read as the OpenTelemetry SDK reads them), or None when
    /// [`export_wanted`] says no. Must run on the tokio runtime.
    pub fn from_env() -> Result<Option<Self>, ExporterBuildError> {
        if !export_wanted(|name| std::env::var(name).ok()) {
            return Ok(None);
        }
        ensure_crypto_provider();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()?;
        let detected = Resource::builder().build();
        let resource = Resource::builder().with_attributes(resource_defaults(&detected)).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(spans, Tokio).build())
            .with_resource(resource)
            .build();
        Ok(Some(Exporter { provider }))
    }

    /// The layer that turns the `tracing` spans into OpenTelemetry spans exported by this.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let scope =
            InstrumentationScope::builder("stepwise_controller").with_version(env!("CARGO_PKG_VERSION")).build();
        // Thread ids say nothing of a reconcile, which moves between the runtime's threads.
        tracing_opentelemetry::layer().with_tracer(self.provider.tracer_with_scope(scope)).with_threads(false)
    }

    /// Sends the spans still queued, waiting at most a few seconds: a collector that does not
    /// answer must not hold the shutdown (the pod has a grace period to keep).
    pub async fn shutdown(self) {
        // The SDK waits for its batch task by blocking the calling thread, so not on a thread of
        // the runtime that runs that task.
        let flush = tokio::task::spawn_blocking(move || self.provider.shutdown());
        match tokio::time::timeout(FLUSH_LIMIT, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "the last spans could not be exported"),
            Ok(Err(error)) => tracing::warn!(%error, "the last spans could not be exported"),
            Err(_) => tracing::warn!(limit = ?FLUSH_LIMIT, "the last spans were not exported in time"),
        }
    }
}

/// reqwest is built without a rustls crypto provider and panics on building a client without one:
/// ring, the provider of kube and of the other HTTP clients, unless one is installed already.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only means another thread installed a provider in between, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Gives a reconcile's span its trace id, in its field `trace_id` (declared
/// `tracing::field::Empty`), so that every line logged within the span carries it: the id of the
/// span's OpenTelemetry trace when spans are exported, else a random one.
pub fn with_trace_id(span: tracing::Span) -> tracing::Span {
    if !span.is_disabled() {
        span.record("trace_id", tracing::field::display(trace_id(&span)));
    }
    span
}

/// The trace id of `span`: its OpenTelemetry trace's, if the layer is installed, else a new one.
fn trace_id(span: &tracing::Span) -> TraceId {
    let exported = span.context().span().span_context().trace_id();
    if exported == TraceId::INVALID { RandomIdGenerator::default().new_trace_id() } else { exported }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn spans_are_exported_only_when_an_otlp_endpoint_is_named() {
        assert!(!export_wanted(env(&[])));
        assert!(!export_wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(export_wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")])));
        assert!(export_wanted(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces")])));
    }

    #[test]
    fn the_standard_switches_turn_export_off_even_with_an_endpoint() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert!(!export_wanted(env(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")])));
        assert!(!export_wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")])));
        assert!(!export_wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")])));
        assert!(export_wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", "console, otlp")])));
        assert!(export_wanted(env(&[endpoint, ("OTEL_TRACES_EXPORTER", ""), ("OTEL_SDK_DISABLED", "false")])));
    }

    #[test]
    fn a_protocol_other_than_http_protobuf_is_reported_the_signal_own_variable_first() {
        assert_eq!(unsupported_protocol(env(&[])), None);
        assert_eq!(unsupported_protocol(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])), None);
        assert_eq!(unsupported_protocol(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])), Some("grpc".into()));
        let both =
            [("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
        assert_eq!(unsupported_protocol(env(&both)), Some("http/json".into()));
    }

    #[test]
    fn the_service_is_stepwise_controller_unless_the_environment_names_it() {
        let unnamed = Resource::builder_empty().with_service_name("unknown_service:stepwise-controller").build();
        assert_eq!(
            resource_defaults(&unnamed),
            [KeyValue::new("service.name", SERVICE_NAME), KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))]
        );
        let named = Resource::builder_empty()
            .with_service_name("rollouts-eu")
            .with_attribute(KeyValue::new("service.version", "7"))
            .build();
        assert_eq!(resource_defaults(&named), []);
    }

    /// The lines logged within a span shaped as a reconcile's, by a subscriber with or without
    /// the OpenTelemetry layer; and the trace id of that span's OpenTelemetry context.
    fn log_within_a_reconcile(exported: bool) -> (String, TraceId) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let logs = tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || WriteTo(sink.clone()));
        let provider = SdkTracerProvider::builder().build();
        let otel = exported.then(|| tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let subscriber = tracing_subscriber::registry().with(logs).with(otel);
        let context = tracing::subscriber::with_default(subscriber, || {
            let span = with_trace_id(tracing::info_span!("reconcile", trace_id = tracing::field::Empty));
            span.in_scope(|| tracing::info!("created ReplicaSet"));
            span.context().span().span_context().trace_id()
        });
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        (text, context)
    }

    struct WriteTo(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for WriteTo {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged_trace_id(text: &str) -> &str {
        let line = text.lines().find(|l| l.contains("created ReplicaSet")).expect("the line is logged");
        let id = line.split("trace_id=").nth(1).expect("the line carries a trace id");
        &id[..32.min(id.len())]
    }

    #[test]
    fn log_lines_of_an_exported_reconcile_carry_the_trace_id_of_its_span() {
        let (text, context) = log_within_a_reconcile(true);
        assert_ne!(context, TraceId::INVALID);
        assert_eq!(logged_trace_id(&text), context.to_string(), "{text}");
    }

    #[test]
    fn log_lines_carry_a_trace_id_of_32_hex_digits_when_nothing_is_exported() {
        let (text, context) = log_within_a_reconcile(false);
        assert_eq!(context, TraceId::INVALID, "no OpenTelemetry layer, no OpenTelemetry context");
        let id = logged_trace_id(&text);
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{text}");
        assert_ne!(id, TraceId::INVALID.to_string());
    }
}
