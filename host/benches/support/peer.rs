//! The peer in the throughput benches: apalis, a Rust background-job
//! library, running the same number of jobs with a native no-op handler on
//! the same kind of database (`peers/apalis`, built by `cargo xtask bench`
//! and passed as `CRONWERK_BENCH_PEER`). Its figure is printed next to
//! cronwerk's, with the ratio, from the same run.

use std::process::Command;

/// What one run of the peer measured.
pub struct PeerRun {
    pub label: String,
    pub jobs: u64,
    pub workers: u64,
    pub runs_per_s: f64,
}

/// The peer's binary, if the bench was given one.
pub fn binary() -> Option<String> {
    std::env::var("CRONWERK_BENCH_PEER")
        .ok()
        .filter(|p| !p.is_empty())
}

/// Runs the peer on `backend` (`["--sqlite", PATH]` or `["--postgres",
/// URL]`) with `jobs` jobs and `workers` workers; `None` (and a line on
/// stderr) if there is no peer or it failed.
pub fn run(backend: [&str; 2], jobs: usize, workers: usize) -> Option<PeerRun> {
    let peer = binary()?;
    let out = Command::new(&peer)
        .args(backend)
        .args([
            "--jobs",
            &jobs.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .output();
    let out = match out {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!(
                "peer {peer} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("peer {peer} did not start: {e}");
            return None;
        }
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let done = v["done_in_db"].as_u64()?;
    assert_eq!(done, jobs as u64, "the peer recorded every job done");
    Some(PeerRun {
        label: format!(
            "{} {} ({})",
            v["peer"].as_str()?,
            v["version"].as_str()?,
            v["backend"].as_str()?
        ),
        jobs: v["jobs"].as_u64()?,
        workers: v["workers"].as_u64()?,
        runs_per_s: v["runs_per_s"].as_f64()?,
    })
}
