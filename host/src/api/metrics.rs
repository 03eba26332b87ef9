//! `/metrics` in Prometheus text format. Run figures are counted where runs
//! happen: [`Metrics::meter`] wraps the executor the instance hands
//! its dispatcher, so every run this instance executes is counted once, by
//! identifier and outcome, with its duration, lateness and fuel. Plugin load
//! failures are counted from the registry's events. Gauges that describe the
//! shared store (configurations, their overview counters, plugin status) are
//! read when scraped.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::model::{TaskRecord, Trigger};
use crate::plugins::{PLUGIN_FAILED, PluginEntry, PluginEvent};
use crate::runtime::{Execution, Executor, RunRequest};

/// The instance's metrics. Share as `Arc`.
pub struct Metrics {
    registry: Registry,
    runs: IntCounterVec,
    duration: HistogramVec,
    lateness: Histogram,
    fuel: IntCounterVec,
    plugin_failures: IntCounter,
    running: IntGauge,
    configurations: IntGaugeVec,
    configuration_runs: IntGaugeVec,
    plugins: IntGaugeVec,
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are unique and valid");
    m
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new_custom(Some("cronwerk".into()), None).expect("a valid prefix");
        let runs = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "runs_total",
                    "Runs this instance executed, by component identifier and outcome \
                     (succeeded, failed, stopped, cancelled, missing).",
                ),
                &["identifier", "outcome"],
            )
            .expect("valid"),
        );
        let duration = register(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "run_duration_seconds",
                    "Wall time of a run, instantiation to return.",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0,
                    600.0,
                ]),
                &["identifier"],
            )
            .expect("valid"),
        );
        let lateness = register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "run_lateness_seconds",
                    "How long after its slot a scheduled run started.",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0, 300.0,
                ]),
            )
            .expect("valid"),
        );
        let fuel = register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "run_fuel_consumed_total",
                    "Fuel burnt by runs (about one unit per wasm instruction), by identifier.",
                ),
                &["identifier"],
            )
            .expect("valid"),
        );
        let plugin_failures = register(
            &r,
            IntCounter::new(
                "plugin_load_failures_total",
                "Component files in the plugins folder that failed to load.",
            )
            .expect("valid"),
        );
        let running = register(
            &r,
            IntGauge::new("runs_running", "Runs executing on this instance now.").expect("valid"),
        );
        let configurations = register(
            &r,
            IntGaugeVec::new(
                Opts::new("configurations", "Task configurations in the store."),
                &["enabled"],
            )
            .expect("valid"),
        );
        let configuration_runs = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "configuration_runs",
                    "The overview's counters of each configuration (all instances): runs, \
                     skipped and failed.",
                ),
                &["task", "kind"],
            )
            .expect("valid"),
        );
        let plugins = register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "plugins",
                    "Files in the plugins folder, by status (ok, failed, conflict).",
                ),
                &["status"],
            )
            .expect("valid"),
        );
        Arc::new(Metrics {
            registry: r,
            runs,
            duration,
            lateness,
            fuel,
            plugin_failures,
            running,
            configurations,
            configuration_runs,
            plugins,
        })
    }

    /// Wraps `inner` so every run through it is counted.
    pub fn meter(self: &Arc<Self>, inner: Arc<dyn Executor>) -> Arc<dyn Executor> {
        Arc::new(MeteredExecutor {
            inner,
            metrics: self.clone(),
        })
    }

    /// Counts a plugin registry event (failures).
    pub fn plugin_event(&self, event: &PluginEvent) {
        if event.code == PLUGIN_FAILED {
            self.plugin_failures.inc();
        }
    }

    /// The text exposition, with the store-derived gauges set from `tasks`
    /// and `plugins` as they are now.
    pub fn render(&self, tasks: &[TaskRecord], plugins: &[PluginEntry]) -> String {
        self.configurations.reset();
        let enabled = tasks.iter().filter(|t| t.config.enabled).count() as i64;
        self.configurations
            .with_label_values(&["true"])
            .set(enabled);
        self.configurations
            .with_label_values(&["false"])
            .set(tasks.len() as i64 - enabled);
        self.configuration_runs.reset();
        for t in tasks {
            let name = t.config.name.as_str();
            for (kind, n) in [
                ("runs", t.run_count),
                ("skipped", t.skipped_count),
                ("failed", t.failed_count),
            ] {
                self.configuration_runs
                    .with_label_values(&[name, kind])
                    .set(n as i64);
            }
        }
        self.plugins.reset();
        for status in ["ok", "failed", "conflict"] {
            let n = plugins
                .iter()
                .filter(|p| p.status.as_str() == status)
                .count();
            self.plugins.with_label_values(&[status]).set(n as i64);
        }
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding the metrics failed: {e}\n"))
    }
}

#[utoipa::path(
    get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition format",
        content_type = "text/plain; version=0.0.4", body = String))
)]
pub(crate) async fn scrape(
    axum::extract::State(s): axum::extract::State<super::AppState>,
) -> super::error::ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let tasks = s.store.list_tasks().await?;
    let body = s.metrics.render(&tasks, &s.plugins.entries());
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// Counts what passes through to the real executor.
struct MeteredExecutor {
    inner: Arc<dyn Executor>,
    metrics: Arc<Metrics>,
}

/// Lowers the running gauge even if the run's future is dropped.
struct RunningGuard<'a>(&'a IntGauge);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The identifier label of runs whose component no plugin serves.
pub const NOT_LOADED: &str = "(not loaded)";

#[async_trait::async_trait]
impl Executor for MeteredExecutor {
    fn availability(&self, implementation: &str) -> crate::runtime::Availability {
        self.inner.availability(implementation)
    }

    async fn execute(&self, implementation: &str, request: RunRequest) -> Execution {
        let m = &self.metrics;
        if matches!(request.context.trigger, Trigger::Schedule)
            && let Some(slot) = request.context.scheduled_for
        {
            let late = SystemTime::now()
                .duration_since(slot)
                .unwrap_or_default()
                .as_secs_f64();
            m.lateness.observe(late);
        }
        m.running.inc();
        let _guard = RunningGuard(&m.running);
        let execution = self.inner.execute(implementation, request).await;
        match &execution {
            Execution::Missing => {
                // Not the asked-for name: every name would be a new series.
                m.runs.with_label_values(&[NOT_LOADED, "missing"]).inc();
            }
            Execution::Ran { report, .. } => {
                m.runs
                    .with_label_values(&[implementation, report.outcome.kind()])
                    .inc();
                m.duration
                    .with_label_values(&[implementation])
                    .observe(report.duration.as_secs_f64());
                m.fuel
                    .with_label_values(&[implementation])
                    .inc_by(report.fuel_consumed);
            }
        }
        execution
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;

    #[async_trait::async_trait]
    impl Executor for Nothing {
        async fn execute(&self, _: &str, _: RunRequest) -> Execution {
            Execution::Missing
        }
    }

    #[tokio::test]
    async fn runs_through_the_meter_are_counted() {
        let metrics = Metrics::new();
        let executor = metrics.meter(Arc::new(Nothing));
        let mut request = RunRequest::default();
        request.context.trigger = Trigger::Schedule;
        request.context.scheduled_for = Some(SystemTime::now());
        executor.execute("Acme.Gone", request).await;
        metrics.plugin_event(&PluginEvent {
            level: crate::model::Level::Error,
            code: PLUGIN_FAILED,
            message: "bad".into(),
        });
        let text = metrics.render(&[], &[]);
        assert!(
            text.contains(r#"cronwerk_runs_total{identifier="(not loaded)",outcome="missing"} 1"#),
            "{text}"
        );
        assert!(!text.contains("Acme.Gone"), "{text}");
        assert!(
            text.contains("cronwerk_run_lateness_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("cronwerk_plugin_load_failures_total 1"),
            "{text}"
        );
        assert!(text.contains("cronwerk_runs_running 0"), "{text}");
        assert!(
            text.contains(r#"cronwerk_plugins{status="failed"} 0"#),
            "{text}"
        );
    }
}
