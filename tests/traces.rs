//! Run traces as a collector receives them: `cronwerk serve
//! --otlp-endpoint` exports through the OpenTelemetry SDK's OTLP/HTTP
//! exporter to a receiver in this test (`common::otlp`), which decodes each
//! export with the protocol's own message types and keeps the spans. Waits are for spans
//! that arrive or runs that are recorded, never fixed sleeps.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;

use common::otlp::{Collector, Received, attr};
use common::serve_env::Env;
use cronwerk::model::RunState;
use opentelemetry_proto::tonic::trace::v1::{Span, status};

/// The run span of `task`'s run `run_id`, and its children by name.
fn run_tree<'a>(spans: &'a [Received], run_id: &str) -> (&'a Received, HashMap<String, &'a Span>) {
    let run = spans
        .iter()
        .find(|s| s.span.name == "run" && s.attr("cronwerk.run_id").as_deref() == Some(run_id))
        .unwrap_or_else(|| panic!("no run span for {run_id}"));
    let children = spans
        .iter()
        .filter(|s| s.span.parent_span_id == run.span.span_id)
        .map(|s| (s.span.name.clone(), &s.span))
        .collect();
    (run, children)
}

fn has_run_span(spans: &[Received], run_id: &str) -> bool {
    spans
        .iter()
        .any(|s| s.span.name == "run" && s.attr("cronwerk.run_id").as_deref() == Some(run_id))
}

#[test]
fn every_run_arrives_as_a_span_with_its_phases_events_and_costs() {
    let collector = Collector::start();
    let env = Env::new(&["hello.wasm", "misbehave.wasm"]);
    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    env.ok(&[
        "task",
        "add",
        "broken",
        "--implementation",
        "Cronwerk.Test.Misbehave",
        "--every",
        "1h",
        "-p",
        "action=fail",
        "-p",
        "text=the disk is full",
    ]);
    let mut serve = env.serve_command("traced", &["--otlp-endpoint", &collector.base()]);
    serve.env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let serving = common::serve_env::start_serving(serve, "traced");

    // A scheduled run: claimed, instantiated, executed, recorded.
    let runs = env.wait_runs("hello", "a scheduled run", |r| {
        r.iter().any(|r| r.state == RunState::Succeeded)
    });
    let hello = runs
        .iter()
        .find(|r| r.state == RunState::Succeeded)
        .unwrap();
    let spans = collector.wait("hello's run span", |s| has_run_span(s, &hello.id));
    let (run, children) = run_tree(&spans, &hello.id);
    assert_eq!(run.attr("cronwerk.task").as_deref(), Some("hello"));
    assert_eq!(
        run.attr("cronwerk.identifier").as_deref(),
        Some("Acme.HelloScheduledTask")
    );
    assert_eq!(run.attr("cronwerk.trigger").as_deref(), Some("schedule"));
    assert_eq!(run.attr("cronwerk.outcome").as_deref(), Some("succeeded"));
    assert_eq!(run.attr("cronwerk.instance").as_deref(), Some("traced"));
    assert_eq!(run.attr("cronwerk.attempt").as_deref(), Some("1"));
    let fuel: u64 = run.attr("cronwerk.fuel").unwrap().parse().unwrap();
    assert!(
        fuel > 0 && Some(fuel) == hello.fuel,
        "{fuel} vs {:?}",
        hello.fuel
    );
    let peak: u64 = run
        .attr("cronwerk.peak_memory_bytes")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(Some(peak), hello.peak_memory_bytes);
    let lateness: f64 = run.attr("cronwerk.lateness_ms").unwrap().parse().unwrap();
    assert!((0.0..1000.0).contains(&lateness), "lateness {lateness} ms");
    assert!(run.attr("cronwerk.scheduled_for").is_some());
    assert_eq!(
        run.span.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Ok as i32)
    );
    // The task's log line is a span event, with its level and message.
    let event = run
        .span
        .events
        .iter()
        .find(|e| e.name == "NOTIFICATION")
        .unwrap_or_else(|| panic!("no NOTIFICATION event in {:?}", run.span.events));
    assert_eq!(
        attr(&event.attributes, "cronwerk.message").as_deref(),
        Some("Hello from my scheduled task!")
    );
    assert_eq!(
        attr(&event.attributes, "cronwerk.level").as_deref(),
        Some("warning")
    );
    assert!(event.time_unix_nano >= run.span.start_time_unix_nano);
    // One child per phase, in order, within the run, in the same trace.
    let phases = ["claim", "instantiate", "execute", "record"];
    for name in phases {
        let child = children
            .get(name)
            .unwrap_or_else(|| panic!("no {name} span under the run: {:?}", children.keys()));
        assert_eq!(child.trace_id, run.span.trace_id, "{name}");
        assert!(
            child.start_time_unix_nano >= run.span.start_time_unix_nano,
            "{name}"
        );
        assert!(
            child.end_time_unix_nano <= run.span.end_time_unix_nano,
            "{name}"
        );
        assert!(
            child.start_time_unix_nano <= child.end_time_unix_nano,
            "{name}"
        );
    }
    for pair in phases.windows(2) {
        assert!(
            children[pair[0]].end_time_unix_nano <= children[pair[1]].start_time_unix_nano,
            "{} ends after {} starts",
            pair[0],
            pair[1]
        );
    }
    // Who sent it.
    assert_eq!(
        run.resource.get("service.name").map(String::as_str),
        Some("cronwerk")
    );
    assert_eq!(
        run.resource.get("service.instance.id").map(String::as_str),
        Some("traced")
    );
    assert!(
        collector
            .paths
            .lock()
            .unwrap()
            .iter()
            .all(|p| p == "/v1/traces")
    );

    // A failed manual run: an error status with the task's message, and
    // the RUN_FAILED event.
    env.cli(&["task", "run", "broken"]);
    let runs = env.wait_runs("broken", "the failed run", |r| {
        r.iter().any(|r| r.state == RunState::Failed)
    });
    let failed = runs.iter().find(|r| r.state == RunState::Failed).unwrap();
    let spans = collector.wait("the failed run's span", |s| has_run_span(s, &failed.id));
    let (run, children) = run_tree(&spans, &failed.id);
    assert_eq!(run.attr("cronwerk.trigger").as_deref(), Some("manual"));
    assert_eq!(run.attr("cronwerk.outcome").as_deref(), Some("failed"));
    assert!(run.attr("cronwerk.lateness_ms").is_none());
    let status = run.span.status.clone().unwrap();
    assert_eq!(status.code, status::StatusCode::Error as i32);
    assert_eq!(status.message, "the disk is full");
    assert!(run.span.events.iter().any(|e| e.name == "RUN_FAILED"));
    let execute = children["execute"];
    assert_eq!(
        execute.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Error as i32)
    );
    drop(serving);
}

#[test]
fn the_last_runs_are_sent_when_serve_stops() {
    let collector = Collector::start();
    let env = Env::new(&["hello.wasm"]);
    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1h",
    ]);
    // The standard variable instead of the flag; a batch delay far longer
    // than the test, so only the flush on stopping sends the span.
    let mut serve = env.serve_command("flushing", &[]);
    serve
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base())
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000");
    let serving = common::serve_env::start_serving(serve, "flushing");
    let out = env.ok(&["task", "run", "hello"]);
    assert!(out.contains("succeeded"), "{out}");
    let run = env.runs("hello").pop().unwrap();
    assert!(
        collector.spans().is_empty(),
        "nothing is sent before the batch is due"
    );
    let (code, lines) = serving.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    let spans = collector.spans();
    assert!(has_run_span(&spans, &run.id), "{spans:#?}");
}

#[test]
fn a_collector_that_is_down_holds_no_run_up() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::new(&["hello.wasm"]);
    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut serve = env.serve_command("unheard", &["--otlp-endpoint", &endpoint]);
    serve.env("OTEL_BSP_SCHEDULE_DELAY", "50");
    let serving = common::serve_env::start_serving(serve, "unheard");
    env.wait_runs("hello", "three runs on time", |r| {
        r.iter().filter(|r| r.state == RunState::Succeeded).count() >= 3
    });
    let (code, lines) = serving.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn an_endpoint_that_cannot_be_used_is_refused_naming_it() {
    let env = Env::new(&[]);
    /// Flags, environment, and the flag or variable the error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 3] = [
        (
            &["--otlp-endpoint", "https://collector:4318"],
            &[],
            "--otlp-endpoint",
        ),
        (
            &["--otlp-endpoint", "collector:4318"],
            &[],
            "--otlp-endpoint",
        ),
        (
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ];
    for (flags, vars, named) in cases {
        let mut serve = env.serve_command("refused", flags);
        serve.envs(vars.iter().copied());
        let out = serve.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flags:?} {vars:?}: {stderr}");
        assert!(stderr.contains(named), "{stderr}");
    }
}
