//! Chaos: several `cronwerk serve` processes on one store under steady load
//! (200 configurations every second), one of them killed with SIGKILL
//! midway and restarted under the same name. Afterwards the run history
//! must still tell the whole truth:
//!
//! - no slot of any configuration ran twice (or has two records at all);
//! - every slot in the observed window has exactly one record: it ran, or
//!   it is recorded skipped or abandoned with a reason;
//! - the killed instance's runs were recorded abandoned within a lease
//!   (plus one housekeeping interval) of the kill, by someone else;
//! - the schedule went on: the survivors kept running slots, and a
//!   configuration held by the dead instance ran again right after.
//!
//! One extra configuration (the probe) sleeps far longer than the test, so
//! it is certain which instance holds a run: that is the one killed, at a
//! moment when it also has a second's hello runs in flight (when it wins
//! that second's claims within a few seconds; else with the probe alone).
//! Its runs go through the same checks as everyone's.
//!
//! Waits are for records in the store (read with the library's own store on
//! the same database); the only timed parts are how long the schedule runs
//! before and after the kill. PostgreSQL: three instances, skipped without
//! `CRONWERK_TEST_POSTGRES` like the cluster suite. SQLite: two processes
//! on one file.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::cluster::{Backend, Cluster, ClusterStore};
use common::serve_env::Serve;
use cronwerk::model::{RunRecord, RunState, TaskRecord};
use cronwerk::spec::{ConfigSpec, ScheduleSpec, new_config};
use cronwerk::store::RunFilter;

/// Configurations of `Acme.HelloScheduledTask`, each `every 1s`.
const CONFIGURATIONS: usize = 200;
/// `serve --lease`: short, so the dead instance's runs are freed quickly.
const LEASE: Duration = Duration::from_secs(3);
/// How often a dispatcher looks for expired leases (half a lease).
const HOUSEKEEPING: Duration = Duration::from_millis(1500);
/// What a busy machine may add to a dispatcher pass (2 cores shared by the
/// instances, the database and the test).
const PASS_SLACK: Duration = Duration::from_secs(1);
/// Schedule time before the kill, and after it until the graceful stop.
const BEFORE_KILL: Duration = Duration::from_secs(8);
const AFTER_KILL: Duration = Duration::from_secs(14);
/// How long to wait, at the kill, for the instance to be killed to have
/// hello runs in flight too; then it is killed with the probe's run alone.
const HELLO_IN_FLIGHT_WAIT: Duration = Duration::from_secs(6);
/// How often waits look at the store.
const POLL: Duration = Duration::from_millis(50);
/// Slots this close to the first slot or to the stop are left out of the
/// window (the first ones may straddle the creation of the
/// configurations; the last ones may be in flight when the stop comes).
const MARGIN: Duration = Duration::from_secs(2);
/// How far two processes' views of the database's clock may differ: each
/// corrects its own clock by an offset measured over one round trip, so a
/// run an instance records as finished just after the test's "now" can
/// read a few milliseconds before it.
const CLOCK_AGREEMENT: Duration = Duration::from_millis(250);

fn td(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap()
}

/// Creates a configuration the way `cronwerk task add --every 1s` does
/// (the same checks and first fire time), without a process per
/// configuration.
fn add(
    db: &ClusterStore,
    name: &str,
    implementation: &str,
    properties: &[(&str, &str)],
) -> TaskRecord {
    let (config, next) = new_config(
        name,
        implementation,
        &ScheduleSpec {
            every: Some("1s".into()),
            ..Default::default()
        },
        &ConfigSpec {
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
        true,
        db.now(),
    )
    .unwrap();
    db.block_on(db.store.create_task(&config, next)).unwrap()
}

fn all_runs(db: &ClusterStore) -> Vec<RunRecord> {
    db.block_on(db.store.list_runs(&RunFilter::default()))
        .unwrap()
}

fn task_runs(db: &ClusterStore, task: &TaskRecord) -> Vec<RunRecord> {
    db.block_on(db.store.list_runs(&RunFilter {
        task_id: Some(task.id),
        ..Default::default()
    }))
    .unwrap()
}

/// Polls the store every `every` until `found` returns something.
fn wait_for<T>(
    db: &ClusterStore,
    what: &str,
    every: Duration,
    found: impl Fn(&ClusterStore) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = found(db) {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// Lets the schedule run until `until` on the store's clock.
fn run_until(db: &ClusterStore, until: DateTime<Utc>) {
    let left = until - db.now();
    if let Ok(left) = left.to_std() {
        std::thread::sleep(left);
    }
}

/// How many slots a skip record stands for: a slot missed while nobody ran
/// the schedule is recorded once, "missed N slot(s) from SLOT ...", and
/// covers N slots from it; any other skip covers its own slot.
fn slots_covered(run: &RunRecord) -> i64 {
    if run.state != RunState::Skipped {
        return 1;
    }
    run.message
        .strip_prefix("missed ")
        .and_then(|rest| rest.split_once(" slot(s)"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(1)
}

fn secs(d: TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// What the run and the checks need to know about it.
struct Chaos<'a> {
    backend: &'a str,
    victim: String,
    probe: TaskRecord,
    /// The probe's run on the victim at the moment of the kill.
    probe_run: String,
    hello: Vec<TaskRecord>,
    killed_at: DateTime<Utc>,
    restarted_at: DateTime<Utc>,
    stop_at: DateTime<Utc>,
    window: (DateTime<Utc>, DateTime<Utc>),
}

fn chaos(cluster: Cluster, backend: &str, names: &[&str]) {
    let started = Instant::now();
    common::warm_compile_cache("hello.wasm");
    common::warm_compile_cache("misbehave.wasm");
    let lease = format!("{}s", LEASE.as_secs());
    let db = cluster.store();
    let mut serves: Vec<Serve> = names
        .iter()
        .map(|n| cluster.serve_with_lease(n, &lease))
        .collect();

    // Added while every instance serves: the changes reach them all.
    let probe = add(
        &db,
        "probe",
        "Cronwerk.Test.Misbehave",
        &[("action", "sleep"), ("ms", "50000")],
    );
    let created = Instant::now();
    let hello: Vec<TaskRecord> = (0..CONFIGURATIONS)
        .map(|i| {
            add(
                &db,
                &format!("hello-{i:03}"),
                "Acme.HelloScheduledTask",
                &[],
            )
        })
        .collect();
    eprintln!(
        "{backend}: {} instances serving, {CONFIGURATIONS} configurations created in {:.2} s",
        names.len(),
        created.elapsed().as_secs_f64()
    );
    let first_slot = hello
        .iter()
        .chain([&probe])
        .filter_map(|t| t.next_run_at)
        .max()
        .unwrap();

    // The instance to kill is the one running the probe.
    let probe_run = wait_for(&db, "the probe running", POLL, |db| {
        task_runs(db, &probe)
            .into_iter()
            .find(|r| r.state == RunState::Running)
    });
    let victim = probe_run.instance.clone().unwrap();
    run_until(&db, first_slot + td(BEFORE_KILL));
    // Killed while it also has hello runs in flight, when it does within
    // a few seconds (it claims a second's slots only when it wins them).
    // Polled often: a second's hello runs are in flight for milliseconds.
    let in_flight = wait_for(&db, "a moment to kill", Duration::from_millis(2), |db| {
        let running = db
            .block_on(db.store.list_runs(&RunFilter {
                state: Some(RunState::Running),
                ..Default::default()
            }))
            .unwrap();
        let hello = running
            .iter()
            .filter(|r| r.id != probe_run.id && r.instance.as_deref() == Some(victim.as_str()))
            .count();
        (hello > 0 || db.now() > first_slot + td(BEFORE_KILL + HELLO_IN_FLIGHT_WAIT))
            .then_some(hello)
    });
    let index = serves.iter().position(|s| s.name == victim).unwrap();
    let killed_at = db.now();
    serves.remove(index).kill_9();
    eprintln!(
        "{backend}: killed instance {victim} (kill -9) at {killed_at}, holding the probe's run \
         and {in_flight} hello run(s)"
    );

    // Restarted under the same name a second later, typically before its
    // runs' leases expire: the new process must not take them over.
    std::thread::sleep(Duration::from_secs(1));
    serves.push(cluster.serve_with_lease(&victim, &lease));
    let restarted_at = db.now();
    wait_for(
        &db,
        "the probe's run on the killed instance abandoned",
        POLL,
        |db| {
            db.block_on(db.store.get_run(&probe_run.id))
                .ok()
                .filter(|r| r.state == RunState::Abandoned)
        },
    );
    run_until(&db, killed_at + td(AFTER_KILL));

    // A graceful stop of every instance at once.
    let stop_at = db.now();
    for s in &serves {
        s.signal("-TERM");
    }
    for s in serves {
        let name = s.name.clone();
        let (code, lines) = s.wait();
        assert_eq!(code, Some(0), "instance {name} stopping: {lines:#?}");
    }

    let chaos = Chaos {
        backend,
        victim,
        probe,
        probe_run: probe_run.id,
        hello,
        killed_at,
        restarted_at,
        stop_at,
        window: (first_slot + td(MARGIN), stop_at - td(MARGIN)),
    };
    check(&chaos, &all_runs(&db));
    eprintln!(
        "{backend}: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The checks, on the whole run history.
fn check(c: &Chaos, runs: &[RunRecord]) {
    let backend = c.backend;
    // Every record standing for a slot, by (configuration, slot).
    let mut by_slot: BTreeMap<(i64, DateTime<Utc>), Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        let slot = r
            .scheduled_for
            .unwrap_or_else(|| panic!("a run without a slot: {r:#?}"));
        assert_eq!(
            slot.timestamp_subsec_nanos(),
            0,
            "slots of `every 1s` fall on whole seconds: {r:#?}"
        );
        for k in 0..slots_covered(r) {
            by_slot
                .entry((r.task_id, slot + TimeDelta::seconds(k)))
                .or_default()
                .push(r);
        }
    }

    // No slot ran twice, nor has two records of any kind.
    let doubles: Vec<_> = by_slot
        .iter()
        .filter(|(_, records)| records.len() > 1)
        .collect();
    let ran_twice = doubles
        .iter()
        .filter(|(_, records)| {
            records
                .iter()
                .filter(|r| r.state != RunState::Skipped)
                .count()
                > 1
        })
        .count();
    assert!(
        doubles.is_empty(),
        "{backend}: {} slot(s) with more than one record ({ran_twice} ran twice): {doubles:#?}",
        doubles.len()
    );

    // Every slot in the window: exactly one record, and an acceptable one.
    let abandoned: BTreeMap<&str, &RunRecord> = runs
        .iter()
        .filter(|r| r.state == RunState::Abandoned)
        .map(|r| (r.id.as_str(), r))
        .collect();
    let (from, to) = c.window;
    let mut missing = Vec::new();
    let mut unexpected = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut slots_in_window = 0;
    for task in c.hello.iter().chain([&c.probe]) {
        let mut slot = from;
        while slot <= to {
            slots_in_window += 1;
            match by_slot.get(&(task.id, slot)).map(Vec::as_slice) {
                None | Some([]) => missing.push((task.config.name.clone(), slot)),
                Some([r]) => {
                    let kind = match r.state {
                        RunState::Succeeded => "ran",
                        RunState::Skipped if r.message.starts_with("missed ") => "skipped (missed)",
                        RunState::Skipped if abandoned.keys().any(|id| r.message.contains(id)) => {
                            "skipped (its run on the killed instance was still running)"
                        }
                        RunState::Skipped if r.message.contains("was still running") => {
                            "skipped (the previous run was still running)"
                        }
                        RunState::Skipped if !r.message.is_empty() => "skipped (another reason)",
                        RunState::Abandoned if !r.message.is_empty() => "abandoned",
                        // The probe's run going on at the stop.
                        RunState::Cancelled
                            if r.finished_at
                                .is_some_and(|f| f >= c.stop_at - td(CLOCK_AGREEMENT)) =>
                        {
                            "cancelled by the graceful stop"
                        }
                        _ => {
                            unexpected.push((*r).clone());
                            "unexpected"
                        }
                    };
                    *counts.entry(kind).or_default() += 1;
                }
                Some(_) => unreachable!("doubles were checked above"),
            }
            slot += TimeDelta::seconds(1);
        }
    }

    // Abandoned: only runs of the killed instance, each recorded by
    // someone else after the kill and within a lease (the last renewal
    // was before the kill) plus one housekeeping interval. A run it had
    // claimed ahead before the kill has its planned start up to the
    // look-ahead after it.
    let bound = td(LEASE + HOUSEKEEPING + PASS_SLACK);
    let claimed_by = c.killed_at + td(cronwerk::scheduler::LOOK_AHEAD);
    let wrongly_abandoned: Vec<&&RunRecord> = abandoned
        .values()
        .filter(|r| {
            r.instance.as_deref() != Some(c.victim.as_str())
                || r.started_at.is_none_or(|s| s > claimed_by)
                || r.finished_at
                    .is_none_or(|f| f <= c.killed_at || f - c.killed_at > bound)
        })
        .collect();
    let after_kill = |r: &RunRecord| secs(r.finished_at.unwrap_or(c.killed_at) - c.killed_at);
    let abandon_times = (
        abandoned
            .values()
            .map(|r| after_kill(r))
            .fold(f64::MAX, f64::min),
        abandoned
            .values()
            .map(|r| after_kill(r))
            .fold(0.0, f64::max),
    );

    // Failover: each configuration held by the dead instance ran again at
    // the first slot after its run was abandoned (the slots between were
    // skipped, naming that run).
    let mut failover_problems = Vec::new();
    let mut failover_max = TimeDelta::zero();
    for r in abandoned.values() {
        let freed = r.finished_at.unwrap_or(c.killed_at);
        let after: Vec<&RunRecord> = runs
            .iter()
            .filter(|x| x.task_id == r.task_id && x.scheduled_for > r.scheduled_for)
            .collect();
        let Some(resumed) = after
            .iter()
            .filter(|x| x.state != RunState::Skipped)
            .min_by_key(|x| x.scheduled_for)
        else {
            failover_problems.push(format!("{} never ran again after {}", r.task_name, r.id));
            continue;
        };
        let resumed_at = resumed.started_at.unwrap_or(freed);
        failover_max = failover_max.max(resumed_at - freed);
        // The slot after the one the abandonment freed, or earlier.
        let next_slot = DateTime::<Utc>::from_timestamp(freed.timestamp() + 1, 0).unwrap();
        if resumed.scheduled_for.unwrap() > next_slot + td(PASS_SLACK) {
            failover_problems.push(format!(
                "{} was freed at {freed} but ran again only for slot {:?}",
                r.task_name, resumed.scheduled_for
            ));
        }
        for x in after
            .iter()
            .filter(|x| x.scheduled_for < resumed.scheduled_for)
        {
            if x.state != RunState::Skipped || !x.message.contains(&r.id) {
                failover_problems.push(format!(
                    "{}'s slot {:?} while {} held it: {} '{}'",
                    r.task_name, x.scheduled_for, r.id, x.state, x.message
                ));
            }
        }
    }

    // The schedule went on: every configuration ran slots after the kill
    // had settled, on the survivors or the restarted instance.
    let settled = c.killed_at + bound;
    let idle_after_kill: Vec<&str> = c
        .hello
        .iter()
        .filter(|task| {
            !by_slot
                .range((task.id, settled)..=(task.id, to))
                .any(|(_, records)| records[0].state == RunState::Succeeded)
        })
        .map(|task| task.config.name.as_str())
        .collect();

    let mut instances: BTreeMap<&str, usize> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.state == RunState::Succeeded) {
        *instances
            .entry(r.instance.as_deref().unwrap_or("?"))
            .or_default() += 1;
    }
    let after_restart = runs
        .iter()
        .filter(|r| {
            r.state == RunState::Succeeded
                && r.instance.as_deref() == Some(c.victim.as_str())
                && r.started_at.is_some_and(|s| s > c.restarted_at)
        })
        .count();
    eprintln!(
        "{backend}: window {from} .. {to}: {} configurations, {slots_in_window} slots: \
         {counts:?}; missing {}, duplicates {}, ran twice {ran_twice}",
        c.hello.len() + 1,
        missing.len(),
        doubles.len()
    );
    eprintln!(
        "{backend}: {} records in all; succeeded runs per instance {instances:?} ({after_restart} \
         on {} after its restart); abandoned {} (recorded {:.2}-{:.2} s after the kill, at most \
         {:.1} s allowed); failover: held configurations ran again at most {:.2} s after their \
         run was abandoned",
        runs.len(),
        c.victim,
        abandoned.len(),
        abandon_times.0,
        abandon_times.1,
        secs(bound),
        secs(failover_max),
    );
    assert!(
        missing.is_empty(),
        "{backend}: {} slot(s) in the window have no record: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert!(
        unexpected.is_empty(),
        "{backend}: records that are neither a run nor a skip/abandonment with a reason: \
         {unexpected:#?}"
    );
    assert!(
        wrongly_abandoned.is_empty(),
        "{backend}: abandoned runs that were not the killed instance's, or not recorded within \
         {:.1} s of the kill: {wrongly_abandoned:#?}",
        secs(bound)
    );
    assert!(
        abandoned.contains_key(c.probe_run.as_str()),
        "{backend}: the probe's run on the killed instance is not recorded abandoned"
    );
    assert!(
        failover_problems.is_empty(),
        "{backend}: failover: {failover_problems:#?}"
    );
    assert!(
        idle_after_kill.is_empty(),
        "{backend}: configurations that ran no slot between {settled} and {to}: {idle_after_kill:?}"
    );
}

#[test]
fn chaos_three_instances_on_one_postgres_database_one_killed_and_restarted() {
    if let Some(cluster) = Cluster::new(Cluster::postgres(), &["hello.wasm", "misbehave.wasm"]) {
        chaos(cluster, "postgres", &["a", "b", "c"]);
    }
}

#[test]
fn chaos_two_instances_on_one_sqlite_file_one_killed_and_restarted() {
    let cluster = Cluster::new(Some(Backend::Sqlite), &["hello.wasm", "misbehave.wasm"]).unwrap();
    chaos(cluster, "sqlite", &["a", "b"]);
}
