//! The per-run sandbox, driven through the library with real components:
//! every limit obeyed and violated, every misbehaviour contained with the
//! right typed outcome, denied capabilities staying denied, and the host
//! working on afterwards.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{load, request, runtime};
use cronwerk::model::{
    BroadcastPayload, DirGrant, EventSource, Grants, InstanceInfo, Level, RunLimits, StopReason,
    Trigger,
};
use cronwerk::runtime::{CancelToken, Farm, Outcome, RunReport, RunRequest};

async fn misbehave(props: &[(&str, &str)], tweak: impl FnOnce(&mut RunRequest)) -> RunReport {
    let component = load("misbehave.wasm").await;
    let mut req = request(props);
    tweak(&mut req);
    runtime().run(&component, req).await
}

fn assert_stopped(report: &RunReport, want: StopReason) {
    match &report.outcome {
        Outcome::Stopped { reason, .. } => assert_eq!(*reason, want, "{:?}", report.outcome),
        other => panic!("expected stopped by {want:?}, got {other:?}"),
    }
}

fn assert_succeeded(report: &RunReport) -> &str {
    match &report.outcome {
        Outcome::Succeeded { message } => message,
        other => panic!(
            "expected success, got {other:?} (events: {:?})",
            report.events
        ),
    }
}

#[tokio::test]
async fn hello_logs_its_warning_and_reports_costs() {
    let component = load("hello.wasm").await;
    assert_eq!(component.info().identifier, "Acme.HelloScheduledTask");
    let bytes = std::fs::read(common::component_path("hello.wasm")).unwrap();
    assert_eq!(component.sha256(), cronwerk::runtime::sha256_hex(&bytes));

    let report = runtime().run(&component, request(&[])).await;
    assert_eq!(assert_succeeded(&report), "");
    assert_eq!(report.events.len(), 1);
    let e = &report.events[0];
    assert_eq!(
        (e.level, e.source, e.code.as_str(), e.message.as_str()),
        (
            Level::Warning,
            EventSource::Task,
            "NOTIFICATION",
            "Hello from my scheduled task!"
        )
    );
    assert_eq!(report.component_sha256, component.sha256());
    assert!(report.fuel_consumed > 0);
    assert!(report.peak_memory_bytes >= 64 * 1024);
    assert_eq!(report.run_id, "run-1");
}

#[tokio::test]
async fn fuel_limit_obeyed_and_violated() {
    let fuel = |r: &mut RunRequest| r.limits.fuel = Some(50_000_000);
    let ok = misbehave(&[("action", "count"), ("n", "10000")], fuel).await;
    assert!(assert_succeeded(&ok).starts_with("counted to 10000"));
    assert!(ok.fuel_consumed < 50_000_000);

    let spin = misbehave(&[("action", "spin")], fuel).await;
    assert_stopped(&spin, StopReason::Fuel);
    assert_eq!(spin.fuel_consumed, 50_000_000);
}

#[tokio::test]
async fn time_limit_obeyed_and_violated() {
    let limit = |r: &mut RunRequest| r.limits.timeout = Duration::from_millis(300);
    let ok = misbehave(&[("action", "sleep"), ("ms", "20")], limit).await;
    assert_eq!(assert_succeeded(&ok), "slept 20 ms");

    let spin = misbehave(&[("action", "spin")], limit).await;
    assert_stopped(&spin, StopReason::Time);
    assert!(spin.duration >= Duration::from_millis(300));
    assert!(
        spin.duration < Duration::from_secs(3),
        "{:?}",
        spin.duration
    );
    assert!(spin.events.iter().any(|e| e.code == "STOPPED_TIME"));
    // The figure is the fuel the loop burnt: 300 ms of spinning is far more
    // than 10^7 instructions (a fuel limit stops the same loop at 2*10^9 in
    // about 0.2 s).
    assert!(
        spin.fuel_consumed > 10_000_000,
        "a loop spinning for {:?} reports fuel {}",
        spin.duration,
        spin.fuel_consumed
    );
}

#[tokio::test]
async fn time_limit_stops_a_guest_blocked_in_a_host_call() {
    let blocked = misbehave(&[("action", "block"), ("ms", "60000")], |r| {
        r.limits.timeout = Duration::from_millis(300)
    })
    .await;
    assert_stopped(&blocked, StopReason::Time);
    assert!(
        blocked.duration < Duration::from_secs(3),
        "{:?}",
        blocked.duration
    );
}

#[tokio::test]
async fn memory_limit_obeyed_and_violated() {
    let limit = |r: &mut RunRequest| r.limits.memory_bytes = 32 << 20;
    let ok = misbehave(&[("action", "alloc"), ("bytes", "8388608")], limit).await;
    assert_eq!(assert_succeeded(&ok), "allocated 8388608 bytes");
    assert!(ok.peak_memory_bytes >= 8 << 20);

    let bomb = misbehave(&[("action", "alloc")], limit).await;
    assert_stopped(&bomb, StopReason::Memory);
    assert!(bomb.peak_memory_bytes <= 32 << 20);
    assert!(bomb.peak_memory_bytes >= 16 << 20);
}

#[tokio::test]
async fn stack_limit_obeyed_and_violated() {
    let ok = misbehave(&[("action", "recurse"), ("depth", "1000")], |_| {}).await;
    assert_eq!(assert_succeeded(&ok), "recursed 1000 deep");
    let runaway = misbehave(&[("action", "recurse")], |_| {}).await;
    assert_stopped(&runaway, StopReason::Stack);
}

#[tokio::test]
async fn a_panic_is_stopped_and_its_message_kept() {
    let report = misbehave(&[("action", "panic"), ("text", "kaboom 42")], |_| {}).await;
    assert_stopped(&report, StopReason::Panic);
    assert!(
        report
            .events
            .iter()
            .any(|e| e.source == EventSource::Stderr && e.message.contains("kaboom 42")),
        "{:?}",
        report.events
    );
}

/// A secret the run receives is kept out of its result, its output and a
/// panic's message; the task itself reads the real value.
#[tokio::test]
async fn a_secret_the_task_prints_or_returns_is_kept_as_stars() {
    let secret = "sk-live-0123456789";
    let with_secret = |r: &mut RunRequest| {
        r.config.insert("api-key".into(), secret.into());
        r.secrets = vec![secret.into()];
    };
    let read = misbehave(&[("action", "config"), ("key", "api-key")], with_secret).await;
    assert_eq!(assert_succeeded(&read), "Some(\"***\")");

    let text = format!("the key is {secret}!");
    let panicked = misbehave(&[("action", "panic"), ("text", &text)], with_secret).await;
    assert_stopped(&panicked, StopReason::Panic);
    assert_eq!(
        panicked.outcome.message(),
        "the task panicked: the key is ***!"
    );
    assert!(
        panicked
            .events
            .iter()
            .any(|e| e.source == EventSource::Stderr && e.message == "the key is ***!"),
        "{:?}",
        panicked.events
    );
    assert!(
        !format!("{:?}", panicked.events).contains(secret),
        "{:?}",
        panicked.events
    );
}

#[tokio::test]
async fn a_failing_task_reports_its_message() {
    let report = misbehave(&[("action", "fail"), ("text", "disk is full")], |_| {}).await;
    assert_eq!(
        report.outcome,
        Outcome::Failed {
            message: "disk is full".into()
        }
    );
    let missing = misbehave(&[], |_| {}).await;
    assert!(
        missing
            .outcome
            .message()
            .contains("property 'action' is not set")
    );
}

#[tokio::test]
async fn a_huge_result_is_truncated() {
    let report = misbehave(&[("action", "huge-result"), ("bytes", "4000000")], |_| {}).await;
    let message = assert_succeeded(&report);
    assert!(message.len() < 70 * 1024, "{}", message.len());
    assert!(message.ends_with("[truncated, 4000000 bytes in all]"));
}

#[tokio::test]
async fn a_log_flood_is_capped_and_counted() {
    let report = misbehave(&[("action", "log-flood"), ("n", "5000")], |_| {}).await;
    assert_eq!(assert_succeeded(&report), "logged 5000 lines");
    assert_eq!(report.events.len(), 1001);
    let last = report.events.last().unwrap();
    assert_eq!(last.code, "EVENTS_DROPPED");
    assert!(last.message.starts_with("4000 more events"));
}

#[tokio::test]
async fn stdout_and_stderr_become_events() {
    let report = misbehave(&[("action", "print"), ("n", "2")], |_| {}).await;
    assert_succeeded(&report);
    let lines: Vec<_> = report
        .events
        .iter()
        .map(|e| (e.source, e.level, e.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (EventSource::Stdout, Level::Info, "stdout line 0"),
            (EventSource::Stdout, Level::Info, "stdout line 1"),
            (EventSource::Stderr, Level::Warning, "a line on stderr"),
        ]
    );
}

#[tokio::test]
async fn cancellation_reaches_a_polling_task() {
    let cancel = CancelToken::new();
    cancel.cancel();
    let report = misbehave(&[("action", "sleep"), ("ms", "60000")], |r| {
        r.cancel = cancel.clone()
    })
    .await;
    match &report.outcome {
        Outcome::Cancelled { message } => assert!(message.starts_with("cancelled after")),
        other => panic!("{other:?}"),
    }
    assert!(report.duration < Duration::from_secs(5));
}

#[tokio::test]
async fn a_task_ignoring_cancellation_is_stopped_after_the_grace_period() {
    let cancel = CancelToken::new();
    let report = {
        let component = load("misbehave.wasm").await;
        let mut req = request(&[("action", "sleep-ignoring-cancel"), ("ms", "60000")]);
        req.cancel = cancel.clone();
        req.grace = Duration::from_millis(200);
        let run = runtime().run(&component, req);
        let stop = async {
            // Cancel once the run is under way; the grace period counts from here.
            tokio::task::yield_now().await;
            cancel.cancel();
        };
        let (report, ()) = tokio::join!(run, stop);
        report
    };
    match &report.outcome {
        Outcome::Cancelled { message } => assert!(message.contains("grace period"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(report.duration >= Duration::from_millis(200));
    assert!(
        report.duration < Duration::from_secs(5),
        "{:?}",
        report.duration
    );
}

#[tokio::test]
async fn nothing_is_granted_by_default() {
    let file = misbehave(
        &[("action", "read-file"), ("path", "/etc/hostname")],
        |_| {},
    )
    .await;
    assert_eq!(file.outcome.kind(), "failed", "{:?}", file.outcome);
    let dir = misbehave(&[("action", "list-dir"), ("path", "/")], |_| {}).await;
    assert_eq!(dir.outcome.kind(), "failed", "{:?}", dir.outcome);

    // The test process has HOME and PATH; none of it may reach the guest.
    let env = misbehave(&[("action", "env")], |_| {}).await;
    assert_eq!(assert_succeeded(&env), "vars=0 args=0 home=None");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let net = misbehave(&[("action", "socket"), ("addr", &addr)], |_| {}).await;
    assert_eq!(net.outcome.kind(), "failed", "{:?}", net.outcome);
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the guest reached the listener"
    );
}

#[tokio::test]
async fn a_granted_directory_is_visible_and_nothing_outside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_owned();
    let granted = root.join("granted");
    std::fs::create_dir_all(&granted).unwrap();
    std::fs::write(granted.join("in.txt"), "inside").unwrap();
    std::fs::write(root.join("outside.txt"), "secret").unwrap();
    let grant = |read_only: bool| {
        let host_path = granted.clone();
        move |r: &mut RunRequest| {
            r.grants = Grants {
                dirs: vec![DirGrant {
                    host_path,
                    guest_path: "/data".into(),
                    read_only,
                }],
                ..Grants::default()
            }
        }
    };

    let read = misbehave(
        &[("action", "read-file"), ("path", "/data/in.txt")],
        grant(true),
    )
    .await;
    assert_eq!(assert_succeeded(&read), "read 6 bytes: inside");
    let escape = misbehave(
        &[("action", "read-file"), ("path", "/data/../outside.txt")],
        grant(true),
    )
    .await;
    assert_eq!(escape.outcome.kind(), "failed", "{:?}", escape.outcome);

    let ro = misbehave(
        &[("action", "write-file"), ("path", "/data/new.txt")],
        grant(true),
    )
    .await;
    assert_eq!(ro.outcome.kind(), "failed", "{:?}", ro.outcome);
    assert!(!root.join("granted/new.txt").exists());
    let rw = misbehave(
        &[("action", "write-file"), ("path", "/data/new.txt")],
        grant(false),
    )
    .await;
    assert_eq!(assert_succeeded(&rw), "wrote 2 bytes");
    assert_eq!(
        std::fs::read_to_string(root.join("granted/new.txt")).unwrap(),
        "hi"
    );
}

#[tokio::test]
async fn state_config_instance_and_context_reach_the_task() {
    let state = misbehave(&[("action", "state")], |r| {
        r.state.insert("count".into(), "41".into());
    })
    .await;
    assert_eq!(assert_succeeded(&state), "count=42");
    assert_eq!(state.state.get("count").map(String::as_str), Some("42"));

    let full = misbehave(&[("action", "state-fill")], |_| {}).await;
    assert!(assert_succeeded(&full).starts_with("stopped at k17: state would hold"));

    let config = misbehave(&[("action", "config"), ("key", "endpoint")], |r| {
        r.config
            .insert("endpoint".into(), "https://example.test".into());
    })
    .await;
    assert_eq!(assert_succeeded(&config), "Some(\"https://example.test\")");

    let instance = misbehave(&[("action", "instance")], |r| {
        r.instance = InstanceInfo {
            name: "node-a".into(),
            roles: vec!["edit".into()],
        }
    })
    .await;
    assert_eq!(assert_succeeded(&instance), "node-a [\"edit\"]");

    let context = misbehave(&[("action", "context")], |r| {
        r.context.trigger = Trigger::Broadcast;
        r.context.run_count = 7;
        r.instance.name = "node-b".into();
        r.payload = Some(BroadcastPayload {
            target: "all".into(),
            text: "hi".into(),
            data: vec![1, 2, 3],
        });
    })
    .await;
    assert_eq!(
        assert_succeeded(&context),
        "name=test id=Cronwerk.Test.Misbehave trigger=broadcast attempt=1 runs=7 instance=node-b \
         scheduled=false payload=all|hi|3"
    );
}

#[derive(Default)]
struct RecordingFarm {
    sent: Mutex<Vec<(String, BroadcastPayload)>>,
}

#[async_trait::async_trait]
impl Farm for RecordingFarm {
    async fn broadcast(
        &self,
        identifier: &str,
        payload: BroadcastPayload,
    ) -> Result<String, String> {
        self.sent.lock().unwrap().push((identifier.into(), payload));
        Ok("b-1".into())
    }
}

#[tokio::test]
async fn broadcast_without_a_farm_fails_honestly_and_reaches_a_farm_when_there_is_one() {
    let alone = misbehave(&[("action", "broadcast")], |_| {}).await;
    assert!(
        matches!(&alone.outcome, Outcome::Failed { message } if message.contains("no farm is configured")),
        "{:?}",
        alone.outcome
    );
    let farm = Arc::new(RecordingFarm::default());
    let sent = misbehave(&[("action", "broadcast")], |r| r.farm = Some(farm.clone())).await;
    assert_eq!(assert_succeeded(&sent), "broadcast b-1");
    let sent = farm.sent.lock().unwrap();
    assert_eq!(sent[0].0, "Acme.HelloScheduledTask");
    assert_eq!(sent[0].1.data, vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_keeps_working_while_and_after_tasks_misbehave() {
    let component = load("misbehave.wasm").await;
    let hello = load("hello.wasm").await;
    let limits = RunLimits {
        timeout: Duration::from_secs(2),
        fuel: None,
        memory_bytes: 32 << 20,
    };
    let bad = ["spin", "alloc", "panic", "recurse", "block"].map(|action| {
        let mut req = request(&[("action", action), ("ms", "60000")]);
        req.limits = limits;
        let component = component.clone();
        tokio::spawn(async move { runtime().run(&component, req).await })
    });
    // Healthy runs complete while the bad ones are still being stopped.
    for _ in 0..20 {
        let report = runtime().run(&hello, request(&[])).await;
        assert!(report.outcome.is_success(), "{:?}", report.outcome);
    }
    for handle in bad {
        let report = handle.await.unwrap();
        assert_eq!(report.outcome.kind(), "stopped", "{:?}", report.outcome);
    }
    let after = runtime().run(&hello, request(&[])).await;
    assert!(after.outcome.is_success());
}

#[tokio::test]
async fn a_task_written_in_webassembly_text_runs() {
    let component = load("wat-hello.wasm").await;
    assert_eq!(component.info().identifier, "Acme.WatHello");
    let report = runtime().run(&component, request(&[])).await;
    assert_eq!(assert_succeeded(&report), "written by hand");
    assert_eq!(report.events[0].code, "WAT");
    assert_eq!(report.events[0].message, "Hello from WebAssembly text!");
}

#[tokio::test]
async fn a_runaway_describe_is_stopped_by_fuel() {
    let wat = include_str!("../example-tasks/wat-hello/task.wat").replace(
        "(func (export \"describe\") (result i32)",
        "(func (export \"describe\") (result i32) (loop $spin (br $spin))",
    );
    let started = std::time::Instant::now();
    let err = runtime()
        .load_bytes(wat.into_bytes(), "spin-describe.wat".into())
        .await
        .err()
        .expect("a describe that never returns fails the load");
    let message = err.to_string();
    assert!(message.contains("fuel limit exhausted"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
