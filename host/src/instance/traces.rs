//! Run traces over OTLP: where they go (`serve --otlp-endpoint` or the
//! standard `OTEL_EXPORTER_OTLP_*` variables), and each recorded run as a
//! span with a child span per phase (claim, instantiate, execute, record)
//! and its events as span events, handed to the OpenTelemetry SDK's batch
//! exporter (http/protobuf). Off unless an endpoint is given.
//!
//! The exporter queues at most the SDK's batch queue (2,048 spans by
//! default, `OTEL_BSP_MAX_QUEUE_SIZE`) and drops beyond it, so a collector
//! that is down or slow costs the host bounded memory and never holds a
//! run up.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};

use crate::model::RunState;
use crate::scheduler::trace::{Phase, Recorded, RunTrace, RunTracer};

/// The OTLP/HTTP path of traces under a collector's base address.
const TRACES_PATH: &str = "/v1/traces";

/// Why the trace settings cannot be used; names the flag or variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: {why}")]
pub struct TraceConfigError {
    /// The flag or environment variable that holds the value.
    pub source_name: String,
    pub why: String,
}

/// Where traces go: the full URL of the collector's traces endpoint, or
/// `None` (traces off). `flag` is `--otlp-endpoint`; `env` reads the
/// environment. Like `OTEL_EXPORTER_OTLP_ENDPOINT`, the flag is the
/// collector's base address (`/v1/traces` is added unless it is there);
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as it is. The flag wins;
/// without it, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
/// keeps traces off.
pub fn endpoint(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, TraceConfigError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (source_name, url) = if let Some(flag) = flag {
        ("--otlp-endpoint".to_owned(), with_traces_path(flag))
    } else {
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true")
            || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none");
        if disabled {
            return Ok(None);
        }
        if let Some(url) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".to_owned(), url)
        } else if let Some(base) = set("OTEL_EXPORTER_OTLP_ENDPOINT") {
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                with_traces_path(&base),
            )
        } else {
            return Ok(None);
        }
    };
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = set(name)
            && protocol.trim() != "http/protobuf"
        {
            return Err(TraceConfigError {
                source_name: name.to_owned(),
                why: format!(
                    "cronwerk exports traces as http/protobuf only, not {protocol:?}: unset it \
                     or set it to http/protobuf (a collector takes both on port 4318)"
                ),
            });
        }
    }
    check_url(&url).map_err(|why| TraceConfigError { source_name, why })?;
    Ok(Some(url))
}

fn with_traces_path(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e}): give e.g. http://127.0.0.1:4318"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(()),
        Some("https") => Err(format!(
            "{url:?}: cronwerk sends traces over plain HTTP; send them to an OpenTelemetry \
             Collector on this machine or network (http://HOST:4318), which forwards them \
             with TLS"
        )),
        _ => Err(format!(
            "{url:?} is not an http:// address: give e.g. http://127.0.0.1:4318"
        )),
    }
}

/// The SDK's tracer and its provider, which exports in batches on a thread
/// of its own.
pub struct OtlpTraces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl OtlpTraces {
    /// An exporter to `url` (see [`endpoint`]) for the instance `instance`.
    /// Blocking (the HTTP client starts a thread): call it off the async
    /// threads.
    pub fn start(url: &str, instance: &str, host: &str) -> anyhow::Result<OtlpTraces> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .with_context(|| format!("setting up the trace exporter to {url}"))?;
        let exporter = Reporting {
            inner: exporter,
            url: url.to_owned(),
            failing: Mutex::new(Failing::default()),
        };
        let mut resource = Resource::builder().with_attributes([
            KeyValue::new("service.instance.id", instance.to_owned()),
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("host.name", host.to_owned()),
        ]);
        // `OTEL_SERVICE_NAME` (read by the builder) names the service if set.
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("cronwerk");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer("cronwerk");
        Ok(OtlpTraces { provider, tracer })
    }

    /// Sends what is queued and stops the exporter. Blocking: call it off
    /// the async threads.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("sending the last traces failed: {e}");
        }
    }

    fn span(&self, name: &'static str, phase: Phase, parent: &Context, error: Option<String>) {
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(phase.start)
            .start_with_context(&self.tracer, parent);
        if let Some(message) = error {
            span.set_status(Status::error(message));
        }
        span.end_with_timestamp(phase.end);
    }
}

impl RunTracer for OtlpTraces {
    fn recorded(&self, trace: RunTrace) {
        let outcome = &trace.outcome;
        let mut attributes = vec![
            KeyValue::new("cronwerk.run_id", trace.run_id.clone()),
            KeyValue::new("cronwerk.task", trace.configuration.clone()),
            KeyValue::new("cronwerk.identifier", trace.identifier.clone()),
            KeyValue::new("cronwerk.trigger", trace.trigger.as_str()),
            KeyValue::new("cronwerk.attempt", i64::from(trace.attempt)),
            KeyValue::new("cronwerk.instance", trace.instance.clone()),
            KeyValue::new("cronwerk.outcome", outcome.state.as_str()),
            KeyValue::new("cronwerk.message", outcome.message.clone()),
            KeyValue::new("cronwerk.fuel", outcome.fuel as i64),
            KeyValue::new(
                "cronwerk.peak_memory_bytes",
                outcome.peak_memory_bytes as i64,
            ),
            KeyValue::new("cronwerk.duration_us", outcome.duration_us as i64),
        ];
        if let Some(slot) = trace.scheduled_for {
            attributes.push(KeyValue::new("cronwerk.scheduled_for", slot.to_rfc3339()));
        }
        if let Some(lateness) = trace.lateness {
            attributes.push(KeyValue::new(
                "cronwerk.lateness_ms",
                lateness.as_secs_f64() * 1000.0,
            ));
        }
        if let Some(reason) = outcome.reason {
            attributes.push(KeyValue::new("cronwerk.stop_reason", reason.as_str()));
        }
        if let Some(sha) = &outcome.component_sha256 {
            attributes.push(KeyValue::new("cronwerk.component.sha256", sha.clone()));
        }
        if let Some(version) = &outcome.component_version {
            attributes.push(KeyValue::new("cronwerk.component.version", version.clone()));
        }
        let mut run = self
            .tracer
            .span_builder("run")
            .with_kind(SpanKind::Internal)
            .with_start_time(trace.start())
            .with_attributes(attributes)
            .start(&self.tracer);
        for event in &outcome.events {
            let name: Cow<'static, str> = if event.code.is_empty() {
                "log".into()
            } else {
                event.code.clone().into()
            };
            run.add_event_with_timestamp(
                name,
                SystemTime::from(event.at),
                vec![
                    KeyValue::new("cronwerk.level", event.level.as_str()),
                    KeyValue::new("cronwerk.source", event.source.as_str()),
                    KeyValue::new("cronwerk.message", event.message.clone()),
                ],
            );
        }
        match outcome.state {
            RunState::Succeeded => run.set_status(Status::Ok),
            RunState::Failed | RunState::Stopped | RunState::Abandoned => {
                run.set_status(Status::error(outcome.message.clone()))
            }
            _ => {}
        }
        let cx = Context::new().with_span(run);
        self.span("claim", trace.claim, &cx, None);
        let timeline = trace.timeline;
        if let (Some(started), Some(ended)) = (timeline.started, timeline.ended) {
            match timeline.instantiated {
                Some(ready) => {
                    let instantiate = Phase {
                        start: started,
                        end: ready,
                    };
                    self.span("instantiate", instantiate, &cx, None);
                    let execute = Phase {
                        start: ready,
                        end: ended,
                    };
                    let failed =
                        (outcome.state != RunState::Succeeded).then(|| outcome.message.clone());
                    self.span("execute", execute, &cx, failed);
                }
                None => {
                    let instantiate = Phase {
                        start: started,
                        end: ended,
                    };
                    self.span(
                        "instantiate",
                        instantiate,
                        &cx,
                        Some(outcome.message.clone()),
                    );
                }
            }
        }
        let record_error = match &trace.recorded {
            Recorded::Committed => None,
            Recorded::Held => {
                Some("the store is unavailable: the record is held until it is back".to_owned())
            }
            Recorded::Failed(why) => Some(why.clone()),
        };
        self.span("record", trace.record, &cx, record_error);
        cx.span().end_with_timestamp(trace.record.end);
    }
}

/// The OTLP exporter, saying on the host's log when exports fail (at once,
/// then at most once a minute) and when they get through again: a
/// collector that is down loses traces, and the operator should know.
#[derive(Debug)]
struct Reporting {
    inner: opentelemetry_otlp::SpanExporter,
    url: String,
    failing: Mutex<Failing>,
}

#[derive(Debug, Default)]
struct Failing {
    /// When the latest warning was written; `None` while exports succeed.
    said_at: Option<Instant>,
    /// Spans lost since exports began to fail.
    lost: u64,
}

/// How often a collector that stays unreachable is mentioned again.
const SAY_AGAIN_AFTER: Duration = Duration::from_secs(60);

impl SpanExporter for Reporting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(()) => {
                if failing.said_at.take().is_some() {
                    tracing::warn!(
                        target: "cronwerk::traces",
                        "traces reach {} again ({} span(s) were lost meanwhile)",
                        self.url,
                        failing.lost
                    );
                    failing.lost = 0;
                }
            }
            Err(e) => {
                failing.lost += spans;
                if failing
                    .said_at
                    .is_none_or(|at| at.elapsed() >= SAY_AGAIN_AFTER)
                {
                    failing.said_at = Some(Instant::now());
                    tracing::warn!(
                        target: "cronwerk::traces",
                        "traces are not reaching {} ({e}); {} span(s) lost so far: is the \
                         collector running?",
                        self.url,
                        failing.lost
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Starts the exporter for `url` off the async threads.
pub async fn start(url: String, instance: String, host: String) -> anyhow::Result<Arc<OtlpTraces>> {
    tokio::task::spawn_blocking(move || OtlpTraces::start(&url, &instance, &host).map(Arc::new))
        .await
        .context("starting the trace exporter")?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert_eq!(endpoint(None, env(&[])), Ok(None));
        assert_eq!(
            endpoint(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Ok(None)
        );
    }

    #[test]
    fn the_flag_and_the_base_variable_get_the_traces_path() {
        let want = Some("http://127.0.0.1:4318/v1/traces".to_owned());
        assert_eq!(
            endpoint(Some("http://127.0.0.1:4318"), env(&[])),
            Ok(want.clone())
        );
        assert_eq!(
            endpoint(Some("http://127.0.0.1:4318/"), env(&[])),
            Ok(want.clone())
        );
        assert_eq!(
            endpoint(Some("http://127.0.0.1:4318/v1/traces"), env(&[])),
            Ok(want.clone())
        );
        assert_eq!(
            endpoint(
                None,
                env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])
            ),
            Ok(want)
        );
    }

    #[test]
    fn the_traces_variable_is_used_as_it_is_and_the_flag_wins() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
        ];
        assert_eq!(
            endpoint(None, env(&vars)),
            Ok(Some("http://c:9/custom".to_owned()))
        );
        assert_eq!(
            endpoint(Some("http://flag:1"), env(&vars)),
            Ok(Some("http://flag:1/v1/traces".to_owned()))
        );
    }

    #[test]
    fn disabling_variables_count_only_without_the_flag() {
        for off in [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off];
            assert_eq!(endpoint(None, env(&vars)), Ok(None), "{off:?}");
            assert!(
                endpoint(Some("http://c:4318"), env(&vars))
                    .unwrap()
                    .is_some()
            );
        }
    }

    #[test]
    fn what_cannot_be_used_is_refused_naming_where_it_came_from() {
        let e = endpoint(Some("https://c:4318"), env(&[])).unwrap_err();
        assert_eq!(e.source_name, "--otlp-endpoint");
        assert!(e.why.contains("plain HTTP"), "{e}");
        let e = endpoint(None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")])).unwrap_err();
        assert_eq!(e.source_name, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let e = endpoint(
            Some("http://c:4318"),
            env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        )
        .unwrap_err();
        assert_eq!(e.source_name, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert!(e.why.contains("http/protobuf"), "{e}");
        assert!(
            endpoint(
                Some("http://c:4318"),
                env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
            )
            .is_ok()
        );
    }
}
