//! The PostgreSQL backend against a real server: the shared conformance
//! suite, and what only a shared server can show: claims that stay
//! exclusive across separate pools (and skip rows another transaction
//! holds rather than wait for them), concurrent opens migrating once, and
//! changes reaching other instances through LISTEN/NOTIFY (also after the
//! listening connection dropped).
//!
//! The server is `CRONWERK_TEST_POSTGRES` (a connection URL; `cargo xtask
//! test` starts a throwaway cluster and sets it). Every test works in
//! databases of its own, dropped when it passes (kept for a look if not).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::{Client, Config, NoTls};

use super::*;
use crate::model::{RunOutcome, RunState, Schedule, TaskConfig, TaskRecord, Trigger};
use crate::store::*;

/// The server to test against, or `None` (the test is skipped) when none is
/// configured and `CRONWERK_REQUIRE_POSTGRES` does not insist.
fn server() -> Option<Config> {
    match std::env::var("CRONWERK_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(
            url.parse()
                .expect("CRONWERK_TEST_POSTGRES is not a PostgreSQL connection URL"),
        ),
        _ => {
            assert_ne!(
                std::env::var("CRONWERK_REQUIRE_POSTGRES").as_deref(),
                Ok("1"),
                "CRONWERK_REQUIRE_POSTGRES=1 but CRONWERK_TEST_POSTGRES is not set: run \
                 `cargo xtask test`, or point CRONWERK_TEST_POSTGRES at a server"
            );
            eprintln!(
                "skipped: CRONWERK_TEST_POSTGRES is not set (`cargo xtask test` starts a server)"
            );
            None
        }
    }
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .expect("connecting to the test server");
    tokio::spawn(connection);
    client
}

/// Fresh databases on the test server.
struct Databases {
    admin: Config,
    created: Mutex<Vec<String>>,
}

impl Databases {
    fn new(admin: Config) -> Self {
        Databases {
            admin,
            created: Mutex::new(Vec::new()),
        }
    }

    /// A new empty database; the configuration to reach it.
    async fn create(&self) -> Config {
        let name = format!("cronwerk_test_{}", uuid::Uuid::now_v7().simple());
        connect(&self.admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating a test database");
        self.created.lock().unwrap().push(name.clone());
        let mut config = self.admin.clone();
        config.dbname(&name);
        config
    }

    /// Drops every database this created (their stores must be gone).
    async fn drop_all(self) {
        let admin = connect(&self.admin).await;
        for name in self.created.into_inner().unwrap() {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .expect("dropping a test database");
        }
    }
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap() + chrono::TimeDelta::seconds(s)
}

fn config(name: &str) -> TaskConfig {
    TaskConfig::new(
        name,
        "Acme.HelloScheduledTask",
        Schedule::every(Duration::from_secs(10), t(0)).unwrap(),
    )
}

fn new_run(task: &TaskRecord, id: String, slot: DateTime<Utc>, instance: &str) -> NewRun {
    NewRun {
        id,
        task_id: task.id,
        task_name: task.config.name.clone(),
        implementation: task.config.implementation.clone(),
        trigger: Trigger::Schedule,
        attempt: 1,
        scheduled_for: Some(slot),
        started_at: slot,
        lease_until: slot + chrono::TimeDelta::seconds(30),
        instance: instance.into(),
        message: String::new(),
        payload: None,
    }
}

fn finish(run: &NewRun, at: DateTime<Utc>) -> RunFinish {
    RunFinish {
        run_id: run.id.clone(),
        task_id: run.task_id,
        finished_at: at,
        outcome: RunOutcome {
            state: RunState::Succeeded,
            reason: None,
            message: "ok".into(),
            duration_us: 1,
            fuel: 1,
            peak_memory_bytes: 1,
            component_sha256: None,
            component_version: None,
            events: Vec::new(),
        },
        task_state: None,
        retry: None,
        inputs: None,
        started_at: None,
        follow_ups: Vec::new(),
    }
}

/// Polls `token` until it differs from `before`; how long that took.
async fn wait_for_change(store: &PostgresStore, before: u64, what: &str) -> Duration {
    let started = Instant::now();
    while store.change_token().await.unwrap() == before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no change notification arrived for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_store_conformance_suite() {
    let Some(admin) = server() else { return };
    let databases = Databases::new(admin);
    // The suite asks for a fresh store synchronously; each is a new database.
    crate::store::conformance::run_all(|| {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let config = databases.create().await;
                Box::new(PostgresStore::connect(config).await.unwrap()) as Box<dyn Store>
            })
        })
    })
    .await;
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_separate_pools_win_each_slot_exactly_once() {
    let Some(admin) = server() else { return };
    let databases = Databases::new(admin);
    let config_db = databases.create().await;
    const INSTANCES: usize = 4;
    const TASKS: usize = 12;
    const ROUNDS: i64 = 4;
    // Opened at once: the migrations run once, under the advisory lock.
    let stores: Vec<PostgresStore> = {
        let opens = (0..INSTANCES).map(|_| PostgresStore::connect(config_db.clone()));
        let mut stores = Vec::new();
        let mut set = tokio::task::JoinSet::new();
        for (i, open) in opens.enumerate() {
            set.spawn(async move { (i, open.await) });
        }
        while let Some(joined) = set.join_next().await {
            let (i, store) = joined.unwrap();
            stores.push((i, store.expect("opening concurrently")));
        }
        stores.sort_by_key(|(i, _)| *i);
        stores.into_iter().map(|(_, s)| s).collect()
    };
    let versions = connect(&config_db)
        .await
        .query(
            "SELECT version FROM cronwerk_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(versions.len() as i64, SCHEMA_VERSION);

    let mut tasks = Vec::new();
    for i in 0..TASKS {
        tasks.push(
            stores[0]
                .create_task(&config(&format!("task-{i:02}")), Some(t(10)))
                .await
                .unwrap(),
        );
    }
    let stores: Vec<Arc<PostgresStore>> = stores.into_iter().map(Arc::new).collect();
    for round in 0..ROUNDS {
        let slot = t(10 + 10 * round);
        let mut set = tokio::task::JoinSet::new();
        for (n, store) in stores.iter().enumerate() {
            // Each instance batches the slots in its own order, so their
            // transactions meet the rows in different orders.
            let mut claims: Vec<SlotClaim> = tasks
                .iter()
                .map(|task| SlotClaim {
                    slot,
                    next: Some(slot + chrono::TimeDelta::seconds(10)),
                    run: new_run(
                        task,
                        uuid::Uuid::now_v7().to_string(),
                        slot,
                        &format!("i{n}"),
                    ),
                    on_overlap: OnOverlap::Skip,
                })
                .collect();
            claims.rotate_left(n * 5 % TASKS);
            if n % 2 == 1 {
                claims.reverse();
            }
            let store = store.clone();
            set.spawn(async move {
                let results = store.claim_slots(&claims).await.unwrap();
                (n, claims, results)
            });
        }
        let mut wins = vec![0; TASKS];
        let mut finishes: Vec<(usize, RunFinish)> = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (n, claims, results) = joined.unwrap();
            for (claim, result) in claims.iter().zip(results) {
                let index = tasks
                    .iter()
                    .position(|t| t.id == claim.run.task_id)
                    .unwrap();
                match result {
                    Claim::Claimed => {
                        wins[index] += 1;
                        finishes.push((n, finish(&claim.run, slot)));
                    }
                    Claim::Lost => {}
                    other => panic!("round {round}: a rival claim ended {other:?}"),
                }
            }
        }
        assert_eq!(wins, vec![1; TASKS], "round {round}: winners per task");
        for (n, f) in finishes {
            assert!(stores[n].finish_run(&f).await.unwrap());
        }
        // A late instance that saw the slot due before it ran: nothing is
        // running any more, but the slot is gone.
        let late: Vec<SlotClaim> = tasks
            .iter()
            .map(|task| SlotClaim {
                slot,
                next: Some(slot + chrono::TimeDelta::seconds(10)),
                run: new_run(task, uuid::Uuid::now_v7().to_string(), slot, "late"),
                on_overlap: OnOverlap::Skip,
            })
            .collect();
        let results = stores[INSTANCES - 1].claim_slots(&late).await.unwrap();
        assert_eq!(
            results,
            vec![Claim::Lost; TASKS],
            "round {round}: a late claim"
        );
    }
    for task in &tasks {
        let runs = stores[1]
            .list_runs(&RunFilter {
                task_id: Some(task.id),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut slots: Vec<_> = runs.iter().map(|r| r.scheduled_for.unwrap()).collect();
        slots.sort();
        let expected: Vec<_> = (0..ROUNDS).map(|r| t(10 + 10 * r)).collect();
        assert_eq!(slots, expected, "{}: one run per slot", task.config.name);
        assert!(runs.iter().all(|r| r.state == RunState::Succeeded));
        let task = stores[2].get_task_by_id(task.id).await.unwrap();
        assert_eq!(task.run_count, ROUNDS as u64);
        assert_eq!(task.next_run_at, Some(t(10 + 10 * ROUNDS)));
    }
    drop(stores);
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_claim_skips_rows_another_transaction_holds_instead_of_waiting_for_them() {
    let Some(admin) = server() else { return };
    let databases = Databases::new(admin);
    let config_db = databases.create().await;
    let store = PostgresStore::connect(config_db.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..3 {
        tasks.push(
            store
                .create_task(&config(&format!("task-{i}")), Some(t(10)))
                .await
                .unwrap(),
        );
    }
    let claims = |tasks: &[TaskRecord]| -> Vec<SlotClaim> {
        tasks
            .iter()
            .map(|task| SlotClaim {
                slot: t(10),
                next: Some(t(20)),
                run: new_run(task, uuid::Uuid::now_v7().to_string(), t(10), "i"),
                on_overlap: OnOverlap::Skip,
            })
            .collect()
    };
    // Another transaction (another instance's claim, say) holds the
    // middle configuration's row and keeps it.
    let mut other = connect(&config_db).await;
    let holder = other.transaction().await.unwrap();
    holder
        .execute(
            "SELECT id FROM tasks WHERE id = $1 FOR UPDATE",
            &[&tasks[1].id],
        )
        .await
        .unwrap();
    let results = tokio::time::timeout(Duration::from_secs(5), store.claim_slots(&claims(&tasks)))
        .await
        .expect("the claim waited for the held row")
        .unwrap();
    assert_eq!(results, vec![Claim::Claimed, Claim::Lost, Claim::Claimed]);
    // Let go without claiming: the slot is still due, and the next claim
    // (the dispatcher looks again shortly after a lost one) takes it.
    holder.rollback().await.unwrap();
    let results = store.claim_slots(&claims(&tasks)).await.unwrap();
    assert_eq!(results, vec![Claim::Lost, Claim::Claimed, Claim::Lost]);
    for task in &tasks {
        let runs = store
            .list_runs(&RunFilter {
                task_id: Some(task.id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(runs.len(), 1, "{}: one run for the slot", task.config.name);
        assert_eq!(runs[0].state, RunState::Running);
    }
    drop(store);
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_run_is_abandoned_by_exactly_one_survivor() {
    let Some(admin) = server() else { return };
    let databases = Databases::new(admin);
    let config_db = databases.create().await;
    let dead = PostgresStore::connect(config_db.clone()).await.unwrap();
    let mut victims = Vec::new();
    for i in 0..6 {
        let task = dead
            .create_task(&config(&format!("long-{i}")), Some(t(10)))
            .await
            .unwrap();
        let run = new_run(&task, format!("victim-{i}"), t(10), "dead");
        assert_eq!(
            dead.claim_slot(task.id, t(10), Some(t(20)), &run)
                .await
                .unwrap(),
            Claim::Claimed
        );
        victims.push(run.id);
    }
    drop(dead);
    let mut survivors = Vec::new();
    for _ in 0..3 {
        survivors.push(Arc::new(
            PostgresStore::connect(config_db.clone()).await.unwrap(),
        ));
    }
    let mut set = tokio::task::JoinSet::new();
    for store in &survivors {
        let store = store.clone();
        set.spawn(async move { store.abandon_expired(t(100)).await.unwrap() });
    }
    let mut abandoned = Vec::new();
    while let Some(joined) = set.join_next().await {
        abandoned.extend(joined.unwrap().into_iter().map(|r| r.id));
    }
    abandoned.sort();
    assert_eq!(abandoned, victims, "each expired run abandoned once");
    let events = survivors[0]
        .list_events(&EventFilter::default())
        .await
        .unwrap();
    assert_eq!(
        events.iter().filter(|e| e.code == "RUN_ABANDONED").count(),
        victims.len()
    );
    for id in &victims {
        assert_eq!(
            survivors[1].get_run(id).await.unwrap().state,
            RunState::Abandoned
        );
    }
    drop(survivors);
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_changes_arrive_by_notification_also_after_a_reconnect() {
    let Some(admin) = server() else { return };
    let databases = Databases::new(admin);
    let config_db = databases.create().await;
    let a = PostgresStore::connect(config_db.clone()).await.unwrap();
    let b = PostgresStore::connect(config_db.clone()).await.unwrap();

    let before = a.change_token().await.unwrap();
    let task = b.create_task(&config("x"), Some(t(10))).await.unwrap();
    let latency = wait_for_change(&a, before, "a configuration added elsewhere").await;
    eprintln!("a configuration change reached the other store in {latency:?}");

    let before = a.change_token().await.unwrap();
    b.queue_manual_run(task.id, "test").await.unwrap();
    wait_for_change(&a, before, "a queued manual run").await;

    // Drop every listening connection: the stores reconnect by themselves,
    // count the gap as a change, and hear later changes again.
    let before = a.change_token().await.unwrap();
    let killed = connect(&config_db)
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'cronwerk-listener' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(killed.len(), 2, "one listener per store");
    wait_for_change(&a, before, "the listener's reconnection").await;
    let before = a.change_token().await.unwrap();
    let mut edited = config("x");
    edited.enabled = false;
    b.update_task("x", &edited, None).await.unwrap();
    wait_for_change(&a, before, "an edit after the reconnection").await;

    drop((a, b));
    databases.drop_all().await;
}

#[tokio::test]
async fn unreachable_servers_and_bad_urls_fail_clearly() {
    let e = PostgresStore::open("postgres://me@/db?nonsense=1")
        .await
        .err()
        .expect("an unknown option is refused");
    assert!(
        format!("{e:#}").contains("not a PostgreSQL connection URL"),
        "{e:#}"
    );
    let e = PostgresStore::open(
        "postgresql:///db?host=/nonexistent-cronwerk-socket-dir&connect_timeout=2",
    )
    .await
    .err()
    .expect("nobody listens there");
    let text = format!("{e:#}");
    assert!(
        text.contains(
            "connecting to PostgreSQL (database 'db' on /nonexistent-cronwerk-socket-dir)"
        ),
        "{text}"
    );
}
