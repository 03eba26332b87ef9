//! What the scheduler benches share: a pass-through store and executor
//! that time every call (to show where the time goes), and the figures'
//! arithmetic and tables.

// Each bench uses what it needs of this.
#![allow(dead_code)]

pub mod peer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cronwerk::model::Trigger;
use cronwerk::plugins::{PluginExecutor, Plugins};
use cronwerk::runtime::{Execution, Executor, RunRequest};
use cronwerk::store::{CallObserver, Observed, Store};

/// Call counts and summed wall time per operation. Concurrent calls
/// overlap, so sums can exceed the elapsed time; they include waiting for
/// the store's connection mutex.
#[derive(Default)]
pub struct Timing(Mutex<BTreeMap<&'static str, (u64, Duration)>>);

impl Timing {
    pub fn record(&self, what: &'static str, took: Duration) {
        let mut map = self.0.lock().unwrap();
        let entry = map.entry(what).or_default();
        entry.0 += 1;
        entry.1 += took;
    }

    pub fn snapshot(&self) -> BTreeMap<&'static str, (u64, Duration)> {
        self.0.lock().unwrap().clone()
    }
}

impl CallObserver for Timing {
    fn observe(
        &self,
        call: &'static str,
        took: Duration,
        _failed: Option<&cronwerk::store::StoreError>,
    ) {
        self.record(call, took);
    }
}

/// A store that times every call into a [`Timing`]
/// (`TimedStore::new(inner, timing)`).
pub type TimedStore = Observed<dyn Store, Arc<Timing>>;

/// `cronwerk serve`'s executor (a run takes whatever component the plugins
/// folder serves now), plus timing and the moment each scheduled run
/// actually reached the executor.
pub struct BenchExecutor {
    pub inner: PluginExecutor,
    pub timing: Arc<Timing>,
    /// (scheduled_for, executor entered) of scheduled runs.
    pub entered: Mutex<Vec<(SystemTime, SystemTime)>>,
}

impl BenchExecutor {
    pub fn new(plugins: Arc<Plugins>, timing: Arc<Timing>) -> Arc<BenchExecutor> {
        Arc::new(BenchExecutor {
            inner: PluginExecutor::new(plugins),
            timing,
            entered: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl Executor for BenchExecutor {
    async fn execute(&self, implementation: &str, request: RunRequest) -> Execution {
        if request.context.trigger == Trigger::Schedule
            && let Some(slot) = request.context.scheduled_for
        {
            self.entered.lock().unwrap().push((slot, SystemTime::now()));
        }
        let start = Instant::now();
        let execution = self.inner.execute(implementation, request).await;
        // Besides the run, only a lookup in the folder's current mapping,
        // which is negligible next to it: the figure keeps its old name.
        if let Execution::Ran { .. } = execution {
            self.timing.record("Runtime::run (wasm)", start.elapsed());
        }
        execution
    }
}

/// Sorted-sample quantile.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn print_breakdown(title: &str, breakdown: &BTreeMap<&'static str, (u64, Duration)>) {
    println!("\n{title}\n");
    println!("| call | calls | mean µs | total s |");
    println!("| --- | ---: | ---: | ---: |");
    let mut rows: Vec<_> = breakdown.iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1.1));
    for (what, (count, total)) in rows {
        println!(
            "| {what} | {count} | {:.1} | {:.2} |",
            total.as_secs_f64() * 1e6 / *count as f64,
            total.as_secs_f64()
        );
    }
}
