//! Per-run overhead: `hello` run through cronwerk's runtime, against a bare
//! wasmtime baseline on the same engine (fresh Store + instantiate from
//! InstancePre + call + drop, nothing else) and a plain Rust function doing
//! the same work. Run with `cargo xtask bench`; prints a markdown table.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cronwerk::runtime::{Allocator, EngineSettings, RunContext, RunRequest, Runtime};

use cronwerk::model::RunLimits;
use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bare {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scheduled-task",
        exports: { default: async },
    });
}
use bare::cronwerk::task::{cancellation, config, farm, instance, log, state, types};

const WARMUP: usize = 2_000;
const SAMPLES: usize = 20_000;

/// The least a host must hold to run `hello`: WASI and a place for its log line.
struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
    events: Vec<(log::Level, String, String)>,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
impl types::Host for BareState {}
impl log::Host for BareState {
    fn write(&mut self, level: log::Level, code: String, message: String) {
        self.events.push((level, code, message));
    }
}
impl cancellation::Host for BareState {
    fn is_cancelled(&mut self) -> bool {
        false
    }
}
impl config::Host for BareState {
    fn get(&mut self, _: String) -> Option<String> {
        None
    }
    fn get_all(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }
}
impl state::Host for BareState {
    fn get(&mut self, _: String) -> Option<String> {
        None
    }
    fn set(&mut self, _: String, _: String) -> Result<(), String> {
        Ok(())
    }
    fn remove(&mut self, _: String) {}
    fn keys(&mut self) -> Vec<String> {
        Vec::new()
    }
}
impl farm::Host for BareState {
    fn broadcast(&mut self, _: String, _: types::Payload) -> Result<String, String> {
        Err("none".into())
    }
}
impl instance::Host for BareState {
    fn name(&mut self) -> String {
        String::new()
    }
    fn roles(&mut self) -> Vec<String> {
        Vec::new()
    }
}

#[derive(Clone)]
struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        mean,
    }
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

/// Times `a` and `b` alternately, run by run, so that the machine's drift
/// (shared, noisy hosts) weighs on both alike and their ratio holds.
async fn measure_pair<A, FA, B, FB>(mut a: A, mut b: B) -> (Stats, Stats)
where
    A: FnMut() -> FA,
    FA: std::future::Future<Output = ()>,
    B: FnMut() -> FB,
    FB: std::future::Future<Output = ()>,
{
    for _ in 0..WARMUP {
        a().await;
        b().await;
    }
    let mut sa = Vec::with_capacity(SAMPLES);
    let mut sb = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        a().await;
        sa.push(t.elapsed());
        let t = Instant::now();
        b().await;
        sb.push(t.elapsed());
    }
    (stats(sa), stats(sb))
}

async fn bench_engine(
    label: &str,
    allocator: Allocator,
    pagemap_scan: bool,
    hello: &PathBuf,
) -> (Stats, Stats) {
    let runtime = Runtime::new(EngineSettings {
        allocator,
        pagemap_scan,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        runtime.engine().pooling,
        allocator == Allocator::Pooling,
        "{label}"
    );
    let component = runtime.load_file(hello).await.unwrap();

    let request = RunRequest {
        context: RunContext {
            configuration_name: "bench".into(),
            run_id: "bench".into(),
            ..Default::default()
        },
        limits: RunLimits::default(),
        ..Default::default()
    };
    let cronwerk = || {
        let req = request.clone();
        let runtime = &runtime;
        let component = &component;
        async move {
            let report = runtime.run(component, req).await;
            assert!(report.outcome.is_success());
        }
    };

    // Bare: same engine and component bytes, nothing but what wasmtime needs.
    let engine = runtime.engine().engine.clone();
    let bytes = std::fs::read(hello).unwrap();
    let wasm = wasmtime::component::Component::new(&engine, &bytes).unwrap();
    let mut linker: Linker<BareState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    bare::ScheduledTask::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).unwrap();
    let pre = bare::ScheduledTaskPre::new(linker.instantiate_pre(&wasm).unwrap()).unwrap();
    let ctx = types::RunContext {
        configuration_name: "bench".into(),
        identifier: "Acme.HelloScheduledTask".into(),
        run_id: "bench".into(),
        trigger: types::Trigger::Manual,
        attempt: 1,
        deadline: None,
        scheduled_for: None,
        last_run: None,
        next_run: None,
        run_count: 0,
        instance_name: String::new(),
        properties: Vec::new(),
    };
    let bare = || {
        let engine = &engine;
        let pre = &pre;
        let ctx = &ctx;
        async move {
            let state = BareState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
                events: Vec::new(),
            };
            let mut store = Store::new(engine, state);
            // The engine meters fuel and epochs; without these the call traps.
            store.set_fuel(u64::MAX).unwrap();
            store.set_epoch_deadline(u64::MAX / 2);
            let task = pre.instantiate_async(&mut store).await.unwrap();
            let result = task
                .cronwerk_task_task()
                .call_execute(&mut store, ctx, None)
                .await;
            assert!(matches!(result, Ok(Ok(_))));
            assert_eq!(store.data().events.len(), 1);
        }
    };
    measure_pair(cronwerk, bare).await
}

/// What `hello` does, as a native function: record one warning event.
#[inline(never)]
fn hello_native(events: &mut Vec<(u8, String, String)>) -> Result<String, String> {
    events.push((
        3,
        "NOTIFICATION".into(),
        "Hello from my scheduled task!".into(),
    ));
    Ok(String::new())
}

fn main() {
    let dir = std::env::var_os("CRONWERK_BENCH_COMPONENTS")
        .expect("run with `cargo xtask bench` (it builds the components and sets CRONWERK_BENCH_COMPONENTS)");
    let hello = PathBuf::from(dir).join("hello.wasm");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    println!(
        "Per-run overhead of `hello` ({SAMPLES} runs each after {WARMUP} warm-up, one thread; \
         cronwerk and bare interleaved run by run)\n"
    );
    println!("| engine | what | p50 µs | p99 µs | mean µs | runs/s |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    let mut bare_by_engine = Vec::new();
    for (label, allocator, pagemap_scan) in [
        (
            "pooling + keep_resident + pagemap_scan",
            Allocator::Pooling,
            true,
        ),
        (
            "pooling + keep_resident, no pagemap_scan",
            Allocator::Pooling,
            false,
        ),
        ("on-demand", Allocator::OnDemand, true),
    ] {
        let (cronwerk, bare) = rt.block_on(bench_engine(label, allocator, pagemap_scan, &hello));
        bare_by_engine.push(bare.clone());
        for (what, s) in [("cronwerk runtime", &cronwerk), ("bare wasmtime", &bare)] {
            println!(
                "| {label} | {what} | {} | {} | {} | {:.0} |",
                us(s.p50),
                us(s.p99),
                us(s.mean),
                1.0 / s.mean.as_secs_f64()
            );
        }
        println!(
            "| {label} | ratio cronwerk/bare | {:.2}× | {:.2}× | {:.2}× | |",
            cronwerk.p50.as_secs_f64() / bare.p50.as_secs_f64(),
            cronwerk.p99.as_secs_f64() / bare.p99.as_secs_f64(),
            cronwerk.mean.as_secs_f64() / bare.mean.as_secs_f64(),
        );
    }
    // The row that shows a wasmtime whose pooled-memory reset with
    // PAGEMAP_SCAN costs more than it saves (wasmtime 50 on this kernel:
    // 3-4x slower for small Rust guests): above 1x, do not upgrade.
    let (scan, no_scan) = (&bare_by_engine[0], &bare_by_engine[1]);
    println!(
        "| pagemap_scan on / off | ratio, bare wasmtime (above 1× means the scan costs more \
         than it saves) | {:.2}× | {:.2}× | {:.2}× | |",
        scan.p50.as_secs_f64() / no_scan.p50.as_secs_f64(),
        scan.p99.as_secs_f64() / no_scan.p99.as_secs_f64(),
        scan.mean.as_secs_f64() / no_scan.mean.as_secs_f64(),
    );
    let (native, _) = rt.block_on(measure_pair(
        || async {
            let mut events = Vec::new();
            let r = hello_native(std::hint::black_box(&mut events));
            let _ = std::hint::black_box((r, events));
        },
        || async {},
    ));
    println!(
        "| native | plain Rust function | {} | {} | {} | {:.0} |",
        us(native.p50),
        us(native.p99),
        us(native.mean),
        1.0 / native.mean.as_secs_f64()
    );
}
