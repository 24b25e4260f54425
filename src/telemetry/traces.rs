//! OpenTelemetry traces over OTLP (off by default). Each request becomes a server span named
//! after the GenAI semantic conventions (`chat llama3.2:1b`), with one client span per upstream
//! attempt beneath it. Spans are built from the finished request record with their real start
//! and end times, and exported in batches by the SDK's own thread: nothing on the request path
//! waits for the collector. A W3C `traceparent` from the client is continued.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};

use super::request_log::RequestRecord;
use crate::config::{OtlpProtocol, TracesConfig};

pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Traces {
    pub fn start(config: &TracesConfig) -> Result<Self, String> {
        let endpoint = config.endpoint.trim_end_matches('/');
        let endpoint = if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        };
        let protocol = match config.protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        };
        let timeout = config.timeout;
        // The exporter's blocking HTTP client may not be created inside the async runtime.
        let exporter = std::thread::spawn(move || {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .with_protocol(protocol)
                .with_timeout(timeout)
                .build()
                .map_err(|e| format!("cannot build the OTLP exporter: {e}"))
        })
        .join()
        .map_err(|_| "the OTLP exporter could not be built".to_owned())??;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(config.flush_interval)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("tollgate");
        Ok(Self { provider, tracer })
    }

    /// Emits the spans of one finished request.
    pub fn record(&self, record: &RequestRecord) {
        let start = record.time.0;
        let operation = record.endpoint.unwrap_or("request");
        let parent = record
            .traceparent
            .as_ref()
            .map(|tp| {
                let carrier = HashMap::from([("traceparent".to_owned(), tp.clone())]);
                TraceContextPropagator::new().extract(&carrier)
            })
            .unwrap_or_default();
        let name = match &record.model {
            Some(model) => format!("{operation} {model}"),
            None => operation.to_owned(),
        };
        let mut attributes = vec![
            KeyValue::new("gen_ai.operation.name", operation),
            KeyValue::new("http.request.method", record.method.to_string()),
            KeyValue::new("url.path", record.path.clone()),
            KeyValue::new("http.response.status_code", i64::from(record.status)),
        ];
        let mut add = |key: &'static str, value: Option<String>| {
            if let Some(v) = value {
                attributes.push(KeyValue::new(key, v));
            }
        };
        add(
            "gen_ai.request.model",
            record.model.as_deref().map(str::to_owned),
        );
        add(
            "gen_ai.response.model",
            record.upstream_model.as_deref().map(str::to_owned),
        );
        add("tollgate.route", record.route.as_deref().map(str::to_owned));
        add(
            "tollgate.consumer",
            record.consumer.as_deref().map(str::to_owned),
        );
        add(
            "tollgate.provider",
            record.provider.as_deref().map(str::to_owned),
        );
        add("error.type", record.error.map(str::to_owned));
        attributes.extend(usage_attributes(record));
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        if record.status >= 500 || record.error.is_some() && record.status >= 400 {
            span.set_status(Status::error(record.error.unwrap_or("error")));
        }
        let server_cx = parent.with_remote_span_context(span.span_context().clone());
        let answered = record.attempts.iter().rposition(|a| a.outcome == "ok");
        for (i, attempt) in record
            .attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.skipped)
        {
            let begin = start + Duration::from_secs_f64(attempt.started_ms.unwrap_or(0.0) / 1000.0);
            let end = begin + Duration::from_secs_f64(attempt.latency_ms.unwrap_or(0.0) / 1000.0);
            let mut attrs = vec![
                KeyValue::new("gen_ai.operation.name", operation),
                KeyValue::new("gen_ai.provider.name", attempt.provider_kind),
                KeyValue::new("gen_ai.request.model", attempt.model.clone()),
                KeyValue::new("tollgate.provider", attempt.provider.clone()),
            ];
            if Some(i) == answered {
                attrs.push(KeyValue::new(
                    "gen_ai.response.model",
                    attempt.model.clone(),
                ));
                attrs.extend(usage_attributes(record));
            } else {
                attrs.push(KeyValue::new("error.type", attempt.outcome));
            }
            let mut child = self
                .tracer
                .span_builder(format!("{operation} {}", attempt.model))
                .with_kind(SpanKind::Client)
                .with_start_time(begin)
                .with_attributes(attrs)
                .start_with_context(&self.tracer, &server_cx);
            if Some(i) != answered {
                child.set_status(Status::error(attempt.outcome));
            }
            child.end_with_timestamp(end);
        }
        span.end_with_timestamp(start + Duration::from_secs_f64(record.latency_ms / 1000.0));
    }

    /// Sends what is still buffered (off the async runtime: the exporter blocks).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
}

fn usage_attributes(record: &RequestRecord) -> Vec<KeyValue> {
    let mut out = Vec::new();
    if let Some(n) = record.prompt_tokens {
        out.push(KeyValue::new("gen_ai.usage.input_tokens", n as i64));
    }
    if let Some(n) = record.completion_tokens {
        out.push(KeyValue::new("gen_ai.usage.output_tokens", n as i64));
    }
    out
}
