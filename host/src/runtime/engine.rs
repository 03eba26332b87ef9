//! The one wasmtime `Engine` of a cronwerk process, configured for many short,
//! isolated runs, and the thread that drives its epoch clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How instance memory is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Allocator {
    /// Pooling when the address space allows it, on-demand otherwise.
    #[default]
    Auto,
    /// Pooling or fail: pre-reserved slots make instantiation a few µs.
    Pooling,
    /// mmap per instance: slower, but reserves no address space up front.
    OnDemand,
}

/// Knobs of the engine. The defaults are what cronwerk runs with.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub allocator: Allocator,
    /// Runs (component instances) that may be alive at once; with pooling,
    /// this many slots are reserved.
    pub max_concurrent_runs: u32,
    /// Largest linear memory any run may be granted.
    pub max_memory_bytes: usize,
    /// Native stack the wasm code of one run may use.
    pub max_wasm_stack: usize,
    /// Period of the epoch clock that bounds wall time.
    pub epoch_tick: Duration,
    /// Bytes of each pooled memory kept resident between runs (reset by
    /// scanning dirty pages instead of unmapping them).
    pub keep_resident_bytes: usize,
    /// Whether resetting a kept-resident memory may find its dirty pages
    /// with `PAGEMAP_SCAN` (Linux ≥ 6.7) where the kernel has it. Always on
    /// in `serve`; the per-run bench turns it off to compare, which is the
    /// row that shows a wasmtime whose scan costs more than it saves.
    pub pagemap_scan: bool,
    /// What loading one component may cost.
    pub load: super::LoadLimits,
    /// What every run's outbound HTTP may reach and receive.
    pub http: super::HttpSettings,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            allocator: Allocator::Auto,
            max_concurrent_runs: 128,
            max_memory_bytes: 4 << 30,
            max_wasm_stack: 1 << 20,
            epoch_tick: Duration::from_millis(10),
            keep_resident_bytes: 4 << 20,
            pagemap_scan: true,
            load: super::LoadLimits::default(),
            http: super::HttpSettings::default(),
        }
    }
}

/// The engine plus the facts about how it was built.
pub struct CronwerkEngine {
    pub engine: Engine,
    /// Whether the pooling allocator is in use.
    pub pooling: bool,
    pub settings: EngineSettings,
    _ticker: EpochTicker,
}

impl CronwerkEngine {
    pub fn new(settings: EngineSettings) -> anyhow::Result<Self> {
        let (engine, pooling) = match settings.allocator {
            Allocator::OnDemand => (build(&settings, false)?, false),
            Allocator::Pooling => (build(&settings, true)?, true),
            Allocator::Auto => match build(&settings, true) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    // Typical cause: a `ulimit -v` too small for the slots.
                    tracing::warn!("pooling allocator unavailable ({e:#}); using on-demand");
                    (build(&settings, false)?, false)
                }
            },
        };
        let ticker = EpochTicker::start(engine.clone(), settings.epoch_tick);
        Ok(CronwerkEngine {
            engine,
            pooling,
            settings,
            _ticker: ticker,
        })
    }

    /// Epoch ticks that cover `timeout`, rounded up.
    pub fn ticks_for(&self, timeout: Duration) -> u64 {
        let tick = self.settings.epoch_tick.as_nanos().max(1);
        (timeout.as_nanos().div_ceil(tick)) as u64
    }
}

fn build(s: &EngineSettings, pooling: bool) -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Wall time: the epoch counter is bumped by a ticker thread; each run
    // gets a deadline in ticks. Cheap enough (+0–18 %) to be always on.
    config.epoch_interruption(true);
    // Fuel is always instrumented so every run reports what it burnt; a run
    // without a fuel limit simply gets u64::MAX.
    config.consume_fuel(true);
    config.max_wasm_stack(s.max_wasm_stack);
    // Memory images make instantiation map the data segments copy-on-write
    // instead of copying them.
    config.memory_init_cow(true);
    if pooling {
        let mut p = PoolingAllocationConfig::default();
        let runs = s.max_concurrent_runs;
        p.total_component_instances(runs);
        // A Rust task is a handful of core instances; interpreters (Python,
        // JS) bring tens, each with a memory and tables.
        p.total_core_instances(runs * 16);
        p.total_memories(runs * 4);
        p.total_tables(runs * 8);
        p.total_stacks(runs);
        p.max_core_instances_per_component(64);
        p.max_memories_per_component(16);
        p.max_tables_per_component(64);
        p.max_memories_per_module(2);
        p.max_tables_per_module(8);
        p.max_memory_size(s.max_memory_bytes);
        p.max_core_instance_size(4 << 20);
        p.max_component_instance_size(1 << 20);
        // Reset dirty pages with memset (found by PAGEMAP_SCAN on Linux
        // ≥ 6.7) instead of unmapping: the next run then takes no page
        // faults. Without pagemap_scan this would be slower, hence Auto.
        p.linear_memory_keep_resident(s.keep_resident_bytes);
        p.table_keep_resident(64 << 10);
        // Every run is an async call on a fiber from the pool; keeping the
        // top of each fiber stack resident spares an madvise + page faults.
        p.async_stack_keep_resident(256 << 10);
        p.pagemap_scan(if s.pagemap_scan {
            Enabled::Auto
        } else {
            Enabled::No
        });
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    let engine = Engine::new(&config)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "creating the wasmtime engine ({} allocator)",
                if pooling { "pooling" } else { "on-demand" }
            )
        })?;
    Ok(engine)
}

/// Bumps the engine's epoch every tick until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("cronwerk-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_demand_engine_builds_and_counts_ticks() {
        let e = CronwerkEngine::new(EngineSettings {
            allocator: Allocator::OnDemand,
            ..Default::default()
        })
        .unwrap();
        assert!(!e.pooling);
        assert_eq!(e.ticks_for(Duration::from_millis(25)), 3);
        assert_eq!(e.ticks_for(Duration::from_millis(20)), 2);
    }

    #[test]
    fn auto_prefers_pooling() {
        let e = CronwerkEngine::new(EngineSettings {
            max_concurrent_runs: 4,
            ..Default::default()
        })
        .unwrap();
        assert!(e.pooling);
    }
}
