//! Behaviour every backend must have, written against `&dyn Store` so each
//! backend runs the same suite.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::model::{
    EventSource, InstanceRow, Level, NewEvent, PluginRow, PluginState, RunOutcome, RunRecord,
    RunState, Schedule, TaskConfig, TaskRecord, Trigger,
};

fn t(s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap() + chrono::TimeDelta::seconds(s as i64)
}

fn config(name: &str) -> TaskConfig {
    TaskConfig::new(
        name,
        "Acme.HelloScheduledTask",
        Schedule::every(Duration::from_secs(10), t(0)).unwrap(),
    )
}

fn new_run(task: &TaskRecord, id: &str, slot: Option<DateTime<Utc>>, now: DateTime<Utc>) -> NewRun {
    NewRun {
        id: id.into(),
        task_id: task.id,
        task_name: task.config.name.clone(),
        implementation: task.config.implementation.clone(),
        trigger: if slot.is_some() {
            Trigger::Schedule
        } else {
            Trigger::Manual
        },
        attempt: 1,
        scheduled_for: slot,
        started_at: now,
        lease_until: now + chrono::TimeDelta::seconds(30),
        instance: "i1".into(),
        message: String::new(),
        payload: None,
    }
}

fn finish(task: &TaskRecord, run_id: &str, state: RunState, now: DateTime<Utc>) -> RunFinish {
    RunFinish {
        run_id: run_id.into(),
        task_id: task.id,
        finished_at: now,
        outcome: RunOutcome {
            state,
            reason: None,
            message: format!("{state}"),
            duration_us: 42,
            fuel: 7,
            peak_memory_bytes: 65536,
            component_sha256: Some("abc".into()),
            component_version: Some("1.0.0".into()),
            events: vec![NewEvent {
                at: now,
                level: Level::Warning,
                source: EventSource::Task,
                code: "NOTIFICATION".into(),
                message: "hello".into(),
                task_id: Some(task.id),
                run_id: Some(run_id.into()),
            }],
        },
        task_state: Some(BTreeMap::from([("count".into(), "1".into())])),
        retry: None,
        inputs: None,
        started_at: None,
        follow_ups: Vec::new(),
    }
}

pub async fn configurations_crud(store: &dyn Store) {
    let created = store.create_task(&config("a"), Some(t(10))).await.unwrap();
    assert_eq!(created.next_run_at, Some(t(10)));
    assert!(matches!(
        store.create_task(&config("a"), None).await,
        Err(StoreError::TaskExists(_))
    ));
    let mut renamed = config("b");
    renamed.properties.insert("k".into(), "v".into());
    renamed.enabled = false;
    let updated = store.update_task("a", &renamed, Some(t(20))).await.unwrap();
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.config, renamed);
    assert!(matches!(
        store.get_task("a").await,
        Err(StoreError::TaskNotFound(_))
    ));
    assert_eq!(store.list_tasks().await.unwrap().len(), 1);
    let other = store.create_task(&config("c"), None).await.unwrap();
    let mut found = store
        .get_tasks(&[other.id, created.id, 99_999])
        .await
        .unwrap();
    found.sort_by_key(|t| t.id);
    assert_eq!(
        found
            .iter()
            .map(|t| (t.id, t.config.name.as_str()))
            .collect::<Vec<_>>(),
        [(created.id, "b"), (other.id, "c")]
    );
    assert!(store.get_tasks(&[]).await.unwrap().is_empty());
    store.delete_task("c").await.unwrap();
    store.delete_task("b").await.unwrap();
    assert!(matches!(
        store.delete_task("b").await,
        Err(StoreError::TaskNotFound(_))
    ));
}

pub async fn one_claim_per_slot_and_overlap_skips(store: &dyn Store) {
    let task = store.create_task(&config("c"), Some(t(10))).await.unwrap();
    assert_eq!(store.due_tasks(t(9)).await.unwrap().len(), 0);
    assert_eq!(store.due_tasks(t(10)).await.unwrap().len(), 1);
    assert_eq!(store.earliest_due().await.unwrap(), Some(t(10)));

    let run1 = new_run(&task, "r1", Some(t(10)), t(10));
    assert_eq!(
        store
            .claim_slot(task.id, t(10), Some(t(20)), &run1)
            .await
            .unwrap(),
        Claim::Claimed
    );
    // A second claimant of the same slot loses.
    let rival = new_run(&task, "r1b", Some(t(10)), t(10));
    assert_eq!(
        store
            .claim_slot(task.id, t(10), Some(t(20)), &rival)
            .await
            .unwrap(),
        Claim::Lost
    );
    // The next slot comes while r1 runs: overlap.
    let run2 = new_run(&task, "r2", Some(t(20)), t(20));
    assert_eq!(
        store
            .claim_slot(task.id, t(20), Some(t(30)), &run2)
            .await
            .unwrap(),
        Claim::AlreadyRunning {
            run_id: "r1".into()
        }
    );
    assert!(
        store
            .skip_slot(task.id, t(20), Some(t(30)), &run2)
            .await
            .unwrap()
    );
    assert!(
        !store
            .skip_slot(task.id, t(20), Some(t(30)), &run2)
            .await
            .unwrap()
    );

    let task = store.get_task("c").await.unwrap();
    assert_eq!((task.run_count, task.skipped_count), (1, 1));
    assert_eq!(task.running_run_id.as_deref(), Some("r1"));
    assert_eq!(task.next_run_at, Some(t(30)));
    let runs = store
        .list_runs(&RunFilter {
            task_id: Some(task.id),
            ..Default::default()
        })
        .await
        .unwrap();
    let states: Vec<_> = runs.iter().map(|r| (r.id.as_str(), r.state)).collect();
    assert_eq!(
        states,
        vec![("r2", RunState::Skipped), ("r1", RunState::Running)]
    );
}

pub async fn finishing_records_outcome_events_state_and_retry(store: &dyn Store) {
    let task = store.create_task(&config("f"), Some(t(10))).await.unwrap();
    let run = new_run(&task, "f1", Some(t(10)), t(10));
    store
        .claim_slot(task.id, t(10), Some(t(20)), &run)
        .await
        .unwrap();
    let mut f = finish(&task, "f1", RunState::Failed, t(11));
    f.retry = Some((t(15), 2));
    assert!(store.finish_run(&f).await.unwrap());
    assert!(!store.finish_run(&f).await.unwrap(), "a run finishes once");

    let task = store.get_task("f").await.unwrap();
    assert_eq!(task.last_outcome, Some(RunState::Failed));
    assert_eq!(task.failed_count, 1);
    assert_eq!(task.running_run_id, None);
    assert_eq!((task.retry_at, task.retry_attempt), (Some(t(15)), 2));
    assert_eq!(store.load_state(task.id).await.unwrap()["count"], "1");
    let r = store.get_run("f1").await.unwrap();
    assert_eq!(
        (r.state, r.duration_us, r.fuel),
        (RunState::Failed, Some(42), Some(7))
    );
    assert_eq!(r.component_version.as_deref(), Some("1.0.0"));

    // The retry is due at t(15) even though the next slot is t(20).
    assert_eq!(store.earliest_due().await.unwrap(), Some(t(15)));
    let mut retry = new_run(&task, "f2", None, t(15));
    retry.trigger = Trigger::Retry;
    retry.attempt = 2;
    assert_eq!(
        store.claim_retry(task.id, t(15), &retry).await.unwrap(),
        Claim::Claimed
    );
    assert_eq!(store.get_task("f").await.unwrap().retry_at, None);

    let events = store
        .list_events(&EventFilter {
            run_id: Some("f1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].task_name.as_deref(), Some("f"));
}

pub async fn expired_leases_are_abandoned(store: &dyn Store) {
    let task = store.create_task(&config("l"), Some(t(10))).await.unwrap();
    let run = new_run(&task, "l1", Some(t(10)), t(10));
    store
        .claim_slot(task.id, t(10), Some(t(20)), &run)
        .await
        .unwrap();
    store.renew_leases(&["l1".into()], t(100)).await.unwrap();
    assert!(store.abandon_expired(t(99)).await.unwrap().is_empty());
    let abandoned = store.abandon_expired(t(101)).await.unwrap();
    assert_eq!(abandoned.len(), 1);
    let r = store.get_run("l1").await.unwrap();
    assert_eq!(r.state, RunState::Abandoned);
    assert!(r.message.contains("instance i1"), "{}", r.message);
    let task = store.get_task("l").await.unwrap();
    assert_eq!(task.running_run_id, None);
    assert_eq!(task.last_outcome, Some(RunState::Abandoned));
    // A late finish from the dead instance does not overwrite the record.
    assert!(
        !store
            .finish_run(&finish(&task, "l1", RunState::Succeeded, t(102)))
            .await
            .unwrap()
    );
}

pub async fn manual_runs_queue_and_never_overlap(store: &dyn Store) {
    let mut cfg = config("m");
    cfg.enabled = false;
    let task = store.create_task(&cfg, None).await.unwrap();
    let q1 = store.queue_manual_run(task.id, "test").await.unwrap();
    let q2 = store.queue_manual_run(task.id, "test").await.unwrap();
    assert_eq!(store.queued_runs().await.unwrap().len(), 2);
    assert_eq!(
        store
            .start_queued_run(&q1, "i1", t(1), t(31))
            .await
            .unwrap(),
        Claim::Claimed
    );
    assert_eq!(
        store
            .start_queued_run(&q2, "i1", t(2), t(32))
            .await
            .unwrap(),
        Claim::AlreadyRunning { run_id: q1.clone() }
    );
    assert_eq!(
        store
            .start_queued_run(&q2, "i1", t(2), t(32))
            .await
            .unwrap(),
        Claim::Lost
    );
    assert_eq!(store.get_run(&q2).await.unwrap().state, RunState::Skipped);
    assert!(store.queued_runs().await.unwrap().is_empty());
    let direct = new_run(&task, "m3", None, t(3));
    assert_eq!(
        store.claim_manual(task.id, &direct).await.unwrap(),
        Claim::AlreadyRunning { run_id: q1 }
    );
    assert_eq!(store.get_task("m").await.unwrap().skipped_count, 2);
}

pub async fn events_filter_and_retention(store: &dyn Store) {
    let task = store.create_task(&config("e"), None).await.unwrap();
    let mut events = Vec::new();
    for (i, level) in [Level::Info, Level::Warning, Level::Error, Level::Debug]
        .into_iter()
        .enumerate()
    {
        events.push(NewEvent {
            at: t(i as u32),
            level,
            source: EventSource::Task,
            code: format!("C{i}"),
            message: format!("m{i}"),
            task_id: Some(task.id),
            run_id: None,
        });
    }
    events.push(NewEvent::host(Level::Info, "HOST", "plugin loaded"));
    store.append_events(&events).await.unwrap();
    let warn = store
        .list_events(&EventFilter {
            min_level: Some(Level::Warning),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        warn.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
        vec!["C1", "C2"]
    );
    let of_task = store
        .list_events(&EventFilter {
            task_id: Some(task.id),
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        of_task.iter().map(|e| e.code.as_str()).collect::<Vec<_>>(),
        vec!["C2", "C3"]
    );
    let after = store
        .list_events(&EventFilter {
            after_id: Some(of_task[1].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].code, "HOST");

    // Retention: keep 2 finished runs, drop events before t(2).
    let mut next = t(0);
    for i in 0..4 {
        let id = format!("e{i}");
        let run = new_run(&task, &id, None, next);
        store.claim_manual(task.id, &run).await.unwrap();
        store
            .finish_run(&finish(&task, &id, RunState::Succeeded, next))
            .await
            .unwrap();
        next += chrono::TimeDelta::seconds(1);
    }
    let (runs, _events) = store.prune(2, t(2)).await.unwrap();
    assert_eq!(runs, 2);
    let left = store
        .list_runs(&RunFilter {
            task_id: Some(task.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        left.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        vec!["e3", "e2"]
    );
}

pub async fn plugins_and_instances(store: &dyn Store) {
    let row = PluginRow {
        instance: "i1".into(),
        file: "plugins/hello.wasm".into(),
        sha256: "abc".into(),
        identifier: Some("Acme.HelloScheduledTask".into()),
        version: Some("1.0.0".into()),
        serving_sha256: None,
        loaded_at: t(0),
        status: PluginState::Ok,
        error: None,
    };
    store
        .set_plugins("i1", std::slice::from_ref(&row))
        .await
        .unwrap();
    store
        .set_plugins("i1", std::slice::from_ref(&row))
        .await
        .unwrap();
    assert_eq!(store.list_plugins().await.unwrap(), vec![row.clone()]);
    // An update that failed while the previous version serves on: what
    // failed and what serves keep their own sha256.
    let failed_update = PluginRow {
        sha256: "def".into(),
        serving_sha256: Some("abc".into()),
        status: PluginState::Failed,
        error: Some("not a component".into()),
        ..row.clone()
    };
    store
        .set_plugins("i1", std::slice::from_ref(&failed_update))
        .await
        .unwrap();
    let listed = store.list_plugins().await.unwrap();
    assert_eq!(listed, vec![failed_update]);
    assert_eq!(listed[0].served_sha256(), Some("abc"));
    store
        .set_plugins("i1", std::slice::from_ref(&row))
        .await
        .unwrap();
    let inst = InstanceRow {
        name: "i1".into(),
        process: "p1".into(),
        host: "h".into(),
        pid: 7,
        version: "0.1.0".into(),
        roles: vec!["edit".into()],
        started_at: t(0),
        heartbeat_at: t(5),
    };
    store.claim_instance(&inst).await.unwrap();
    let beat = store
        .heartbeat(&InstanceRow {
            heartbeat_at: t(10),
            ..inst.clone()
        })
        .await
        .unwrap();
    assert_eq!(beat, Heartbeat::Kept);
    let listed = store.list_instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].heartbeat_at, t(10));
    assert_eq!(listed[0].roles, vec!["edit".to_string()]);
    assert_eq!(
        (listed[0].process.as_str(), listed[0].host.as_str()),
        ("p1", "h")
    );

    // Another process takes the name over: the first one's heartbeat says
    // so and writes nothing, and its leaving removes nothing of the new one.
    let successor = InstanceRow {
        process: "p2".into(),
        pid: 8,
        heartbeat_at: t(11),
        ..inst.clone()
    };
    store.claim_instance(&successor).await.unwrap();
    let beat = store
        .heartbeat(&InstanceRow {
            heartbeat_at: t(12),
            ..inst.clone()
        })
        .await
        .unwrap();
    assert_eq!(beat, Heartbeat::Displaced(successor.clone()));
    store.remove_instance("i1", "p1").await.unwrap();
    assert_eq!(store.list_instances().await.unwrap(), vec![successor]);
    assert_eq!(store.list_plugins().await.unwrap().len(), 1);
    store.remove_instance("i1", "p2").await.unwrap();
    assert!(store.list_instances().await.unwrap().is_empty());
    assert!(store.list_plugins().await.unwrap().is_empty());
    // A heartbeat for a name no row holds claims it again.
    let beat = store.heartbeat(&inst).await.unwrap();
    assert_eq!(beat, Heartbeat::Kept);
    assert_eq!(store.list_instances().await.unwrap().len(), 1);
}

fn broadcast(id: &str, at: DateTime<Utc>, instances: &[&str]) -> NewBroadcast {
    NewBroadcast {
        id: id.into(),
        identifier: "Acme.CacheFlush".into(),
        payload: crate::model::BroadcastPayload {
            target: "pages".into(),
            text: "flush /news".into(),
            data: vec![0, 1, 2, 255],
        },
        created_at: at,
        created_by: "cli".into(),
        instances: instances.iter().map(|i| i.to_string()).collect(),
        sender: None,
    }
}

/// A run's broadcast keeps the run's limits and roles for its deliveries;
/// an operator's has none. Queued deliveries are read oldest first, a page
/// at a time.
pub async fn broadcasts_keep_their_sender_and_are_read_in_pages(store: &dyn Store) {
    let sender = crate::model::BroadcastSender {
        limits: crate::model::RunLimits {
            timeout: std::time::Duration::from_secs(5),
            fuel: Some(1_000_000),
            memory_bytes: 4 * 1024 * 1024,
        },
        roles: vec!["edit".into()],
    };
    store
        .create_broadcast(&NewBroadcast {
            sender: Some(sender.clone()),
            ..broadcast("s1", t(10), &["i1"])
        })
        .await
        .unwrap();
    store
        .create_broadcast(&broadcast("s2", t(11), &["i1"]))
        .await
        .unwrap();
    store
        .create_broadcast(&broadcast("s3", t(12), &["i1"]))
        .await
        .unwrap();
    let page = store.pending_deliveries("i1", 2).await.unwrap();
    let ids: Vec<&str> = page.iter().map(|p| p.broadcast_id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2"]);
    assert_eq!(page[0].sender.as_ref(), Some(&sender));
    assert_eq!(page[1].sender, None);
    assert!(store.start_delivery("s1", "i1", "r1", t(13)).await.unwrap());
    let ids: Vec<String> = store
        .pending_deliveries("i1", 2)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.broadcast_id)
        .collect();
    assert_eq!(ids, ["s2", "s3"]);
}

pub async fn broadcasts_deliver_once_per_instance(store: &dyn Store) {
    let before = store.change_token().await.unwrap();
    store
        .create_broadcast(&broadcast("b1", t(10), &["i1", "i2"]))
        .await
        .unwrap();
    assert_ne!(store.change_token().await.unwrap(), before);
    let pending = store.pending_deliveries("i1", 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].identifier, "Acme.CacheFlush");
    assert_eq!(pending[0].payload.data, vec![0, 1, 2, 255]);
    assert_eq!(pending[0].payload.text, "flush /news");
    assert_eq!(pending[0].created_at, t(10));
    assert!(store.pending_deliveries("i3", 10).await.unwrap().is_empty());

    // Started once: a second start of the same delivery loses.
    assert!(store.start_delivery("b1", "i1", "r1", t(11)).await.unwrap());
    assert!(
        !store
            .start_delivery("b1", "i1", "r1b", t(11))
            .await
            .unwrap()
    );
    assert!(store.pending_deliveries("i1", 10).await.unwrap().is_empty());
    let finish = DeliveryFinish {
        broadcast_id: "b1".into(),
        instance: "i1".into(),
        finished_at: t(12),
        outcome: RunOutcome {
            state: RunState::Succeeded,
            reason: None,
            message: "flushed".into(),
            duration_us: 42,
            fuel: 7,
            peak_memory_bytes: 65536,
            component_sha256: Some("abc".into()),
            component_version: Some("1.0.0".into()),
            events: vec![NewEvent {
                run_id: Some("r1".into()),
                ..NewEvent::host(Level::Info, "FLUSHED", "flushed")
            }],
        },
    };
    assert!(store.finish_delivery(&finish).await.unwrap());
    assert!(!store.finish_delivery(&finish).await.unwrap());
    let events = store
        .list_events(&EventFilter {
            run_id: Some("r1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].code, "FLUSHED");

    // i2 died before running it: its delivery is recorded abandoned.
    let expired = store
        .expire_deliveries(&["i2".into()], t(20), "instance i2 stopped")
        .await
        .unwrap();
    assert_eq!(expired, 1);
    assert!(!store.start_delivery("b1", "i2", "r2", t(21)).await.unwrap());

    let b = store.get_broadcast("b1").await.unwrap();
    assert_eq!(b.data_bytes, 4);
    assert_eq!(b.target, "pages");
    assert_eq!(b.created_by, "cli");
    let states: Vec<(&str, RunState, &str)> = b
        .deliveries
        .iter()
        .map(|d| (d.instance.as_str(), d.state, d.message.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("i1", RunState::Succeeded, "flushed"),
            ("i2", RunState::Abandoned, "instance i2 stopped"),
        ]
    );
    let d1 = &b.deliveries[0];
    assert_eq!(d1.run_id.as_deref(), Some("r1"));
    assert_eq!((d1.started_at, d1.finished_at), (Some(t(11)), Some(t(12))));
    assert_eq!((d1.duration_us, d1.fuel), (Some(42), Some(7)));
    assert_eq!(d1.component_version.as_deref(), Some("1.0.0"));
    assert!(matches!(
        store.get_broadcast("nope").await,
        Err(StoreError::BroadcastNotFound(_))
    ));

    // A joining instance gets nothing old unless it asks to catch up.
    store
        .create_broadcast(&broadcast("b2", t(30), &["i1"]))
        .await
        .unwrap();
    assert!(store.pending_deliveries("i9", 10).await.unwrap().is_empty());
    assert_eq!(store.join_broadcasts("i9", t(25)).await.unwrap(), 1);
    assert_eq!(store.join_broadcasts("i9", t(25)).await.unwrap(), 0);
    let ids: Vec<String> = store
        .pending_deliveries("i9", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.broadcast_id)
        .collect();
    assert_eq!(ids, ["b2"]);

    let listed = store.list_broadcasts(10).await.unwrap();
    assert_eq!(
        listed.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["b2", "b1"]
    );
    assert_eq!(listed[0].deliveries.len(), 2);
    assert_eq!(store.list_broadcasts(1).await.unwrap().len(), 1);

    // Retention drops old broadcasts with their deliveries.
    store.prune(1000, t(25)).await.unwrap();
    let left = store.list_broadcasts(10).await.unwrap();
    assert_eq!(
        left.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["b2"]
    );
}

/// What a run was given is recorded with its finish (alone or in a batch),
/// read back as written, and goes with the run under retention.
pub async fn a_runs_inputs_are_kept_with_it(store: &dyn Store) {
    let a = store.create_task(&config("r"), None).await.unwrap();
    let b = store.create_task(&config("q"), None).await.unwrap();
    let claim = |task: &TaskRecord, id: &str, at| {
        let run = new_run(task, id, None, at);
        async move {
            assert_eq!(
                store.claim_manual(run.task_id, &run).await.unwrap(),
                Claim::Claimed
            );
        }
    };
    // One without inputs (recorded before they were kept).
    claim(&a, "r0", t(10)).await;
    store
        .finish_run(&finish(&a, "r0", RunState::Failed, t(10)))
        .await
        .unwrap();
    // Two in one batch, with a NUL (which JSON escapes) and text any store
    // keeps as it is.
    claim(&a, "r1", t(20)).await;
    claim(&b, "r2", t(20)).await;
    let with_inputs = |task: &TaskRecord, id: &str, n: u32| RunFinish {
        inputs: Some(format!("{{\"n\":{n},\"s\":\"\\u0000 é\"}}")),
        ..finish(task, id, RunState::Failed, t(20))
    };
    assert_eq!(
        store
            .finish_runs(&[with_inputs(&a, "r1", 1), with_inputs(&b, "r2", 2)])
            .await
            .unwrap(),
        [true, true]
    );
    assert_eq!(store.run_inputs("r0").await.unwrap(), None);
    assert_eq!(
        store.run_inputs("r2").await.unwrap().as_deref(),
        Some("{\"n\":2,\"s\":\"\\u0000 é\"}")
    );
    assert!(matches!(
        store.run_inputs("nope").await,
        Err(StoreError::RunNotFound(_))
    ));
    // Retention takes them with the run.
    store.prune(1, t(0)).await.unwrap();
    assert!(matches!(
        store.run_inputs("r0").await,
        Err(StoreError::RunNotFound(_))
    ));
    assert!(store.run_inputs("r1").await.unwrap().is_some());
}

pub async fn runs_filter_by_time_and_state(store: &dyn Store) {
    let task = store.create_task(&config("f"), None).await.unwrap();
    for (i, state) in [RunState::Succeeded, RunState::Failed, RunState::Succeeded]
        .into_iter()
        .enumerate()
    {
        let at = t(10 * (i as u32 + 1));
        let id = format!("f{i}");
        let run = new_run(&task, &id, None, at);
        assert_eq!(
            store.claim_manual(task.id, &run).await.unwrap(),
            Claim::Claimed
        );
        assert!(
            store
                .finish_run(&finish(&task, &id, state, at))
                .await
                .unwrap()
        );
    }
    // A person names a run by the start of its id.
    let starting = |prefix: &'static str, limit| async move {
        store.run_ids_starting_with(prefix, limit).await.unwrap()
    };
    assert_eq!(starting("f", 10).await, ["f0", "f1", "f2"]);
    assert_eq!(starting("f", 2).await, ["f0", "f1"]);
    assert_eq!(starting("f1", 10).await, ["f1"]);
    assert!(starting("F1", 10).await.is_empty(), "ids compare exactly");
    assert!(starting("f%", 10).await.is_empty(), "no pattern characters");
    assert!(starting("g", 10).await.is_empty());
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let list = |filter: RunFilter| async move { ids(store.list_runs(&filter).await.unwrap()) };
    assert_eq!(
        list(RunFilter {
            since: Some(t(20)),
            ..Default::default()
        })
        .await,
        ["f2", "f1"]
    );
    assert_eq!(
        list(RunFilter {
            since: Some(t(10)),
            until: Some(t(30)),
            ..Default::default()
        })
        .await,
        ["f1", "f0"]
    );
    assert_eq!(
        list(RunFilter {
            state: Some(RunState::Succeeded),
            until: Some(t(25)),
            ..Default::default()
        })
        .await,
        ["f0"]
    );
}

/// A batch of claims with every outcome at once, then a batch of
/// finishes: the same records and results as one call per item. (The
/// dispatcher sends whole passes this way; backends may take a batch in
/// far fewer statements than items.)
pub async fn batches_claim_and_finish_like_single_calls(store: &dyn Store) {
    let mut tasks = BTreeMap::new();
    for name in ["a", "b", "c", "d", "e", "g"] {
        let mut cfg = config(name);
        cfg.enabled = name != "e";
        let task = store.create_task(&cfg, Some(t(10))).await.unwrap();
        tasks.insert(name, task);
    }
    // b and c are running their t(10) runs when their t(20) slots come.
    for name in ["b", "c"] {
        let task = &tasks[name];
        let run = new_run(task, &format!("{name}1"), Some(t(10)), t(10));
        assert_eq!(
            store
                .claim_slot(task.id, t(10), Some(t(20)), &run)
                .await
                .unwrap(),
            Claim::Claimed
        );
    }
    let claim = |name: &str, slot: u32, on_overlap: OnOverlap| SlotClaim {
        slot: t(slot),
        next: Some(t(slot + 10)),
        run: new_run(&tasks[name], &format!("{name}2"), Some(t(slot)), t(20)),
        on_overlap,
    };
    let claims = [
        claim("g", 10, OnOverlap::Skip),
        claim("c", 20, OnOverlap::Wait),
        claim("a", 10, OnOverlap::Skip),
        claim("e", 10, OnOverlap::Skip), // disabled
        claim("d", 5, OnOverlap::Skip),  // not its slot
        claim("b", 20, OnOverlap::Skip),
    ];
    assert_eq!(
        store.claim_slots(&claims).await.unwrap(),
        vec![
            Claim::Claimed,
            Claim::AlreadyRunning {
                run_id: "c1".into()
            },
            Claim::Claimed,
            Claim::Lost,
            Claim::Lost,
            Claim::AlreadyRunning {
                run_id: "b1".into()
            },
        ]
    );
    let get = |name: &'static str| async move { store.get_task(name).await.unwrap() };
    let (a, b, c, d) = (
        get("a").await,
        get("b").await,
        get("c").await,
        get("d").await,
    );
    assert_eq!(
        (a.running_run_id.as_deref(), a.next_run_at, a.run_count),
        (Some("a2"), Some(t(20)), 1)
    );
    assert_eq!((b.next_run_at, b.skipped_count), (Some(t(30)), 1));
    assert_eq!((c.next_run_at, c.skipped_count), (Some(t(20)), 0));
    assert_eq!((d.next_run_at, d.run_count), (Some(t(10)), 0));
    let b2 = store.get_run("b2").await.unwrap();
    assert_eq!(b2.state, RunState::Skipped);
    assert!(b2.message.contains("b1"), "{}", b2.message);
    assert_eq!(store.get_run("a2").await.unwrap().state, RunState::Running);
    for gone in ["c2", "d2", "e2"] {
        assert!(
            store.get_run(gone).await.is_err(),
            "{gone} was not recorded"
        );
    }

    let mut failed = finish(&tasks["b"], "b1", RunState::Failed, t(21));
    failed.retry = Some((t(25), 2));
    failed.task_state = None;
    let finishes = [
        finish(&tasks["g"], "g2", RunState::Succeeded, t(21)),
        failed,
        finish(&tasks["a"], "a2", RunState::Succeeded, t(21)),
        finish(&tasks["d"], "never-claimed", RunState::Succeeded, t(21)),
    ];
    assert_eq!(
        store.finish_runs(&finishes).await.unwrap(),
        vec![true, true, true, false]
    );
    let (a, b) = (get("a").await, get("b").await);
    assert_eq!(
        (a.running_run_id, a.last_outcome, a.failed_count),
        (None, Some(RunState::Succeeded), 0)
    );
    assert_eq!(
        (b.running_run_id, b.last_outcome, b.failed_count),
        (None, Some(RunState::Failed), 1)
    );
    assert_eq!((b.retry_at, b.retry_attempt), (Some(t(25)), 2));
    assert_eq!(store.load_state(a.id).await.unwrap()["count"], "1");
    assert!(store.load_state(b.id).await.unwrap().is_empty());
    let r = store.get_run("a2").await.unwrap();
    assert_eq!(
        (r.state, r.duration_us, r.finished_at),
        (RunState::Succeeded, Some(42), Some(t(21)))
    );
    assert_eq!(store.get_run("c1").await.unwrap().state, RunState::Running);
    // One event per finished run (the order within a batch is the
    // backend's).
    let mut events: Vec<Option<String>> = store
        .list_events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.run_id)
        .collect();
    events.sort();
    assert_eq!(
        events,
        vec![Some("a2".into()), Some("b1".into()), Some("g2".into())]
    );
}

/// Claims the t(10) slot of a new configuration for each name; the tasks.
async fn running(store: &dyn Store, names: &[&str]) -> Vec<TaskRecord> {
    let mut tasks = Vec::new();
    for name in names {
        let task = store.create_task(&config(name), Some(t(10))).await.unwrap();
        let run = new_run(&task, &format!("{name}1"), Some(t(10)), t(10));
        assert_eq!(
            store
                .claim_slot(task.id, t(10), Some(t(20)), &run)
                .await
                .unwrap(),
            Claim::Claimed
        );
        tasks.push(task);
    }
    tasks
}

/// A task's text with NUL in it (which PostgreSQL refuses in `text`) is
/// stored with U+FFFD in its place, on every path a finish writes, and
/// the rest of its batch is recorded with it.
pub async fn nul_in_task_text_is_stored_replaced(store: &dyn Store) {
    let tasks = running(store, &["n", "m", "o"]).await;
    let mut hostile = finish(&tasks[1], "m1", RunState::Succeeded, t(11));
    hostile.outcome.message = "done\0\u{1b}[2J".into();
    hostile.outcome.events[0].code = "CO\0DE".into();
    hostile.outcome.events[0].message = "a\0b".into();
    hostile.task_state = Some(BTreeMap::from([("k\0ey".into(), "v\0al".into())]));
    let finishes = [
        finish(&tasks[0], "n1", RunState::Succeeded, t(11)),
        hostile,
        finish(&tasks[2], "o1", RunState::Succeeded, t(11)),
    ];
    assert_eq!(
        store.finish_runs(&finishes).await.unwrap(),
        vec![true, true, true]
    );
    let r = store.get_run("m1").await.unwrap();
    assert_eq!(r.state, RunState::Succeeded);
    assert_eq!(
        r.message, "done\u{FFFD}\u{1b}[2J",
        "other control characters stay"
    );
    assert_eq!(
        store.get_task("m").await.unwrap().last_message.as_deref(),
        Some("done\u{FFFD}\u{1b}[2J")
    );
    let events = store
        .list_events(&EventFilter {
            run_id: Some("m1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].code.as_str(), events[0].message.as_str()),
        ("CO\u{FFFD}DE", "a\u{FFFD}b")
    );
    assert_eq!(
        store.load_state(tasks[1].id).await.unwrap(),
        BTreeMap::from([("k\u{FFFD}ey".into(), "v\u{FFFD}al".into())])
    );
    for (run, task) in [("n1", &tasks[0]), ("o1", &tasks[2])] {
        assert_eq!(store.get_run(run).await.unwrap().state, RunState::Succeeded);
        assert_eq!(store.load_state(task.id).await.unwrap()["count"], "1");
    }
    // Events appended outside a finish take the same path.
    let mut event = finish(&tasks[0], "n1", RunState::Succeeded, t(12))
        .outcome
        .events;
    event[0].message = "late\0".into();
    store.append_events(&event).await.unwrap();
    let late = store
        .list_events(&EventFilter {
            run_id: Some("n1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(late.iter().any(|e| e.message == "late\u{FFFD}"), "{late:?}");
}

/// A finish the store cannot write fails alone: the rest of its batch is
/// recorded, and the failed run is left `running` (to be abandoned when its
/// lease expires). Here the failing finish leaves a state whose two keys
/// differ only by NUL against U+FFFD, which are one key once stored.
pub async fn a_finish_that_cannot_be_written_fails_alone(store: &dyn Store) {
    let tasks = running(store, &["p", "q", "r"]).await;
    let clash = Some(BTreeMap::from([
        ("k\0".into(), "1".into()),
        ("k\u{FFFD}".into(), "2".into()),
    ]));
    let mut clashing = finish(&tasks[1], "q1", RunState::Succeeded, t(11));
    clashing.task_state = clash.clone();
    let finishes = [
        finish(&tasks[0], "p1", RunState::Succeeded, t(11)),
        clashing,
        finish(&tasks[2], "r1", RunState::Failed, t(11)),
    ];
    assert_eq!(
        store.finish_runs(&finishes).await.unwrap(),
        vec![true, false, true]
    );
    assert_eq!(
        store.get_run("p1").await.unwrap().state,
        RunState::Succeeded
    );
    assert_eq!(store.get_run("r1").await.unwrap().state, RunState::Failed);
    assert_eq!(store.get_run("q1").await.unwrap().state, RunState::Running);
    let q = store.get_task("q").await.unwrap();
    assert_eq!(q.running_run_id.as_deref(), Some("q1"));
    assert!(store.load_state(q.id).await.unwrap().is_empty());
    let mut events: Vec<Option<String>> = store
        .list_events(&EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.run_id)
        .collect();
    events.sort();
    assert_eq!(events, vec![Some("p1".into()), Some("r1".into())]);
    // A finish that fails on its own is the store's error, as before.
    assert!(store.finish_run(&finishes[1]).await.is_err());

    // When the first finishes tried alone all fail, the store is taken to
    // be failing: the batch's error, nothing recorded.
    let tasks = running(store, &["s", "u", "v", "w"]).await;
    let mut finishes: Vec<RunFinish> = tasks
        .iter()
        .map(|task| {
            let run = format!("{}1", task.config.name);
            let mut f = finish(task, &run, RunState::Succeeded, t(11));
            f.task_state = clash.clone();
            f
        })
        .collect();
    finishes[3].task_state = None;
    assert_eq!(
        super::sql::ledger::FAILING_STORE,
        3,
        "three clash, then one does not"
    );
    assert!(store.finish_runs(&finishes).await.is_err());
    assert_eq!(store.get_run("w1").await.unwrap().state, RunState::Running);
}

/// Every test above, on a fresh store each.
pub async fn run_all(make: impl Fn() -> Box<dyn Store>) {
    configurations_crud(&*make()).await;
    one_claim_per_slot_and_overlap_skips(&*make()).await;
    finishing_records_outcome_events_state_and_retry(&*make()).await;
    expired_leases_are_abandoned(&*make()).await;
    manual_runs_queue_and_never_overlap(&*make()).await;
    events_filter_and_retention(&*make()).await;
    plugins_and_instances(&*make()).await;
    broadcasts_deliver_once_per_instance(&*make()).await;
    broadcasts_keep_their_sender_and_are_read_in_pages(&*make()).await;
    identifier_settings(&*make()).await;
    secret_settings_stay_secret(&*make()).await;
    runs_filter_by_time_and_state(&*make()).await;
    a_runs_inputs_are_kept_with_it(&*make()).await;
    batches_claim_and_finish_like_single_calls(&*make()).await;
    concurrent_skips_of_one_slot_record_it_once(&*make()).await;
    nul_in_task_text_is_stored_replaced(&*make()).await;
    a_finish_that_cannot_be_written_fails_alone(&*make()).await;
    a_finish_records_when_the_run_really_started(&*make()).await;
    stop_requests_reach_the_runs_instance_and_cancel_queued_runs(&*make()).await;
    a_configurations_own_history_limits_keep_failures_apart(&*make()).await;
    overlap_policies_allow_queue_and_replace(&*make()).await;
    follow_ups_are_queued_with_the_finish_and_wait_their_turn(&*make()).await;
    a_backfill_queues_its_slots_as_its_concurrency_allows(&*make()).await;
    the_audit_trail_keeps_entries_newest_first_by_kind_and_subject(&*make()).await;
}

pub async fn the_audit_trail_keeps_entries_newest_first_by_kind_and_subject(store: &dyn Store) {
    use crate::model::audit::{AuditKind, Change, NewAudit};
    let entry = |kind: AuditKind, subject: &str, action: &str, s: u32| NewAudit {
        at: t(s),
        actor: "ana with the CLI".into(),
        kind,
        subject: subject.into(),
        action: action.into(),
        changes: vec![Change {
            field: "retries".into(),
            before: serde_json::json!(0),
            after: serde_json::json!(s),
        }],
    };
    for e in [
        entry(AuditKind::Configuration, "Nightly", "created", 1),
        entry(AuditKind::Setting, "Acme.X url", "set", 2),
        entry(AuditKind::Configuration, "Nightly", "changed", 3),
        entry(AuditKind::Configuration, "Other", "created", 4),
    ] {
        store.append_audit(&e).await.unwrap();
    }
    let all = store.list_audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["created", "changed", "set", "created"]
    );
    let nightly = store
        .list_audit(&AuditFilter {
            kind: Some(AuditKind::Configuration),
            subject: Some("Nightly".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(nightly.len(), 2);
    assert_eq!(
        (nightly[0].action.as_str(), nightly[0].at),
        ("changed", t(3))
    );
    assert_eq!(nightly[0].changes[0].after, serde_json::json!(3));
    assert_eq!(nightly[0].actor, "ana with the CLI");
    let page = store
        .list_audit(&AuditFilter {
            before_id: Some(nightly[0].id),
            limit: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].kind, AuditKind::Setting);
}

/// A backfill queues its window's slots a few at a time (its
/// concurrency), passes over slots that ran already (a failed one runs
/// again), one at a time per configuration, cancels what has not started,
/// and is done once every slot is dealt with.
pub async fn a_backfill_queues_its_slots_as_its_concurrency_allows(store: &dyn Store) {
    use crate::model::backfill::{BackfillState, NewBackfill};
    let task = store.create_task(&config("b"), Some(t(100))).await.unwrap();
    // Slot 20 ran and succeeded; slot 30 ran and failed.
    for (slot, state) in [(20, RunState::Succeeded), (30, RunState::Failed)] {
        let id = format!("s{slot}");
        let run = new_run(&task, &id, Some(t(slot)), t(slot));
        let mut claimed = store.get_task("b").await.unwrap();
        claimed.next_run_at = Some(t(slot));
        store
            .update_task("b", &claimed.config, Some(t(slot)))
            .await
            .unwrap();
        store
            .claim_slot(task.id, t(slot), Some(t(100)), &run)
            .await
            .unwrap();
        store
            .finish_run(&finish(&task, &id, state, t(slot + 1)))
            .await
            .unwrap();
    }
    let backfill = |id: &str| NewBackfill {
        id: id.into(),
        task_id: task.id,
        from: t(10),
        to: t(60),
        first_slot: t(10),
        total: 5,
        concurrency: 2,
        requested_by: "ana".into(),
        created_at: t(70),
    };
    let created = store.create_backfill(&backfill("bf1")).await.unwrap();
    assert_eq!(
        (created.state, created.total, created.task_name.as_str()),
        (BackfillState::Active, 5, "b")
    );
    assert!(matches!(
        store.create_backfill(&backfill("bf2")).await,
        Err(StoreError::BackfillActive(id)) if id == "bf1"
    ));
    // Two at a time: slot 10, then slot 30 (20 ran already).
    assert_eq!(store.top_up_backfills(t(71)).await.unwrap(), 2);
    assert_eq!(store.top_up_backfills(t(71)).await.unwrap(), 0);
    let b = store.get_backfill("bf1").await.unwrap();
    assert_eq!(
        (b.runs.queued, b.already_ran, b.next_slot),
        (2, 1, Some(t(40)))
    );
    let queued = store
        .list_runs(&RunFilter {
            task_id: Some(task.id),
            state: Some(RunState::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    let slots: Vec<_> = queued
        .iter()
        .rev()
        .map(|r| (r.trigger, r.scheduled_for))
        .collect();
    assert_eq!(
        slots,
        vec![
            (Trigger::Backfill, Some(t(10))),
            (Trigger::Backfill, Some(t(30)))
        ]
    );
    // One runs and ends: the next slot is queued.
    let first = queued
        .iter()
        .find(|r| r.scheduled_for == Some(t(10)))
        .unwrap();
    assert_eq!(
        store
            .start_queued_run(&first.id, "i1", t(72), t(102))
            .await
            .unwrap(),
        Claim::Claimed
    );
    store
        .finish_run(&finish(&task, &first.id, RunState::Succeeded, t(73)))
        .await
        .unwrap();
    assert_eq!(store.top_up_backfills(t(74)).await.unwrap(), 1);
    // Cancelled: what has not started is not run.
    let cancelled = store.cancel_backfill("bf1", "bo", t(75)).await.unwrap();
    assert_eq!(cancelled.state, BackfillState::Cancelled);
    assert_eq!(
        (
            cancelled.runs.succeeded,
            cancelled.runs.cancelled,
            cancelled.runs.queued
        ),
        (1, 2, 0)
    );
    assert_eq!(store.top_up_backfills(t(76)).await.unwrap(), 0);
    assert!(matches!(
        store.cancel_backfill("no-such", "bo", t(75)).await,
        Err(StoreError::BackfillNotFound(_))
    ));

    // Asked again over the same window: slots 10 and 20 ran, 30, 40 and 50
    // run (30 failed before; 40 and 50 were cancelled).
    let mut again = backfill("bf3");
    again.concurrency = 10;
    store.create_backfill(&again).await.unwrap();
    assert_eq!(store.top_up_backfills(t(80)).await.unwrap(), 3);
    let b = store.get_backfill("bf3").await.unwrap();
    assert_eq!((b.already_ran, b.runs.queued, b.next_slot), (2, 3, None));
    for run in store.queued_runs().await.unwrap() {
        assert_eq!(
            store
                .start_queued_run(&run.id, "i1", t(81), t(111))
                .await
                .unwrap(),
            Claim::Claimed,
            "{run:?}"
        );
        store
            .finish_run(&finish(&task, &run.id, RunState::Succeeded, t(82)))
            .await
            .unwrap();
    }
    store.top_up_backfills(t(83)).await.unwrap();
    let done = store.get_backfill("bf3").await.unwrap();
    assert_eq!(
        (done.state, done.done(), done.total),
        (BackfillState::Done, 5, 5)
    );
    let listed = store.list_backfills(task.id, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        ["bf3", "bf1"]
    );
}

/// A finish that names follow-ups queues a run of each, in the same
/// transaction, carrying what it is told; a follow-up of a busy
/// configuration waits for room (an alert is not dropped); a deleted one
/// gets none; an abandoned run calls its configuration's `on_failure`.
pub async fn follow_ups_are_queued_with_the_finish_and_wait_their_turn(store: &dyn Store) {
    use crate::model::follow_up::FollowUp;
    let alert = store.create_task(&config("alert"), None).await.unwrap();
    let mut nightly = config("nightly");
    nightly.on_failure = vec!["alert".into()];
    let nightly = store.create_task(&nightly, Some(t(10))).await.unwrap();
    // The alert configuration is busy with a run of its own.
    let busy = new_run(&alert, "alert-busy", None, t(9));
    assert_eq!(
        store.claim_manual(alert.id, &busy).await.unwrap(),
        Claim::Claimed
    );

    let run = new_run(&nightly, "n1", Some(t(10)), t(10));
    store
        .claim_slot(nightly.id, t(10), Some(t(20)), &run)
        .await
        .unwrap();
    let mut failed = finish(&nightly, "n1", RunState::Failed, t(11));
    failed.follow_ups = vec![
        FollowUp {
            configuration: "alert".into(),
            payload: r#"{"run_id":"n1"}"#.into(),
            message: "follow-up of 'nightly' run n1 (failed)".into(),
        },
        FollowUp {
            configuration: "deleted meanwhile".into(),
            payload: "{}".into(),
            message: String::new(),
        },
    ];
    assert!(store.finish_run(&failed).await.unwrap());
    let queued = store
        .list_runs(&RunFilter {
            task_id: Some(alert.id),
            state: Some(RunState::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let follow_up = &queued[0];
    assert_eq!(follow_up.trigger, Trigger::FollowUp);
    assert_eq!(follow_up.payload.as_deref(), Some(r#"{"run_id":"n1"}"#));
    assert_eq!(follow_up.implementation, "Acme.HelloScheduledTask");
    assert!(follow_up.message.contains("follow-up of 'nightly'"));
    // Finished again (a retried write), nothing is queued twice.
    assert!(!store.finish_run(&failed).await.unwrap());
    // Waits while the alert configuration is busy: not offered, not skipped.
    assert!(store.queued_runs().await.unwrap().is_empty());
    assert_eq!(
        store
            .start_queued_run(&follow_up.id, "i1", t(12), t(42))
            .await
            .unwrap(),
        Claim::AlreadyRunning {
            run_id: "alert-busy".into()
        }
    );
    assert_eq!(
        store.get_run(&follow_up.id).await.unwrap().state,
        RunState::Queued
    );
    store
        .finish_run(&finish(&alert, "alert-busy", RunState::Succeeded, t(13)))
        .await
        .unwrap();
    assert_eq!(store.queued_runs().await.unwrap().len(), 1);
    assert_eq!(
        store
            .start_queued_run(&follow_up.id, "i1", t(14), t(44))
            .await
            .unwrap(),
        Claim::Claimed
    );
    let started = store.get_run(&follow_up.id).await.unwrap();
    assert_eq!(
        (started.state, started.trigger),
        (RunState::Running, Trigger::FollowUp)
    );
    store
        .finish_run(&finish(&alert, &follow_up.id, RunState::Succeeded, t(15)))
        .await
        .unwrap();

    // An abandoned run calls `on_failure`, told it was abandoned.
    let run = new_run(&nightly, "n2", Some(t(20)), t(20));
    store
        .claim_slot(nightly.id, t(20), Some(t(30)), &run)
        .await
        .unwrap();
    store.abandon_expired(t(100)).await.unwrap();
    let queued = store
        .list_runs(&RunFilter {
            task_id: Some(alert.id),
            state: Some(RunState::Queued),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    let told: serde_json::Value =
        serde_json::from_str(queued[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!(
        (told["run_id"].as_str(), told["outcome"].as_str()),
        (Some("n2"), Some("abandoned"))
    );
}

/// The overlap policies, claimed in a batch (PostgreSQL's set-based path)
/// and alone: `allow` runs side by side up to its limit and skips beyond
/// it; `queue` keeps one slot waiting, offered once the configuration has
/// room, and skips the next; `replace` also asks the running run to stop.
/// The run going on that the row names is the newest still running.
pub async fn overlap_policies_allow_queue_and_replace(store: &dyn Store) {
    use crate::model::OverlapPolicy;
    let mut tasks = BTreeMap::new();
    for (name, policy) in [
        ("al", OverlapPolicy::Allow),
        ("q", OverlapPolicy::Queue),
        ("rp", OverlapPolicy::Replace),
    ] {
        let mut cfg = config(name);
        cfg.on_overlap = policy;
        cfg.max_concurrent = (policy == OverlapPolicy::Allow).then_some(2);
        let task = store.create_task(&cfg, Some(t(10))).await.unwrap();
        let run = new_run(&task, &format!("{name}1"), Some(t(10)), t(10));
        assert_eq!(
            store
                .claim_slot(task.id, t(10), Some(t(20)), &run)
                .await
                .unwrap(),
            Claim::Claimed
        );
        tasks.insert(name, task);
    }
    let claim = |name: &str, n: u32, on_overlap: OnOverlap| SlotClaim {
        slot: t(n * 10),
        next: Some(t(n * 10 + 10)),
        run: new_run(
            &tasks[name],
            &format!("{name}{n}"),
            Some(t(n * 10)),
            t(n * 10),
        ),
        on_overlap,
    };
    let results = store
        .claim_slots(&[
            claim("al", 2, OnOverlap::Skip),
            claim("q", 2, OnOverlap::Queue),
            claim("rp", 2, OnOverlap::Replace),
        ])
        .await
        .unwrap();
    let busy = |id: &str| Claim::AlreadyRunning { run_id: id.into() };
    assert_eq!(results, vec![Claim::Claimed, busy("q1"), busy("rp1")]);

    // allow, at its limit of 2: the third slot is skipped.
    let al = store.get_task("al").await.unwrap();
    assert_eq!(
        (al.running_count, al.running_run_id.as_deref()),
        (2, Some("al2"))
    );
    assert!(!al.has_room());
    assert_eq!(
        store
            .claim_slots(&[claim("al", 3, OnOverlap::Skip)])
            .await
            .unwrap(),
        vec![busy("al2")]
    );
    let skipped = store.get_run("al3").await.unwrap();
    assert_eq!(skipped.state, RunState::Skipped);
    assert!(
        skipped.message.contains("2 runs were still running"),
        "{}",
        skipped.message
    );
    // The newest ends first: the row names the one still going on.
    store
        .finish_run(&finish(&al, "al2", RunState::Succeeded, t(35)))
        .await
        .unwrap();
    let al = store.get_task("al").await.unwrap();
    assert_eq!(
        (al.running_count, al.running_run_id.as_deref()),
        (1, Some("al1"))
    );
    store
        .finish_run(&finish(&al, "al1", RunState::Succeeded, t(36)))
        .await
        .unwrap();
    let al = store.get_task("al").await.unwrap();
    assert_eq!((al.running_count, al.running_run_id), (0, None));

    // queue: the slot waits, the schedule moves on, the next slot is skipped.
    let q = store.get_task("q").await.unwrap();
    assert_eq!((q.next_run_at, q.running_count), (Some(t(30)), 1));
    let waiting = store.get_run("q2").await.unwrap();
    assert_eq!(
        (waiting.state, waiting.trigger, waiting.scheduled_for),
        (RunState::Queued, Trigger::Schedule, Some(t(20)))
    );
    assert!(
        waiting.message.contains("waits for run q1"),
        "{}",
        waiting.message
    );
    let offered = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // Not offered while q1 runs (it would be tried in vain every pass).
    assert!(!offered(store.queued_runs().await.unwrap()).contains(&"q2".to_owned()));
    assert_eq!(
        store
            .claim_slots(&[claim("q", 3, OnOverlap::Queue)])
            .await
            .unwrap(),
        vec![busy("q1")]
    );
    let third = store.get_run("q3").await.unwrap();
    assert_eq!(third.state, RunState::Skipped);
    assert!(third.message.contains("already waits"), "{}", third.message);
    // Tried while q1 still runs, the waiting slot goes on waiting.
    assert_eq!(
        store
            .start_queued_run("q2", "i1", t(31), t(61))
            .await
            .unwrap(),
        busy("q1")
    );
    assert_eq!(store.get_run("q2").await.unwrap().state, RunState::Queued);
    store
        .finish_run(&finish(&q, "q1", RunState::Succeeded, t(32)))
        .await
        .unwrap();
    assert!(offered(store.queued_runs().await.unwrap()).contains(&"q2".to_owned()));
    assert_eq!(
        store
            .start_queued_run("q2", "i1", t(33), t(63))
            .await
            .unwrap(),
        Claim::Claimed
    );
    let started = store.get_run("q2").await.unwrap();
    assert_eq!(
        (started.state, started.trigger),
        (RunState::Running, Trigger::Schedule)
    );
    let q = store.get_task("q").await.unwrap();
    assert_eq!(
        (q.running_count, q.running_run_id.as_deref()),
        (1, Some("q2"))
    );
    assert_eq!(q.skipped_count, 1);

    // replace: as queue, and the running run is asked to stop.
    let requests = store.stop_requests("i1").await.unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].0, "rp1");
    assert!(
        requests[0].1.contains("overlap policy replace"),
        "{}",
        requests[0].1
    );
    assert_eq!(store.get_run("rp2").await.unwrap().state, RunState::Queued);
    // An abandoned run frees its room too.
    let rp = store.get_task("rp").await.unwrap();
    assert_eq!(rp.running_count, 1);
    store.abandon_expired(t(100)).await.unwrap();
    let rp = store.get_task("rp").await.unwrap();
    assert_eq!((rp.running_count, rp.running_run_id), (0, None));
}

/// Retention keeps `keep_runs` finished runs per configuration; one with
/// limits of its own keeps that many successes and `keep_failed` failures,
/// each counted apart.
pub async fn a_configurations_own_history_limits_keep_failures_apart(store: &dyn Store) {
    let mut own = config("own-limits");
    own.keep_runs = Some(2);
    own.keep_failed = Some(1);
    let own = store.create_task(&own, None).await.unwrap();
    let plain = store
        .create_task(&config("global-limit"), None)
        .await
        .unwrap();
    let outcomes = [
        RunState::Failed,
        RunState::Succeeded,
        RunState::Stopped,
        RunState::Succeeded,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Succeeded,
    ];
    for task in [&own, &plain] {
        for (i, state) in outcomes.iter().enumerate() {
            let id = format!("{}-{i}", task.config.name);
            let run = new_run(task, &id, None, t(i as u32));
            assert_eq!(
                store.claim_manual(task.id, &run).await.unwrap(),
                Claim::Claimed
            );
            store
                .finish_run(&finish(task, &id, *state, t(i as u32)))
                .await
                .unwrap();
        }
    }
    store.prune(3, t(0)).await.unwrap();
    let kept = |task: &TaskRecord| {
        let task_id = task.id;
        async move {
            let mut ids: Vec<String> = store
                .list_runs(&RunFilter {
                    task_id: Some(task_id),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids
        }
    };
    // The two newest successes and the newest failure.
    assert_eq!(
        kept(&own).await,
        vec!["own-limits-4", "own-limits-5", "own-limits-6"]
    );
    // The three newest, whatever their outcome.
    assert_eq!(
        kept(&plain).await,
        vec!["global-limit-4", "global-limit-5", "global-limit-6"]
    );
    // Back to the instance's limit.
    let mut config = store.get_task("own-limits").await.unwrap().config;
    config.keep_runs = None;
    config.keep_failed = None;
    store
        .update_task("own-limits", &config, None)
        .await
        .unwrap();
    store.prune(1, t(0)).await.unwrap();
    assert_eq!(kept(&own).await, vec!["own-limits-6"]);
}

/// A stop asked for a running run is a request its instance reads (once,
/// whoever asks again); a queued run is cancelled at once; an ended run or
/// an unknown one says so; requests of ended runs are forgotten by prune.
pub async fn stop_requests_reach_the_runs_instance_and_cancel_queued_runs(store: &dyn Store) {
    let task = store
        .create_task(&config("stoppable"), Some(t(10)))
        .await
        .unwrap();
    let run = new_run(&task, "running-1", Some(t(10)), t(10));
    store
        .claim_slot(task.id, t(10), Some(t(20)), &run)
        .await
        .unwrap();
    assert_eq!(store.stop_requests("i1").await.unwrap(), vec![]);
    let asked = store.request_stop("running-1", "ana", t(11)).await.unwrap();
    assert_eq!(
        asked,
        StopAsked::Signalled {
            instance: "i1".into()
        }
    );
    // Asked again by someone else: the first request stands.
    store.request_stop("running-1", "bo", t(12)).await.unwrap();
    assert_eq!(
        store.stop_requests("i1").await.unwrap(),
        vec![("running-1".to_owned(), "ana".to_owned())]
    );
    assert_eq!(store.stop_requests("i2").await.unwrap(), vec![]);
    // The run is still running until its instance records it.
    assert_eq!(
        store.get_run("running-1").await.unwrap().state,
        RunState::Running
    );

    let other = store
        .create_task(&config("queued-one"), None)
        .await
        .unwrap();
    let queued = store
        .queue_manual_run(other.id, "cronwerk task run")
        .await
        .unwrap();
    assert_eq!(
        store.request_stop(&queued, "ana", t(13)).await.unwrap(),
        StopAsked::CancelledQueued
    );
    let cancelled = store.get_run(&queued).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    assert!(
        cancelled.message.contains("stopped by ana"),
        "{}",
        cancelled.message
    );
    assert!(store.queued_runs().await.unwrap().is_empty());

    store
        .finish_run(&finish(&task, "running-1", RunState::Cancelled, t(14)))
        .await
        .unwrap();
    assert_eq!(
        store.request_stop("running-1", "ana", t(15)).await.unwrap(),
        StopAsked::NotRunning {
            state: RunState::Cancelled
        }
    );
    assert!(matches!(
        store.request_stop("no-such-run", "ana", t(15)).await,
        Err(StoreError::RunNotFound(_))
    ));
    store.prune(1000, t(0)).await.unwrap();
    assert_eq!(store.stop_requests("i1").await.unwrap(), vec![]);
}

/// A slot claimed ahead starts at its instant: the finish records that
/// start over the claim's, alone and in a batch; without one the claim's
/// stays.
pub async fn a_finish_records_when_the_run_really_started(store: &dyn Store) {
    let started = t(10) + chrono::TimeDelta::milliseconds(1_003);
    for batch in [1usize, 3] {
        let mut finishes = Vec::new();
        for i in 0..batch {
            let name = format!("s{batch}-{i}");
            let task = store
                .create_task(&config(&name), Some(t(10)))
                .await
                .unwrap();
            let run = new_run(&task, &name, Some(t(10)), t(9));
            store
                .claim_slot(task.id, t(10), Some(t(20)), &run)
                .await
                .unwrap();
            let mut f = finish(&task, &name, RunState::Succeeded, t(12));
            f.started_at = (i != 1).then_some(started);
            finishes.push(f);
        }
        assert!(
            store
                .finish_runs(&finishes)
                .await
                .unwrap()
                .iter()
                .all(|d| *d)
        );
        for (i, f) in finishes.iter().enumerate() {
            let run = store.get_run(&f.run_id).await.unwrap();
            let expected = if i == 1 { t(9) } else { started };
            assert_eq!(run.started_at, Some(expected), "batch of {batch}, run {i}");
        }
    }
}

pub async fn identifier_settings(store: &dyn Store) {
    assert!(store.list_settings().await.unwrap().is_empty());
    let before = store.change_token().await.unwrap();
    store
        .set_setting(
            "Acme.CacheWarmup",
            "user-agent",
            Some(&Setting::plain("probe/1")),
        )
        .await
        .unwrap();
    assert_ne!(store.change_token().await.unwrap(), before);
    store
        .set_setting(
            "Acme.CacheWarmup",
            "user-agent",
            Some(&Setting::plain("probe/2")),
        )
        .await
        .unwrap();
    store
        .set_setting("Acme.ReportDigest", "team", Some(&Setting::plain("ops")))
        .await
        .unwrap();
    store
        .set_setting("Acme.ReportDigest", "gone", Some(&Setting::plain("x")))
        .await
        .unwrap();
    store
        .set_setting("Acme.ReportDigest", "gone", None)
        .await
        .unwrap();
    // Removing what is not there is fine.
    store
        .set_setting("Acme.Nothing", "nope", None)
        .await
        .unwrap();
    let settings = store.list_settings().await.unwrap();
    assert_eq!(settings.len(), 2);
    assert_eq!(
        settings["Acme.CacheWarmup"]["user-agent"],
        Setting::plain("probe/2")
    );
    assert_eq!(
        settings["Acme.ReportDigest"].iter().collect::<Vec<_>>(),
        [(&"team".to_owned(), &Setting::plain("ops"))]
    );
}

/// A secret setting is stored and read back as secret; a plain value does
/// not replace it (the operator removes it first), a secret value does,
/// and a plain setting becomes secret when set as one.
pub async fn secret_settings_stay_secret(store: &dyn Store) {
    let id = "Acme.CacheWarmup";
    let before = store.change_token().await.unwrap();
    store
        .set_setting(id, "api-key", Some(&Setting::secret("s3cret-1")))
        .await
        .unwrap();
    assert_ne!(store.change_token().await.unwrap(), before);
    assert_eq!(
        store.list_settings().await.unwrap()[id]["api-key"],
        Setting::secret("s3cret-1")
    );

    let refused = store
        .set_setting(id, "api-key", Some(&Setting::plain("typed-in-the-open")))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::SecretSetting { identifier, key })
            if identifier == id && key == "api-key"),
        "{refused:?}"
    );
    assert_eq!(
        store.list_settings().await.unwrap()[id]["api-key"],
        Setting::secret("s3cret-1")
    );

    store
        .set_setting(id, "api-key", Some(&Setting::secret("s3cret-2")))
        .await
        .unwrap();
    store
        .set_setting(id, "user-agent", Some(&Setting::plain("probe/1")))
        .await
        .unwrap();
    store
        .set_setting(id, "user-agent", Some(&Setting::secret("probe/2")))
        .await
        .unwrap();
    let settings = store.list_settings().await.unwrap();
    assert_eq!(settings[id]["api-key"], Setting::secret("s3cret-2"));
    assert_eq!(settings[id]["user-agent"], Setting::secret("probe/2"));

    // Removed, the key takes a plain value again.
    store.set_setting(id, "api-key", None).await.unwrap();
    store
        .set_setting(id, "api-key", Some(&Setting::plain("public")))
        .await
        .unwrap();
    assert_eq!(
        store.list_settings().await.unwrap()[id]["api-key"],
        Setting::plain("public")
    );
    // Debug output never carries a secret's value.
    let shown = format!("{:?}", store.list_settings().await.unwrap());
    assert!(!shown.contains("probe/2"), "{shown}");
    assert!(shown.contains("public"), "{shown}");
}

/// Several claimants find the same slot overlapping a run and skip it at
/// once: exactly one moves the schedule and records the skip, the others
/// lose, and none fails. On a backend where transactions overlap, a skip
/// recorded without checking that its own conditional update moved the
/// schedule would write a second record for the slot (and trip the
/// one-record-per-slot index).
pub async fn concurrent_skips_of_one_slot_record_it_once(store: &dyn Store) {
    let task = store.create_task(&config("o"), Some(t(10))).await.unwrap();
    let run1 = new_run(&task, "r1", Some(t(10)), t(10));
    assert_eq!(
        store
            .claim_slot(task.id, t(10), Some(t(20)), &run1)
            .await
            .unwrap(),
        Claim::Claimed
    );
    // Connections for every claimant first (a pooled backend opens them
    // on demand), so the claims' transactions really overlap.
    futures_util::future::join_all((0..8).map(|_| store.list_tasks())).await;
    let claims: Vec<SlotClaim> = (0..8)
        .map(|i| SlotClaim {
            slot: t(20),
            next: Some(t(30)),
            run: new_run(&task, &format!("s{i}"), Some(t(20)), t(20)),
            on_overlap: OnOverlap::Skip,
        })
        .collect();
    let results: Vec<Claim> = futures_util::future::join_all(
        claims
            .iter()
            .map(|c| store.claim_slots(std::slice::from_ref(c))),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap().remove(0))
    .collect();
    let overlapped = Claim::AlreadyRunning {
        run_id: "r1".into(),
    };
    assert_eq!(results.iter().filter(|c| **c == overlapped).count(), 1);
    assert_eq!(results.iter().filter(|c| **c == Claim::Lost).count(), 7);
    let task = store.get_task("o").await.unwrap();
    assert_eq!((task.skipped_count, task.next_run_at), (1, Some(t(30))));
    let skipped = store
        .list_runs(&RunFilter {
            task_id: Some(task.id),
            state: Some(RunState::Skipped),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        skipped[0].message,
        "skipped: the previous run r1 was still running"
    );
}
