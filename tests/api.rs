//! The HTTP API of a real `cronwerk serve`: every endpoint, the token rules
//! (401 without or with a wrong token, 403 for a foreign host name), 400s
//! that name the field, 404s for unknown configurations and runs, live
//! streams, metrics, and `--listen`.

mod common;
#[path = "support/server.rs"]
mod server;

use std::os::unix::fs::PermissionsExt as _;

use serde_json::{Value, json};
use server::{Server, next_data};

const HELLO: &str = "Acme.HelloScheduledTask";

fn task(name: &str, every: &str) -> Value {
    json!({
        "name": name,
        "implementation": HELLO,
        "schedule": {"every": every},
        "timeout": "5s",
        "memory": "64MiB",
    })
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_token_is_created_private_shown_once_and_rotates_without_a_restart() {
    // stderr is a pipe here, as under a service manager: the token is
    // printed only when asked for.
    let s = Server::start_with(&["hello.wasm"], &["--print-token"]);
    let token = s.token();
    assert_eq!(token.len(), 64);
    let shown: Vec<&String> = s
        .startup
        .iter()
        .filter(|l| l.contains("API token"))
        .collect();
    assert_eq!(shown.len(), 1, "{:?}", s.startup);
    assert!(shown[0].contains(&token));
    let mode = std::fs::metadata(s.data.join("api-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Rotation takes effect at once.
    let out = s.cli(&["token", "rotate"]);
    assert!(out.status.success());
    let rotated = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(rotated, s.token());
    assert_ne!(rotated, token);
    let body = task("t", "1h");
    assert_eq!(
        s.call("POST", "/api/tasks", Some(&token), Some(&body))
            .status,
        401
    );
    assert_eq!(
        s.call("POST", "/api/tasks", Some(&rotated), Some(&body))
            .status,
        201
    );

    // A second start keeps the token and does not print it.
    let s = s.restart();
    assert_eq!(s.token(), rotated);
    assert!(
        !s.startup.iter().any(|l| l.contains("API token")),
        "{:?}",
        s.startup
    );
}

#[test]
fn a_new_token_is_not_printed_to_a_stderr_that_is_not_a_terminal() {
    let s = Server::start(&["hello.wasm"]);
    let token = s.token();
    assert!(
        !s.startup.iter().any(|l| l.contains(&token)),
        "{:?}",
        s.startup
    );
    let file = s.data.join("api-token");
    let said: Vec<&String> = s
        .startup
        .iter()
        .filter(|l| l.contains("created an API token"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", s.startup);
    for what in [
        file.to_str().unwrap(),
        "0600",
        "--print-token",
        "token rotate",
    ] {
        assert!(said[0].contains(what), "{what}: {}", said[0]);
    }
}

#[test]
fn changes_need_the_token_and_loopback_reads_do_not() {
    let s = Server::start(&["hello.wasm"]);
    s.send_ok("POST", "/api/tasks", Some(&task("t", "1h")), 201);
    let body = task("u", "1h");
    let broadcast = json!({ "identifier": "Acme.HelloScheduledTask" });
    let writes: &[(&str, &str, Option<&Value>)] = &[
        ("POST", "/api/tasks", Some(&body)),
        ("PUT", "/api/tasks/t", Some(&body)),
        ("DELETE", "/api/tasks/t", None),
        ("POST", "/api/tasks/t/enable", None),
        ("POST", "/api/tasks/t/disable", None),
        ("POST", "/api/tasks/t/run", None),
        ("POST", "/api/broadcasts", Some(&broadcast)),
        ("POST", "/api/plugins/reload", None),
    ];
    for (method, path, body) in writes {
        for token in [None, Some("wrong"), Some("")] {
            let r = s.call(method, path, token, *body);
            assert_eq!(
                r.status, 401,
                "{method} {path} with {token:?}: {:?}",
                r.body
            );
            assert!(
                r.body["error"].as_str().unwrap().contains("token"),
                "{:?}",
                r.body
            );
        }
    }
    // Nothing changed.
    assert_eq!(names(&s.get_ok("/api/tasks")), ["t"]);
    assert_eq!(s.get_ok("/api/runs?task=t"), json!([]));

    let reads = [
        "/api/tasks",
        "/api/tasks/t",
        "/api/runs",
        "/api/events",
        "/api/plugins",
        "/api/instances",
        "/api/upcoming",
        "/metrics",
    ];
    for path in reads {
        assert_eq!(s.get(path).status, 200, "{path}");
        let r = s.call("GET", path, Some("wrong"), None);
        assert_eq!(r.status, 401, "{path} with a wrong token");
        assert_eq!(
            s.call("GET", path, Some(s.token().as_str()), None).status,
            200
        );
    }
    // The preview changes nothing, so it is a read.
    assert_eq!(
        s.call("POST", "/api/preview", None, Some(&body)).status,
        200
    );

    // A loopback listener answers loopback names only (DNS rebinding).
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for host in ["evil.example", "evil.example:80", "10.0.0.1"] {
        let r = agent
            .get(s.url("/api/tasks"))
            .header("Host", host)
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "Host: {host}");
        let r = agent.get(s.url("/")).header("Host", host).call().unwrap();
        assert_eq!(r.status().as_u16(), 403, "dashboard with Host: {host}");
    }
    for host in ["localhost", "127.0.0.1:1", "[::1]:7878"] {
        let r = agent
            .get(s.url("/api/tasks"))
            .header("Host", host)
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "Host: {host}");
    }
}

#[test]
fn configurations_round_trip_through_create_read_replace_enable_run_and_delete() {
    let s = Server::start(&["hello.wasm"]);
    let created = s.send_ok(
        "POST",
        "/api/tasks",
        Some(&json!({
            "name": "Nightly",
            "implementation": HELLO,
            "enabled": false,
            "schedule": {"cron": "0 30 2 * * *", "timezone": "Europe/Prague"},
            "timeout": "30s",
            "fuel": 50_000_000,
            "memory": 67108864,
            "properties": {"greeting": "hi"},
            "retries": 2,
            "retry_backoff": "5s",
            "misfire": "once",
            "allow_http": ["API.example.com", "127.0.0.1:8080"],
            "keep_runs": 5,
            "keep_failed": 20,
            "on_overlap": "allow",
            "max_concurrent": 3,
            "jitter": "10m",
            "on_start": true,
            "start": "2026-01-01T00:00:00Z",
            "until": "2099-01-01T00:00:00Z",
        })),
        201,
    );
    assert_eq!(created["keep_runs"], 5);
    assert_eq!(created["keep_failed"], 20);
    assert_eq!(created["on_overlap"], "allow");
    assert_eq!(created["max_concurrent"], 3);
    assert_eq!(created["running_count"], 0);
    assert_eq!(created["jitter"], "10m");
    assert_eq!(created["on_start"], true);
    assert!(created["jitter_offset"].is_string(), "{created}");
    assert_eq!(created["until"], "2099-01-01T00:00:00Z");
    assert_eq!(created["name"], "Nightly");
    assert_eq!(
        created["allow_http"],
        json!(["api.example.com", "127.0.0.1:8080"])
    );
    assert_eq!(created["enabled"], false);
    assert_eq!(
        created["schedule_text"],
        "every day at 02:30:00 (Europe/Prague)"
    );
    assert_eq!(created["fuel"], 50_000_000);
    assert_eq!(created["memory"], 67108864);
    assert_eq!(created["misfire"], "once");
    assert_eq!(created["next_run_at"], Value::Null, "disabled: no next run");
    assert_eq!(created["upcoming"], json!([]));

    // Enabling restarts the schedule from now; the next 5 fire times come along.
    let enabled = s.send_ok("POST", "/api/tasks/Nightly/enable", None, 200);
    assert_eq!(enabled["enabled"], true);
    assert!(enabled["next_run_at"].is_string());
    assert_eq!(enabled["upcoming"].as_array().unwrap().len(), 5);
    assert_eq!(enabled["upcoming"][0], enabled["next_run_at"]);

    // What GET returns can be sent back (the input fields), and a rename works.
    let read = s.get_ok("/api/tasks/Nightly");
    let mut input = json!({});
    for key in [
        "implementation",
        "enabled",
        "schedule",
        "timeout",
        "fuel",
        "memory",
        "properties",
        "grants",
        "allow_http",
        "misfire",
        "catch_up",
        "retries",
        "retry_backoff",
        "keep_runs",
        "keep_failed",
        "on_overlap",
        "max_concurrent",
        "jitter",
        "start",
        "until",
        "on_start",
    ] {
        input[key] = read[key].clone();
    }
    input["name"] = json!("Nightly cleanup");
    input["timeout"] = json!("45s");
    let replaced = s.send_ok("PUT", "/api/tasks/Nightly", Some(&input), 200);
    assert_eq!(replaced["name"], "Nightly cleanup");
    assert_eq!(replaced["timeout"], "45s");
    assert_eq!(replaced["id"], created["id"]);
    assert_eq!(replaced["properties"], json!({"greeting": "hi"}));
    assert_eq!(replaced["allow_http"], created["allow_http"]);
    assert_eq!(
        (&replaced["on_overlap"], &replaced["max_concurrent"]),
        (&json!("allow"), &json!(3))
    );
    // The same schedule kept its next run.
    assert_eq!(replaced["next_run_at"], enabled["next_run_at"]);
    assert_eq!(s.get("/api/tasks/Nightly").status, 404);

    // A second configuration, and the name taken is a 409 on `name`.
    s.send_ok("POST", "/api/tasks", Some(&task("Hello", "1h")), 201);
    let taken = s.call(
        "POST",
        "/api/tasks",
        Some(s.token().as_str()),
        Some(&task("Hello", "1h")),
    );
    assert_eq!(taken.status, 409);
    assert_eq!(taken.body["field"], "name");
    assert_eq!(names(&s.get_ok("/api/tasks")), ["Hello", "Nightly cleanup"]);

    // Disabled configurations run on request too.
    let disabled = s.send_ok("POST", "/api/tasks/Nightly%20cleanup/disable", None, 200);
    assert_eq!(disabled["enabled"], false);
    let started = s.send_ok("POST", "/api/tasks/Nightly%20cleanup/run", None, 202);
    assert_eq!(started["state"], "running");
    let run_id = started["run_id"].as_str().unwrap().to_owned();
    let run = s.wait_for(
        "the manual run to succeed",
        &format!("/api/runs/{run_id}"),
        |r| r["state"] == "succeeded",
    );
    assert_eq!(run["trigger"], "manual");
    assert_eq!(run["task_name"], "Nightly cleanup");
    assert_eq!(run["component_version"], "1.0.0");
    assert!(run["fuel"].as_u64().unwrap() > 0);
    assert!(run["duration_us"].as_u64().is_some());
    assert!(run["peak_memory_bytes"].as_u64().unwrap() > 0);
    let task = s.get_ok("/api/tasks/Nightly%20cleanup");
    assert_eq!(task["run_count"], 1);
    assert_eq!(task["last_outcome"], "succeeded");

    assert_eq!(
        s.send_ok("DELETE", "/api/tasks/Nightly%20cleanup", None, 204),
        Value::Null
    );
    assert_eq!(s.get("/api/tasks/Nightly%20cleanup").status, 404);
    assert_eq!(names(&s.get_ok("/api/tasks")), ["Hello"]);
}

/// `body` posted to /api/tasks must be a 400 naming `field`.
fn assert_bad(s: &Server, body: Value, field: &str) {
    let r = s.call("POST", "/api/tasks", Some(s.token().as_str()), Some(&body));
    assert_eq!(r.status, 400, "{body}: {:?}", r.body);
    assert_eq!(r.body["field"], field, "{body}: {:?}", r.body);
    let error = r.body["error"].as_str().unwrap();
    assert!(error.starts_with(&format!("{field}: ")), "{error}");
    // The preview names the same field, with a 200.
    if field != "body" {
        let p = s.call("POST", "/api/preview", None, Some(&body));
        if p.status == 200 {
            assert_eq!(p.body["valid"], false);
            assert_eq!(p.body["field"], field, "preview of {body}");
        } else {
            // Shape errors are 400 for the preview as well.
            assert_eq!(p.status, 400);
            assert_eq!(p.body["field"], field);
        }
    }
}

fn with(key: &str, value: Value) -> Value {
    let mut t = task("bad", "10s");
    if let Some((outer, inner)) = key.split_once('.') {
        t[outer][inner] = value;
    } else {
        t[key] = value;
    }
    t
}

#[test]
fn bad_input_is_a_400_naming_the_field() {
    let s = Server::start(&["hello.wasm"]);
    let mut no_name = task("x", "10s");
    no_name.as_object_mut().unwrap().remove("name");
    assert_bad(&s, no_name, "name");
    assert_bad(&s, with("name", json!("")), "name");
    assert_bad(&s, with("name", json!(" padded ")), "name");
    assert_bad(&s, with("name", json!("a/b")), "name");
    assert_bad(
        &s,
        with("implementation", json!("Acme Hello")),
        "implementation",
    );
    assert_bad(&s, with("schedule", json!({})), "schedule");
    assert_bad(&s, with("keep_runs", json!(2_000_000)), "keep_runs");
    assert_bad(&s, with("keep_failed", json!(2_000_000)), "keep_failed");
    assert_bad(&s, with("on_overlap", json!("buffer")), "on_overlap");
    // A limit of concurrent runs only goes with `allow`, and is bounded.
    assert_bad(&s, with("max_concurrent", json!(3)), "max_concurrent");
    let mut too_many = with("on_overlap", json!("allow"));
    too_many["max_concurrent"] = json!(1000);
    assert_bad(&s, too_many, "max_concurrent");
    // A jitter must fit between two runs; a window must end after it starts,
    // and not before the next run.
    assert_bad(&s, with("jitter", json!("1m")), "jitter");
    assert_bad(&s, with("jitter", json!("soon")), "jitter");
    assert_bad(&s, with("until", json!("yesterday")), "until");
    assert_bad(&s, with("until", json!("2020-01-01T00:00:00Z")), "until");
    let mut backwards = with("start", json!("2099-01-02T00:00:00Z"));
    backwards["until"] = json!("2099-01-01T00:00:00Z");
    assert_bad(&s, backwards, "until");
    // Follow-ups name configurations that exist, and never lead back.
    assert_bad(&s, with("on_failure", json!(["no such one"])), "on_failure");
    assert_bad(&s, with("on_success", json!(["bad"])), "on_success");
    assert_bad(
        &s,
        with("schedule", json!({"every": "10s", "cron": "* * * * *"})),
        "schedule",
    );
    assert_bad(&s, with("schedule.every", json!("0s")), "schedule.every");
    assert_bad(&s, with("schedule.every", json!("often")), "schedule.every");
    assert_bad(
        &s,
        with("schedule", json!({"cron": "61 * * * *"})),
        "schedule.cron",
    );
    assert_bad(
        &s,
        with(
            "schedule",
            json!({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}),
        ),
        "schedule.timezone",
    );
    assert_bad(
        &s,
        with("schedule", json!({"at": "2020-01-01T00:00:00Z"})),
        "schedule.at",
    );
    assert_bad(
        &s,
        with("schedule", json!({"at": "tomorrow"})),
        "schedule.at",
    );
    assert_bad(
        &s,
        with(
            "schedule",
            json!({"run_on": "2030-01-01T00:00:00Z", "interval_seconds": 0}),
        ),
        "schedule.interval_seconds",
    );
    assert_bad(&s, with("schedule.evry", json!("1s")), "schedule.evry");
    assert_bad(&s, with("timeout", json!("soon")), "timeout");
    assert_bad(&s, with("timeout", json!("0s")), "timeout");
    assert_bad(&s, with("memory", json!("lots")), "memory");
    assert_bad(&s, with("memory", json!(1000)), "memory");
    assert_bad(&s, with("fuel", json!(0)), "fuel");
    assert_bad(&s, with("fuel", json!("many")), "fuel");
    assert_bad(&s, with("misfire", json!("sometimes")), "misfire");
    assert_bad(&s, with("retries", json!(1000)), "retries");
    assert_bad(&s, with("retry_backoff", json!("later")), "retry_backoff");
    assert_bad(&s, with("catch_up", json!("forever")), "catch_up");
    assert_bad(
        &s,
        with(
            "grants",
            json!([{"host_path": "/no/such/dir", "guest_path": "/data"}]),
        ),
        "grants",
    );
    assert_bad(
        &s,
        with(
            "grants",
            json!([{"host_path": "relative", "guest_path": "/data"}]),
        ),
        "grants",
    );
    assert_bad(
        &s,
        with("allow_http", json!(["http://example.com/"])),
        "allow_http",
    );
    assert_bad(&s, with("surprise", json!(1)), "surprise");
    // Not an object.
    let r = s.call(
        "POST",
        "/api/tasks",
        Some(s.token().as_str()),
        Some(&Value::String("{".into())),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.body["field"], "body");
    // Nothing was created by any of them.
    assert_eq!(s.get_ok("/api/tasks"), json!([]));

    // PUT validates the same way.
    s.send_ok("POST", "/api/tasks", Some(&task("ok", "10s")), 201);
    let r = s.call(
        "PUT",
        "/api/tasks/ok",
        Some(s.token().as_str()),
        Some(&with("timeout", json!("soon"))),
    );
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("timeout")));

    // Query parameters.
    for (path, field) in [
        ("/api/runs?limit=0", "limit"),
        ("/api/runs?limit=many", "limit"),
        ("/api/runs?outcome=meh", "outcome"),
        ("/api/runs?since=yesterday", "since"),
        ("/api/runs?until=later", "until"),
        ("/api/runs?color=red", "color"),
        ("/api/events?level=loud", "level"),
        ("/api/events?limit=5000", "limit"),
        ("/api/events?after=x", "after"),
        ("/api/events/stream?level=loud", "level"),
        ("/api/upcoming?limit=0", "limit"),
    ] {
        let r = s.get(path);
        assert_eq!(r.status, 400, "{path}: {:?}", r.body);
        assert_eq!(r.body["field"], field, "{path}: {:?}", r.body);
    }
}

#[test]
fn unknown_configurations_runs_and_endpoints_are_404() {
    let s = Server::start(&["hello.wasm"]);
    let body = task("x", "1h");
    for (method, path, body) in [
        ("GET", "/api/tasks/nope", None),
        ("PUT", "/api/tasks/nope", Some(&body)),
        ("DELETE", "/api/tasks/nope", None),
        ("POST", "/api/tasks/nope/enable", None),
        ("POST", "/api/tasks/nope/disable", None),
        ("POST", "/api/tasks/nope/run", None),
        ("GET", "/api/runs?task=nope", None),
        ("GET", "/api/events?task=nope", None),
        ("GET", "/api/events/stream?task=nope", None),
        ("GET", "/api/runs/no-such-run", None),
        ("POST", "/api/runs/no-such-run/stop", None),
        ("GET", "/api/nothing-here", None),
    ] {
        let r = s.call(method, path, Some(s.token().as_str()), body);
        assert_eq!(r.status, 404, "{method} {path}: {:?}", r.body);
        assert!(r.body["error"].is_string(), "{method} {path}: {:?}", r.body);
    }
    assert!(
        s.get("/api/tasks/nope").body["error"]
            .as_str()
            .unwrap()
            .contains("'nope'")
    );
}

#[test]
fn runs_and_events_filter_and_the_event_stream_follows_live() {
    let s = Server::start(&["hello.wasm"]);
    let mut quiet = task("quiet", "1h");
    quiet["properties"] = json!({"greeting": "hi"});
    s.send_ok("POST", "/api/tasks", Some(&quiet), 201);
    s.send_ok("POST", "/api/tasks", Some(&task("other", "1h")), 201);
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);

    // Follow the log of `quiet` only, then make it run.
    let events = s.stream("/api/events/stream?task=quiet");
    let changes = s.stream("/api/changes");
    next_data_or_change(&changes);
    let first = s.send_ok("POST", "/api/tasks/quiet/run", None, 202)["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = next_data(&events, "an event of the manual run", |e| {
        e["run_id"] == first
    });
    assert_eq!(event["task_name"], "quiet");
    assert!(event["id"].as_i64().unwrap() > 0);
    next_data_or_change(&changes);
    s.wait_for(
        "the first run to finish",
        &format!("/api/runs/{first}"),
        |r| r["state"] == "succeeded",
    );
    let second = s.send_ok("POST", "/api/tasks/quiet/run", None, 202)["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    next_data(&events, "an event of the second run", |e| {
        e["run_id"] == second
    });
    s.wait_for(
        "the second run to finish",
        &format!("/api/runs/{second}"),
        |r| r["state"] == "succeeded",
    );
    s.send_ok("POST", "/api/tasks/other/run", None, 202);
    s.wait_for("the other run", "/api/runs?task=other", |r| {
        r[0]["state"] == "succeeded"
    });

    // Runs: by task, outcome, time, limit; newest first.
    let runs = s.get_ok("/api/runs?task=quiet");
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    assert_eq!(s.get_ok("/api/runs").as_array().unwrap().len(), 3);
    assert_eq!(s.get_ok("/api/runs?limit=1")[0]["task_name"], "other");
    assert_eq!(s.get_ok("/api/runs?outcome=failed"), json!([]));
    assert_eq!(
        s.get_ok("/api/runs?outcome=succeeded&task=quiet")
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let until =
        (before - chrono::TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        s.get_ok(&format!("/api/runs?since={since}"))
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(s.get_ok(&format!("/api/runs?until={until}")), json!([]));

    // Events: by task, run, level, after, limit; oldest first.
    let of_first = s.get_ok(&format!("/api/events?run={first}"));
    assert!(!of_first.as_array().unwrap().is_empty());
    assert!(
        of_first
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["run_id"] == first.as_str())
    );
    let warnings = s.get_ok("/api/events?task=quiet&level=warning");
    assert!(!warnings.as_array().unwrap().is_empty());
    assert!(
        warnings
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["level"] == "warning" || e["level"] == "error")
    );
    let all = s.get_ok("/api/events?task=quiet");
    let all = all.as_array().unwrap();
    assert!(
        all.len() > warnings.as_array().unwrap().len(),
        "info events too"
    );
    assert!(
        all.windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64())
    );
    let last = all.last().unwrap()["id"].as_i64().unwrap();
    assert_eq!(
        s.get_ok(&format!("/api/events?task=quiet&after={last}")),
        json!([])
    );
    assert_eq!(s.get_ok("/api/events?limit=1").as_array().unwrap().len(), 1);

    // A stream resumed after an id replays what came after it.
    let resumed = s.stream(&format!(
        "/api/events/stream?task=quiet&after={}",
        all[0]["id"]
    ));
    let replayed = next_data(&resumed, "a replayed event", |_| true);
    assert_eq!(replayed["id"], all[1]["id"]);
}

/// Waits for one `change` on the changes stream.
fn next_data_or_change(lines: &std::sync::mpsc::Receiver<String>) {
    next_data(lines, "a change", |v| v.is_u64());
}

#[test]
fn plugins_instances_health_upcoming_preview_openapi_and_metrics() {
    let s = Server::start(&["hello.wasm", "wat-hello.wasm"]);
    // Compiled in the background at start: the copy below must come after
    // hello.wasm serves, to be the one in conflict.
    s.wait_for("both components loaded", "/api/plugins", |p| {
        p.as_array().unwrap().iter().all(|x| x["status"] == "ok")
    });
    // A broken file and a second copy of hello (a conflict).
    std::fs::write(s.plugins.join("broken.wasm"), b"not wasm").unwrap();
    std::fs::copy(
        s.plugins.join("hello.wasm"),
        s.plugins.join("hello-copy.wasm"),
    )
    .unwrap();
    let plugins = s.wait_for("the new files to be seen", "/api/plugins", |p| {
        p.as_array().unwrap().len() == 4
    });
    let by_file = |file: &str| -> Value {
        plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["file"] == file)
            .unwrap_or_else(|| panic!("{file} in {plugins:#}"))
            .clone()
    };
    let hello = by_file("hello.wasm");
    assert_eq!(hello["status"], "ok");
    assert_eq!(hello["identifier"], HELLO);
    assert_eq!(hello["version"], "1.0.0");
    assert_eq!(hello["sha256"].as_str().unwrap().len(), 64);
    // Each names the contract it was built against (wat-hello is 0.1.0).
    assert_eq!(hello["contract"], "0.2.0");
    assert_eq!(by_file("wat-hello.wasm")["contract"], "0.1.0");
    assert!(
        hello["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("cronwerk:task/log@"))
    );
    assert!(
        hello["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("log"))
    );
    let broken = by_file("broken.wasm");
    assert_eq!(broken["contract"], Value::Null);
    assert_eq!(broken["status"], "failed");
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly file")
    );
    let copy = by_file("hello-copy.wasm");
    assert_eq!(copy["status"], "conflict");
    assert!(copy["error"].as_str().unwrap().contains("hello.wasm"));

    let instances = s.get_ok("/api/instances");
    assert_eq!(instances[0]["name"], "api-test");
    assert_eq!(instances[0]["live"], true);
    assert_eq!(instances[0]["this"], true);
    let health = s.get_ok("/api/health");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["instance"], "api-test");
    // Health is public even with a wrong token.
    assert_eq!(
        s.call("GET", "/api/health", Some("wrong"), None).status,
        200
    );

    s.send_ok("POST", "/api/tasks", Some(&task("a", "1h")), 201);
    s.send_ok("POST", "/api/tasks", Some(&task("b", "30m")), 201);
    let upcoming = s.get_ok("/api/upcoming?limit=3");
    let order: Vec<&str> = upcoming
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["task"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["b", "a", "b"]);

    let preview = s
        .call("POST", "/api/preview", None, Some(&task("new", "15m")))
        .body;
    assert_eq!(preview["valid"], true);
    assert_eq!(preview["schedule_text"], "every 15m");
    assert_eq!(preview["next"].as_array().unwrap().len(), 5);
    // An invalid input still previews its valid schedule.
    let preview = s
        .call(
            "POST",
            "/api/preview",
            None,
            Some(&with("timeout", json!("x"))),
        )
        .body;
    assert_eq!(preview["valid"], false);
    assert_eq!(preview["field"], "timeout");
    assert_eq!(preview["next"].as_array().unwrap().len(), 5);

    // The OpenAPI document lists every endpoint, generated from the code.
    let doc = s.get_ok("/api/openapi.json");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/api/audit",
            "/api/backfills/{id}",
            "/api/backfills/{id}/cancel",
            "/api/broadcasts",
            "/api/broadcasts/{id}",
            "/api/changes",
            "/api/events",
            "/api/events/stream",
            "/api/fleet",
            "/api/health",
            "/api/instances",
            "/api/plugins",
            "/api/plugins/reload",
            "/api/preview",
            "/api/runs",
            "/api/runs/{id}",
            "/api/runs/{id}/stop",
            "/api/tasks",
            "/api/tasks/{name}",
            "/api/tasks/{name}/backfills",
            "/api/tasks/{name}/disable",
            "/api/tasks/{name}/enable",
            "/api/tasks/{name}/run",
            "/api/upcoming",
            "/metrics",
        ]
    );
    assert!(doc["paths"]["/api/tasks"]["post"]["security"].is_array());
    assert!(doc["components"]["schemas"]["TaskInput"].is_object());
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
    // Enum fields list the names the API sends, from the model's one mapping.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Run"]["properties"]["state"]["enum"],
        json!([
            "queued",
            "running",
            "succeeded",
            "failed",
            "stopped",
            "cancelled",
            "skipped",
            "abandoned"
        ])
    );
    assert_eq!(
        schemas["Event"]["properties"]["level"]["enum"],
        json!(["trace", "debug", "info", "warning", "error"])
    );
    assert_eq!(
        schemas["Task"]["properties"]["misfire"]["enum"],
        json!(["skip", "once", "all"])
    );

    // Metrics after a run.
    let run = s.send_ok("POST", "/api/tasks/a/run", None, 202)["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.wait_for("the run", &format!("/api/runs/{run}"), |r| {
        r["state"] == "succeeded"
    });
    let metrics = s.get("/metrics");
    let text = metrics.body.as_str().unwrap().to_owned();
    for expected in [
        "cronwerk_runs_total{identifier=\"Acme.HelloScheduledTask\",outcome=\"succeeded\"} 1",
        "cronwerk_run_duration_seconds_count{identifier=\"Acme.HelloScheduledTask\"} 1",
        "# TYPE cronwerk_run_lateness_seconds histogram",
        "cronwerk_run_fuel_consumed_total{identifier=\"Acme.HelloScheduledTask\"}",
        "cronwerk_plugin_load_failures_total 1",
        "cronwerk_runs_running 0",
        "cronwerk_plugins{status=\"conflict\"} 1",
        "cronwerk_plugins{status=\"failed\"} 1",
        "cronwerk_configurations{enabled=\"true\"} 2",
        "cronwerk_configuration_runs{kind=\"runs\",task=\"a\"} 1",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[test]
fn the_dashboard_is_served_from_the_binary() {
    let s = Server::start(&[]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for (path, kind, needle) in [
        ("/", "text/html", "<script type=\"module\" src=\"/app.js\">"),
        ("/app.js", "text/javascript", "text/event-stream"),
        ("/style.css", "text/css", "body"),
        ("/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let mut r = agent.get(s.url(path)).call().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(
            r.headers().contains_key("content-security-policy"),
            "{path}"
        );
        let body = r.body_mut().read_to_string().unwrap();
        assert!(body.contains(needle), "{path} lacks {needle}");
        assert!(
            !body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
}

#[test]
fn listen_none_turns_the_api_off_and_a_taken_address_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let (mut child, _lines, startup, base) =
        server::spawn(&dir.path().join("data"), &plugins, &["--listen", "none"]);
    assert_eq!(base, None, "{startup:?}");
    assert!(
        startup.iter().any(|l| l.contains("--listen none")),
        "{startup:?}"
    );
    assert!(!dir.path().join("data/api-token").exists());
    let _ = child.kill();
    let _ = child.wait();

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = server::cronwerk()
        .arg("--data-dir")
        .arg(dir.path().join("data2"))
        .args(["serve", "--listen", &addr, "--plugins"])
        .arg(&plugins)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("--listen"),
        "{stderr}"
    );

    let out = server::cronwerk()
        .args(["serve", "--listen", "somewhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IP:PORT"));
}

#[test]
fn a_broadcast_made_through_the_api_runs_on_the_instance_with_its_payload() {
    let s = Server::start(&["misbehave.wasm"]);
    // A broadcast's target names misbehave's action: `context` describes the run.
    let made = s.send_ok(
        "POST",
        "/api/broadcasts",
        Some(&json!({
            "identifier": "Cronwerk.Test.Misbehave",
            "target": "context",
            "text": "flush",
            "data_base64": "AQID",
        })),
        201,
    );
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(made["data_bytes"], 3);
    assert!(made["created_by"].as_str().unwrap().starts_with("api on "));
    assert_eq!(made["deliveries"].as_array().unwrap().len(), 1);
    let done = s.wait_for("the delivery", &format!("/api/broadcasts/{id}"), |b| {
        b["deliveries"][0]["state"] == "succeeded"
    });
    let message = done["deliveries"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "name=broadcast {id} id=Cronwerk.Test.Misbehave trigger=broadcast attempt=1"
        )),
        "{message}"
    );
    assert!(message.ends_with("payload=context|flush|3"), "{message}");
    let listed = s.get_ok("/api/broadcasts");
    assert_eq!(listed[0]["id"], id.as_str());

    // Wrong input names the field; nowhere to deliver is a conflict.
    for (body, field) in [
        (json!({ "identifier": "not an id!" }), "identifier"),
        (
            json!({ "identifier": "A.B", "data_base64": "%%%" }),
            "data_base64",
        ),
        (
            json!({ "identifier": "A.B", "text": "x".repeat(70_000) }),
            "text",
        ),
    ] {
        let r = s.call(
            "POST",
            "/api/broadcasts",
            Some(s.token().as_str()),
            Some(&body),
        );
        assert_eq!(r.status, 400, "{body}: {:?}", r.body);
        assert_eq!(r.body["field"], field, "{:?}", r.body);
    }
    let alone = s.call(
        "POST",
        "/api/broadcasts",
        Some(s.token().as_str()),
        Some(&json!({ "identifier": "A.B", "include_this_instance": false })),
    );
    assert_eq!(alone.status, 409, "{:?}", alone.body);
    assert!(alone.body["field"].is_null(), "{:?}", alone.body);
    assert!(
        alone.body["error"]
            .as_str()
            .unwrap()
            .contains("no live instance"),
        "{:?}",
        alone.body
    );
    assert_eq!(s.get("/api/broadcasts/nope").status, 404);
}

#[test]
fn idle_slow_and_streaming_clients_cannot_starve_the_api() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use cronwerk::model::{Level, NewEvent};
    use cronwerk::store::{EventJournal, SqliteStore};

    let s = Server::start(&["hello.wasm"]);
    // A log to catch up on, longer than a page (500) of a stream.
    let bulk: Vec<NewEvent> = (0..1200)
        .map(|i| NewEvent::host(Level::Info, "BULK", format!("bulk {i}")))
        .collect();
    let store = SqliteStore::open(&s.data).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.append_events(&bulk))
        .unwrap();

    let addr = s.base.trim_start_matches("http://").trim_end_matches('/');
    // 200 clients that connect and say nothing, and 50 that start a
    // request and never finish its headers.
    let _idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let mut slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            c
        })
        .collect();
    // Four streams catching up from the start of the log.
    let catching_up: Vec<_> = (0..4)
        .map(|_| s.stream("/api/events/stream?after=0"))
        .collect();

    // The API still answers, at once.
    let asked = Instant::now();
    assert_eq!(s.get("/api/health").status, 200);
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(1), "health took {took:?}");

    // A catch-up stream delivers the whole log in order, page after page.
    let mut seen = Vec::new();
    while seen.len() < bulk.len() {
        let e = next_data(&catching_up[0], "the next bulk event", |e| {
            e["code"] == "BULK"
        });
        seen.push(e["message"].as_str().unwrap().to_owned());
    }
    let expected: Vec<String> = (0..1200).map(|i| format!("bulk {i}")).collect();
    assert_eq!(seen, expected);

    // Live streams are bounded: 64 at once, the next is refused with a 503.
    let _more: Vec<_> = (0..60).map(|_| s.stream("/api/changes")).collect();
    let refused = s.get("/api/changes");
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("64 live streams"),
        "{:?}",
        refused.body
    );

    // A client that does not finish its headers is disconnected.
    let started = Instant::now();
    let one = &mut slow[0];
    one.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut rest = Vec::new();
    let _ = one.read_to_end(&mut rest);
    let held = started.elapsed();
    assert!(
        held < Duration::from_secs(20),
        "a half-sent request held its connection for {held:?}"
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn catch_up_streams_over_a_large_event_log_keep_memory_bounded() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    use cronwerk::model::{Level, NewEvent};
    use cronwerk::store::{EventJournal, SqliteStore};

    let s = Server::start(&[]);
    // A 120 MiB log: 60,000 events of 2 KiB.
    const EVENTS: usize = 60_000;
    let store = SqliteStore::open(&s.data).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for chunk in 0..EVENTS / 5_000 {
        let bulk: Vec<NewEvent> = (0..5_000)
            .map(|i| {
                let n = chunk * 5_000 + i;
                NewEvent::host(Level::Info, "BULK", format!("{n:06} {}", "x".repeat(2040)))
            })
            .collect();
        rt.block_on(store.append_events(&bulk)).unwrap();
    }
    let pid = s.pid();
    let before = rss_kib(pid);

    // Eight clients ask for the whole log and read none of it: each holds
    // at most a page in the server, not the log.
    let addr = s.base.trim_start_matches("http://").trim_end_matches('/');
    let _stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /api/events/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    // One reads it all, in order.
    let reader = s.stream("/api/events/stream?after=0");
    let mut peak = before;
    let mut expected = 0;
    while expected < EVENTS {
        let e = next_data(&reader, "the next bulk event", |e| e["code"] == "BULK");
        let n: usize = e["message"].as_str().unwrap()[..6].parse().unwrap();
        assert_eq!(n, expected);
        expected += 1;
        if expected % 5_000 == 0 {
            peak = peak.max(rss_kib(pid));
            let asked = Instant::now();
            assert_eq!(s.get("/api/health").status, 200);
            assert!(asked.elapsed() < Duration::from_secs(1));
        }
    }
    peak = peak.max(rss_kib(pid));
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "serve's resident memory: {} MiB before, peak {} MiB",
        before / 1024,
        peak / 1024
    );
    // Nine catch-ups of the whole log held at once would be over a GiB.
    assert!(
        grew_mib < 96,
        "serve grew by {grew_mib} MiB while streaming the log"
    );
}

#[test]
fn a_run_is_stopped_through_the_api_and_an_ended_one_is_a_409() {
    let s = Server::start(&["misbehave.wasm"]);
    let mut body = task("long", "1h");
    body["implementation"] = json!("Cronwerk.Test.Misbehave");
    body["properties"] = json!({"action": "sleep", "ms": "600000"});
    s.send_ok("POST", "/api/tasks", Some(&body), 201);
    s.wait_loaded();
    s.send_ok("POST", "/api/tasks/long/run", None, 202);
    let runs = s.wait_for("a running run", "/api/runs?task=long", |r| {
        r.as_array()
            .is_some_and(|a| a.iter().any(|x| x["state"] == "running"))
    });
    let id = runs[0]["id"].as_str().unwrap().to_owned();
    // Changes need the token, as everywhere.
    let anonymous = s.call("POST", &format!("/api/runs/{id}/stop"), None, None);
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    let asked = s.send_ok("POST", &format!("/api/runs/{id}/stop"), None, 202);
    assert_eq!(asked["status"], "stopping");
    assert_eq!(asked["run_id"], id.as_str());
    let run = s.wait_for("the run cancelled", &format!("/api/runs/{id}"), |r| {
        r["state"] == "cancelled"
    });
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .starts_with("stopped by an API client"),
        "{run}"
    );
    let again = s.call(
        "POST",
        &format!("/api/runs/{id}/stop"),
        Some(s.token().as_str()),
        None,
    );
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert!(
        again.body["error"]
            .as_str()
            .unwrap()
            .contains("is not running: it is cancelled"),
        "{:?}",
        again.body
    );
    let doc = s.get_ok("/api/openapi.json");
    assert!(doc["paths"]["/api/runs/{id}/stop"]["post"].is_object());
}

#[test]
fn follow_ups_are_checked_against_the_other_configurations() {
    let s = Server::start(&["hello.wasm"]);
    s.send_ok("POST", "/api/tasks", Some(&task("Alert", "1h")), 201);
    let mut nightly = task("Nightly", "1h");
    nightly["on_failure"] = json!(["Alert"]);
    let created = s.send_ok("POST", "/api/tasks", Some(&nightly), 201);
    assert_eq!(created["on_failure"], json!(["Alert"]));
    assert_eq!(created["on_success"], json!([]));
    // Alert following up to Nightly would close a cycle.
    let mut alert = task("Alert", "1h");
    alert["on_success"] = json!(["Nightly"]);
    let r = s.call(
        "PUT",
        "/api/tasks/Alert",
        Some(s.token().as_str()),
        Some(&alert),
    );
    assert_eq!(
        (r.status, &r.body["field"]),
        (400, &json!("on_success")),
        "{:?}",
        r.body
    );
    let error = r.body["error"].as_str().unwrap();
    assert!(error.contains("Alert → Nightly → Alert"), "{error}");
    // Nightly names Alert: Alert is neither deleted nor renamed.
    let r = s.call("DELETE", "/api/tasks/Alert", Some(s.token().as_str()), None);
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("'Nightly'"),
        "{:?}",
        r.body
    );
    let r = s.call(
        "PUT",
        "/api/tasks/Alert",
        Some(s.token().as_str()),
        Some(&task("Alerts", "1h")),
    );
    assert_eq!(
        (r.status, &r.body["field"]),
        (400, &json!("name")),
        "{:?}",
        r.body
    );
    assert_eq!(s.get("/api/tasks/Alert").status, 200);
    // Once Nightly drops it, it goes.
    s.send_ok(
        "PUT",
        "/api/tasks/Nightly",
        Some(&task("Nightly", "1h")),
        200,
    );
    assert_eq!(
        s.call("DELETE", "/api/tasks/Alert", Some(s.token().as_str()), None)
            .status,
        204
    );
}

#[test]
fn a_backfill_is_asked_for_followed_and_cancelled_through_the_api() {
    let s = Server::start(&["hello.wasm"]);
    let mut body = task("Every second", "1h");
    body["schedule"] = json!({"cron": "* * * * * *"});
    body["enabled"] = json!(false);
    s.send_ok("POST", "/api/tasks", Some(&body), 201);
    let now = chrono::Utc::now();
    let at = |s: i64| {
        (chrono::DurationRound::duration_trunc(now, chrono::TimeDelta::seconds(1)).unwrap()
            - chrono::TimeDelta::seconds(s))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let path = "/api/tasks/Every%20second/backfills";
    let bad = |body: Value, field: &str| {
        let r = s.call("POST", path, Some(s.token().as_str()), Some(&body));
        assert_eq!(
            (r.status, &r.body["field"]),
            (400, &json!(field)),
            "{body}: {:?}",
            r.body
        );
    };
    bad(json!({"from": at(10), "to": at(-60)}), "to");
    bad(json!({"from": "yesterday", "to": at(5)}), "from");
    bad(
        json!({"from": at(10), "to": at(5), "concurrency": 0}),
        "concurrency",
    );
    bad(json!({"from": at(10), "to": at(5), "speed": 2}), "speed");
    assert_eq!(
        s.call(
            "POST",
            "/api/tasks/nope/backfills",
            Some(s.token().as_str()),
            Some(&json!({"from": at(10), "to": at(5)}))
        )
        .status,
        404
    );

    s.wait_loaded();
    let started = s.send_ok(
        "POST",
        path,
        Some(&json!({"from": at(10), "to": at(5), "concurrency": 2})),
        202,
    );
    assert_eq!(
        (started["total"].clone(), started["state"].clone()),
        (json!(5), json!("active"))
    );
    let id = started["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let done = loop {
        let b = s.get_ok(&format!("/api/backfills/{id}"));
        if b["state"] != "active" {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        (&done["state"], &done["succeeded"], &done["done"]),
        (&json!("done"), &json!(5), &json!(5))
    );
    let listed = s.get_ok(path);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // Asked again: nothing runs twice; the runs say they were a backfill's.
    let again = s.send_ok(
        "POST",
        path,
        Some(&json!({"from": at(10), "to": at(5)})),
        202,
    );
    let again_id = again["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let b = s.get_ok(&format!("/api/backfills/{again_id}"));
        if b["state"] == "done" {
            assert_eq!(b["already_ran"], 5, "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let runs = s.get_ok("/api/runs?task=Every%20second");
    assert_eq!(runs.as_array().unwrap().len(), 5);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["trigger"] == "backfill")
    );
    let cancelled = s.send_ok("POST", &format!("/api/backfills/{id}/cancel"), None, 200);
    assert_eq!(cancelled["state"], "done", "a backfill through stays done");
    assert_eq!(
        s.call(
            "POST",
            "/api/backfills/nope/cancel",
            Some(s.token().as_str()),
            None
        )
        .status,
        404
    );
}

#[test]
fn changes_are_audited_with_who_made_them_and_named_tokens_come_and_go() {
    let s = Server::start(&["hello.wasm"]);
    s.wait_loaded();
    // A named token, as one pipeline would have.
    let out = s.cli(&["token", "add", "ci-deploy"]);
    assert!(out.status.success(), "{out:?}");
    let ci = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(ci.len(), 64);
    let again = s.cli(&["token", "add", "ci-deploy"]);
    assert_eq!(again.status.code(), Some(64));
    let listed = String::from_utf8(s.cli(&["token", "list"]).stdout).unwrap();
    assert!(listed.contains("ci-deploy"), "{listed}");

    let created = s.call(
        "POST",
        "/api/tasks",
        Some(&ci),
        Some(&task("Nightly", "1h")),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let mut changed = task("Nightly", "1h");
    changed["retries"] = json!(2);
    let r = s.call("PUT", "/api/tasks/Nightly", Some(&ci), Some(&changed));
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Paused with a note, by the default token.
    let paused = s.send_ok(
        "POST",
        "/api/tasks/Nightly/disable",
        Some(&json!({"note": "waiting for the vendor's fix"})),
        200,
    );
    assert_eq!(paused["pause_note"], "waiting for the vendor's fix");
    assert_eq!(paused["paused_by"], "the API token");
    assert!(paused["paused_at"].is_string());
    // Without a body too.
    s.send_ok("POST", "/api/tasks/Nightly/disable", None, 200);
    let bad = s.call(
        "POST",
        "/api/tasks/Nightly/disable",
        Some(s.token().as_str()),
        Some(&json!({"why": "x"})),
    );
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let enabled = s.send_ok("POST", "/api/tasks/Nightly/enable", None, 200);
    assert!(enabled["pause_note"].is_null(), "{enabled}");

    let trail = s.get_ok("/api/audit?task=Nightly");
    let entries = trail.as_array().unwrap();
    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("enabled", "the API token"),
            ("disabled", "the API token"),
            ("disabled", "the API token"),
            ("changed", "API token 'ci-deploy'"),
            ("created", "API token 'ci-deploy'"),
        ]
    );
    let change = &entries[3]["changes"];
    assert_eq!(
        change,
        &json!([{"field": "retries", "before": 0, "after": 2}]),
        "only what changed, before and after"
    );
    assert_eq!(s.get("/api/audit?kind=nope").status, 400);

    // The token removed: it stops working at once, and that is audited too.
    assert!(s.cli(&["token", "rm", "ci-deploy"]).status.success());
    let r = s.call("PUT", "/api/tasks/Nightly", Some(&ci), Some(&changed));
    assert_eq!(r.status, 401, "{:?}", r.body);
    let tokens = s.get_ok("/api/audit?kind=token");
    let actions: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["removed", "created"]);
    assert!(
        tokens[0]["actor"]
            .as_str()
            .unwrap()
            .ends_with("with the CLI"),
        "{tokens}"
    );
    // The CLI's view of the same trail.
    let out = s.cli(&["audit", "--task", "Nightly"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("retries: 0 → 2"), "{text}");
    assert!(text.contains("API token 'ci-deploy'"), "{text}");
}

#[test]
fn an_implementation_no_instance_has_loaded_gets_a_warning_or_under_strict_a_400() {
    let s = Server::start(&["hello.wasm"]);
    s.wait_loaded();
    let token = s.token();
    let mut typo = task("typo", "10s");
    typo["implementation"] = json!("Acme.HelloScheduledTsk");
    let r = s.call("POST", "/api/tasks?strict=true", Some(&token), Some(&typo));
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.body["field"], "implementation");
    let error = r.body["error"].as_str().unwrap();
    assert!(
        error.ends_with("did you mean 'Acme.HelloScheduledTask'?"),
        "{error}"
    );
    let r = s.call("POST", "/api/tasks", Some(&token), Some(&typo));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let warning = r.body["warnings"][0].as_str().unwrap();
    assert!(
        warning.starts_with(
            "no running instance has loaded a component implementing 'Acme.HelloScheduledTsk'"
        ),
        "{warning}"
    );
    // A configuration of a loaded one has none; nor has a replace that
    // keeps the implementation it had.
    let r = s.call(
        "POST",
        "/api/tasks",
        Some(&token),
        Some(&task("fine", "10s")),
    );
    assert_eq!(r.status, 201);
    assert!(r.body.get("warnings").is_none(), "{:?}", r.body);
    let r = s.call("PUT", "/api/tasks/typo", Some(&token), Some(&typo));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body.get("warnings").is_none(), "{:?}", r.body);
}
