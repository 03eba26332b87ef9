//! Host memory and descriptors a task can pin outside its memory limit,
//! through WASI and `wasi:http` resources: handles per run are capped, so
//! are the header bytes of one `fields` handle and the files a run holds
//! open, and a task that goes past any of them is stopped with
//! `StopReason::Resources` (the handle caps at load time (`describe`) as in
//! a run); an unsent outgoing body buffers little; HTTP requests in flight
//! are capped (the one past the cap fails); no socket can be created. The
//! hostile tasks are `tests/wat/host_hog.wat`, `body_hog.wat`,
//! `fd_hog.wat`, `http_hog.wat` and `socket_hog.wat`; the memory bounds are
//! measured on this test process's peak resident set, the descriptor bounds
//! on `/proc/self/fd`.

mod common;

use common::{request, runtime};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use cronwerk::model::{DirGrant, Grants, RunLimits, StopReason};
use cronwerk::runtime::{
    Component, LoadError, MAX_HTTP_CONNECTIONS, MAX_OPEN_FILES, Outcome, RunReport,
};

/// The tests measure this process's memory and descriptors, so they run one
/// at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn hog_wat(in_describe: bool, handles: u32, appends: u32, value_bytes: u32) -> Vec<u8> {
    include_str!("wat/host_hog.wat")
        .replace("HOG_IN_DESCRIBE", if in_describe { "1" } else { "0" })
        .replace("HANDLES", &handles.to_string())
        .replace("APPENDS", &appends.to_string())
        .replace("VALUE_BYTES", &value_bytes.to_string())
        .into_bytes()
}

async fn load_hog(handles: u32, appends: u32, value_bytes: u32) -> Component {
    runtime()
        .load_bytes(
            hog_wat(false, handles, appends, value_bytes),
            "host_hog.wat".into(),
        )
        .await
        .expect("the hog loads")
}

async fn run(component: &Component) -> RunReport {
    let mut req = request(&[]);
    req.limits = RunLimits {
        memory_bytes: 16 * 1024 * 1024,
        ..req.limits
    };
    runtime().run(component, req).await
}

fn stopped_by_resources(report: &RunReport) -> &str {
    match &report.outcome {
        Outcome::Stopped {
            reason: StopReason::Resources,
            message,
        } => message,
        other => panic!("expected stopped (resources), got {other:?}"),
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets the peak resident set (VmHWM) to the current one and returns it.
fn reset_peak_rss_kib() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    status_kib("VmRSS:")
}

#[tokio::test]
async fn a_task_keeping_many_header_handles_is_stopped_and_host_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    // 20,000 handles of ~12 KB each would pin ~240 MB of host memory in a
    // run whose memory limit is 16 MiB.
    let component = load_hog(20_000, 1, 12_000).await;
    let before = reset_peak_rss_kib();
    let report = run(&component).await;
    let grown_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    eprintln!("the run grew the peak resident memory by {grown_mib} MiB");
    let message = stopped_by_resources(&report);
    assert!(message.contains("2048 host handles"), "{message}");
    assert!(
        grown_mib < 64,
        "the run grew the host's peak resident memory by {grown_mib} MiB"
    );
    assert!(
        report.events.iter().any(|e| e.code == "STOPPED_RESOURCES"),
        "{:?}",
        report.events
    );
}

#[tokio::test]
async fn a_task_filling_one_header_handle_past_its_cap_is_stopped() {
    let _serial = SERIAL.lock().await;
    // 10 x 8 KB in one `fields`: under wasmtime's own 128 KiB default, over
    // the host's 16 KiB.
    let component = load_hog(1, 10, 8_000).await;
    let report = run(&component).await;
    let message = stopped_by_resources(&report);
    assert!(message.contains("HTTP fields"), "{message}");
    assert!(message.contains("16.0 KiB"), "{message}");

    // Within the cap the same task succeeds.
    let component = load_hog(100, 1, 8_000).await;
    let report = run(&component).await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
}

#[tokio::test]
async fn describe_is_held_to_the_same_caps() {
    let _serial = SERIAL.lock().await;
    let before = reset_peak_rss_kib();
    let loaded = runtime()
        .load_bytes(hog_wat(true, 20_000, 1, 12_000), "host_hog.wat".into())
        .await;
    let grown_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    eprintln!("loading grew the peak resident memory by {grown_mib} MiB");
    let err = loaded
        .err()
        .expect("a describe that hogs handles fails the load");
    match err {
        LoadError::Describe { message, .. } => {
            assert!(message.contains("2048 host handles"), "{message}")
        }
        other => panic!("expected a describe error, got {other:?}"),
    }
    assert!(
        grown_mib < 64,
        "loading grew the host's peak resident memory by {grown_mib} MiB"
    );
}

#[tokio::test]
async fn unsent_request_bodies_hold_little_host_memory() {
    let _serial = SERIAL.lock().await;
    // 200 requests never sent, each body written as far as `check-write`
    // allows: with wasmtime's defaults that is 2 MiB a body (400 MiB in all).
    let wat = include_str!("wat/body_hog.wat").replace("BODIES", "200");
    let component = runtime()
        .load_bytes(wat.into_bytes(), "body_hog.wat".into())
        .await
        .expect("the body hog loads");
    let before = reset_peak_rss_kib();
    let report = run(&component).await;
    let grown_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    eprintln!("the bodies grew the peak resident memory by {grown_mib} MiB");
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert!(
        grown_mib < 32,
        "200 unsent bodies grew the host's peak resident memory by {grown_mib} MiB"
    );
}

/// How `fd_hog.wat` treats each file it opens.
#[derive(Clone, Copy)]
enum Keep {
    /// Keeps the descriptor.
    Descriptor,
    /// Drops the descriptor at once.
    Nothing,
    /// Keeps a stream reading the file, drops the descriptor.
    Stream,
}

async fn load_fd_hog(opens: u32, keep: Keep, spin: bool) -> Component {
    let mode = match keep {
        Keep::Descriptor => "0",
        Keep::Nothing => "1",
        Keep::Stream => "2",
    };
    let wat = include_str!("wat/fd_hog.wat")
        .replace("OPENS", &opens.to_string())
        .replace("MODE", mode)
        .replace("SPIN", if spin { "1" } else { "0" });
    runtime()
        .load_bytes(wat.into_bytes(), "fd_hog.wat".into())
        .await
        .expect("the fd hog loads")
}

/// A directory holding the file `f` the fd hog opens.
fn granted_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "contents").unwrap();
    dir
}

async fn run_with_dir(
    component: &Component,
    dir: &std::path::Path,
    timeout: Duration,
) -> RunReport {
    let mut req = request(&[]);
    req.limits.timeout = timeout;
    req.grants = Grants {
        dirs: vec![DirGrant {
            host_path: dir.to_owned(),
            guest_path: "/data".into(),
            read_only: true,
        }],
        ..Grants::default()
    };
    runtime().run(component, req).await
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn a_task_keeping_files_open_is_stopped_at_the_open_files_cap() {
    let _serial = SERIAL.lock().await;
    let dir = granted_dir();
    for keep in [Keep::Descriptor, Keep::Stream] {
        let component = load_fd_hog(10_000, keep, false).await;
        let report = run_with_dir(&component, dir.path(), Duration::from_secs(10)).await;
        let message = stopped_by_resources(&report);
        assert!(
            message.contains(&format!("{MAX_OPEN_FILES} files open")),
            "{message}"
        );
        assert!(
            report.events.iter().any(|e| e.code == "STOPPED_RESOURCES"),
            "{:?}",
            report.events
        );
    }
}

#[tokio::test]
async fn a_task_closing_the_files_it_opens_may_open_any_number() {
    let _serial = SERIAL.lock().await;
    let dir = granted_dir();
    // More opens than the cap and than the handle table holds.
    let component = load_fd_hog(3_000, Keep::Nothing, false).await;
    let report = run_with_dir(&component, dir.path(), Duration::from_secs(10)).await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    // Holding exactly the cap is allowed.
    let component = load_fd_hog(MAX_OPEN_FILES as u32, Keep::Descriptor, false).await;
    let report = run_with_dir(&component, dir.path(), Duration::from_secs(10)).await;
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
}

#[tokio::test]
async fn runs_hoarding_files_leave_the_process_its_descriptors() {
    let _serial = SERIAL.lock().await;
    let dir = granted_dir();
    // Each run would open 1,000 files and hold them until its time limit.
    let component = load_fd_hog(1_000, Keep::Descriptor, true).await;
    let baseline = open_descriptors();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(baseline));
    let sampler = std::thread::spawn({
        let (done, peak) = (done.clone(), peak.clone());
        move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(open_descriptors(), Ordering::Relaxed);
                // The process can still open files meanwhile.
                std::fs::File::open("/proc/self/status").expect("opening a file");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let timeout = Duration::from_secs(3);
    let reports = tokio::join!(
        run_with_dir(&component, dir.path(), timeout),
        run_with_dir(&component, dir.path(), timeout),
        run_with_dir(&component, dir.path(), timeout),
        run_with_dir(&component, dir.path(), timeout),
    );
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("the runs held up to {grown} more descriptors at once");
    assert!(
        grown <= 4 * MAX_OPEN_FILES + 32,
        "4 runs held {grown} descriptors at once"
    );
    for report in [reports.0, reports.1, reports.2, reports.3] {
        stopped_by_resources(&report);
    }
    assert!(
        open_descriptors() <= baseline + 8,
        "the runs' files stay open after they ended"
    );
}

#[tokio::test]
async fn a_task_cannot_hold_sockets() {
    let _serial = SERIAL.lock().await;
    let wat = include_str!("wat/socket_hog.wat").replace("SOCKETS", "3000");
    let component = runtime()
        .load_bytes(wat.into_bytes(), "socket_hog.wat".into())
        .await
        .expect("the socket hog loads");
    let baseline = open_descriptors();
    let report = run(&component).await;
    // Every creation was refused: one that succeeds traps.
    assert!(report.outcome.is_success(), "{:?}", report.outcome);
    assert!(open_descriptors() <= baseline + 8);
}

#[tokio::test]
async fn runs_hoarding_http_connections_hold_a_bounded_number() {
    let _serial = SERIAL.lock().await;
    // A server that never answers: connections wait in its backlog.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let authority = server.local_addr().unwrap().to_string();
    let wat = include_str!("wat/http_hog.wat")
        .replace("REQUESTS", "500")
        .replace("AUTHORITY_LEN", &authority.len().to_string())
        .replace("AUTHORITY", &authority);
    let component = runtime()
        .load_bytes(wat.into_bytes(), "http_hog.wat".into())
        .await
        .expect("the http hog loads");
    let run = || {
        let mut req = request(&[]);
        req.limits.timeout = Duration::from_secs(2);
        req.grants.http_hosts = vec![authority.parse().unwrap()];
        runtime().run(&component, req)
    };
    let baseline = open_descriptors();
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(baseline));
    let sampler = std::thread::spawn({
        let (done, peak) = (done.clone(), peak.clone());
        move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(open_descriptors(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let reports = tokio::join!(run(), run());
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("the runs held up to {grown} more descriptors at once");
    assert!(
        grown <= 2 * MAX_HTTP_CONNECTIONS + 32,
        "2 runs held {grown} descriptors at once"
    );
    for report in [reports.0, reports.1] {
        assert!(
            report.events.iter().any(|e| e.code == "HTTP_LIMIT"),
            "{:?}",
            report.events
        );
    }
    drop(server);
}
