//! Tasks per language: component size, first compile, load from the compile
//! cache, and per-run cost with a fresh instance each run — for the Rust
//! (`hello`), Python (`report-digest`), JavaScript (`cache-warmup`) and C
//! (`disk-report`) examples, under engine settings that bear on
//! instantiating big guests.
//!
//! Each run does the least its task allows (Rust logs one line; Python
//! digests an empty folder; JavaScript stops at its missing `urls`
//! property; C reports on the same empty folder), so the figures are the
//! host's and the interpreter's start-up cost, not the task's work.
//!
//! `CRONWERK_BENCH_QUICK=1` takes fewer samples; `CRONWERK_BENCH_ONLY=python`
//! (a part of a language or variant name) narrows it down, e.g. for `perf`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cronwerk::runtime::{
    CacheOutcome, CompileCache, EngineSettings, RunContext, RunRequest, Runtime,
};

use cronwerk::model::{DirGrant, Grants, RunLimits};

struct Language {
    name: &'static str,
    file: &'static str,
    /// The result the cheapest run must end with (succeeded or not).
    succeeds: bool,
}

const LANGUAGES: &[Language] = &[
    Language {
        name: "Rust (hello)",
        file: "hello.wasm",
        succeeds: true,
    },
    Language {
        name: "Python (report-digest)",
        file: "report-digest.wasm",
        succeeds: true,
    },
    Language {
        name: "JavaScript (cache-warmup)",
        file: "cache-warmup.wasm",
        succeeds: false,
    },
    Language {
        name: "C (disk-report)",
        file: "disk-report.wasm",
        succeeds: true,
    },
];

/// Engine variants compared for per-run cost.
fn variants() -> Vec<(&'static str, EngineSettings)> {
    let with_resident = |bytes: usize| EngineSettings {
        keep_resident_bytes: bytes,
        max_concurrent_runs: 16,
        ..Default::default()
    };
    vec![
        ("pooling, keep_resident 0", with_resident(0)),
        ("pooling, keep_resident 4 MiB", with_resident(4 << 20)),
        ("pooling, keep_resident 64 MiB", with_resident(64 << 20)),
        (
            "on-demand",
            EngineSettings {
                allocator: cronwerk::runtime::Allocator::OnDemand,
                max_concurrent_runs: 16,
                ..Default::default()
            },
        ),
    ]
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

fn request(reports: &Path) -> RunRequest {
    RunRequest {
        context: RunContext {
            configuration_name: "bench".into(),
            run_id: "bench".into(),
            // disk-report's folder; the other tasks read no such property.
            properties: [("folder".into(), "/reports".into())].into(),
            ..Default::default()
        },
        limits: RunLimits {
            timeout: Duration::from_secs(30),
            ..RunLimits::default()
        },
        grants: Grants {
            dirs: vec![DirGrant {
                host_path: reports.to_owned(),
                guest_path: "/reports".into(),
                read_only: true,
            }],
            ..Grants::default()
        },
        ..Default::default()
    }
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CRONWERK_BENCH_COMPONENTS").expect(
        "run with `cargo xtask bench` (it builds the components and sets CRONWERK_BENCH_COMPONENTS)",
    ));
    let quick = std::env::var_os("CRONWERK_BENCH_QUICK").is_some();
    let only = std::env::var("CRONWERK_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| name.to_lowercase().contains(&only.to_lowercase());
    let (warmup, samples) = if quick { (20, 200) } else { (200, 2_000) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let reports = scratch.path().join("reports");
    std::fs::create_dir_all(&reports).unwrap();
    // A kept cache (CRONWERK_BENCH_CACHE_DIR) skips compiling, for profiling runs.
    let kept_cache = std::env::var_os("CRONWERK_BENCH_CACHE_DIR").map(PathBuf::from);
    let cache = kept_cache
        .clone()
        .unwrap_or_else(|| scratch.path().join("cache"));
    let compile_cache = CompileCache::open(&cache).unwrap();

    println!("## Loading\n");
    println!("| language | component | first load (compile) | cached load | cache entry |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    rt.block_on(async {
        let runtime = Runtime::new(EngineSettings {
            max_concurrent_runs: 16,
            ..Default::default()
        })
        .unwrap();
        for lang in LANGUAGES.iter().filter(|l| wanted(l.name)) {
            let bytes = std::fs::read(dir.join(lang.file)).unwrap();
            let size = bytes.len();
            let t = Instant::now();
            let (_, outcome) = runtime
                .load_bytes_cached(bytes.clone(), lang.file.into(), &compile_cache)
                .await
                .unwrap();
            let first = t.elapsed();
            if kept_cache.is_none() {
                assert_eq!(outcome, CacheOutcome::Miss);
            }
            // A second process finds the cache: same engine settings, new runtime.
            let again = Runtime::new(EngineSettings {
                max_concurrent_runs: 16,
                ..Default::default()
            })
            .unwrap();
            let mut loads = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                let (_, outcome) = again
                    .load_bytes_cached(bytes.clone(), lang.file.into(), &compile_cache)
                    .await
                    .unwrap();
                loads.push(t.elapsed());
                assert_eq!(outcome, CacheOutcome::Hit);
            }
            loads.sort();
            let entry: u64 = std::fs::read_dir(&cache)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&cronwerk::runtime::sha256_hex(&bytes)[..16])
                })
                .map(|e| e.metadata().unwrap().len())
                .sum();
            println!(
                "| {} | {:.1} MiB | {} ms | {} ms | {:.1} MiB |",
                lang.name,
                size as f64 / (1 << 20) as f64,
                ms(first),
                ms(loads[loads.len() / 2]),
                entry as f64 / (1 << 20) as f64,
            );
        }
    });

    println!(
        "\n## Per run (fresh instance each run; {samples} runs after {warmup} warm-up, one thread)\n"
    );
    println!("| engine | language | p50 µs | p99 µs | runs/s (1 thread) |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for (label, settings) in variants() {
        rt.block_on(async {
            let runtime = Runtime::new(settings).unwrap();
            for lang in LANGUAGES.iter().filter(|l| wanted(l.name) || wanted(label)) {
                let bytes = std::fs::read(dir.join(lang.file)).unwrap();
                let (component, _) = runtime
                    .load_bytes_cached(bytes, lang.file.into(), &compile_cache)
                    .await
                    .unwrap();
                let req = request(&reports);
                let mut times = Vec::with_capacity(samples);
                for i in 0..warmup + samples {
                    let t = Instant::now();
                    let report = runtime.run(&component, req.clone()).await;
                    let took = t.elapsed();
                    assert_eq!(
                        report.outcome.is_success(),
                        lang.succeeds,
                        "{}: {:?}",
                        lang.name,
                        report.outcome
                    );
                    if i >= warmup {
                        times.push(took);
                    }
                }
                let mean = times.iter().sum::<Duration>() / times.len() as u32;
                times.sort();
                println!(
                    "| {label} | {} | {} | {} | {:.0} |",
                    lang.name,
                    us(percentile(&times, 0.5)),
                    us(percentile(&times, 0.99)),
                    1.0 / mean.as_secs_f64()
                );
            }
        });
    }
}
