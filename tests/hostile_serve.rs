//! Hostile tasks beside a well-behaved one, in `cronwerk serve` as an
//! operator runs it. Every task here tries to make the host pay for it
//! (host handles, buffered bodies, memory, CPU, fuel, log and result floods,
//! broadcast floods, state, deep recursion, panics) on a schedule, while a
//! hello configuration runs every second. The test reads the serve
//! process's resident memory from /proc the whole time and proves three
//! things: every hostile run ends with a typed outcome naming its limit,
//! the hello configuration misses no slot and starts each one promptly, and
//! the host's resident memory stays under a stated bound.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::serve_env::Env;
use cronwerk::model::{RunRecord, RunState, StopReason};

/// Most resident memory `serve` may reach while all of this goes on. What
/// the hostile tasks ask for adds up to gigabytes: 20,000 header handles of
/// 12 KB (240 MB), 200 bodies written as far as the host lets them (400 MB
/// with wasmtime's defaults), unbounded allocation, 32 MiB results, 1 MiB
/// broadcasts in a loop. Measured: 220 to 270 MiB at peak in a debug
/// build, most of it the runs' own (limited) linear memories, a dozen of
/// which run at once.
const RSS_BOUND_MIB: u64 = 384;

/// Latest a hello run may start after its slot. Measured: about 15 ms in
/// a debug build with guests on their own threads; about 300 ms when
/// guests shared the scheduler's threads (and some hello runs were then
/// recorded so late that the next slot was skipped).
const HELLO_START_BOUND: Duration = Duration::from_millis(200);

/// A hostile configuration: its name, implementation, flags, and the
/// outcome every one of its runs must have.
struct Hostile {
    name: &'static str,
    implementation: &'static str,
    flags: &'static [&'static str],
    expect: Expect,
}

enum Expect {
    /// Stopped for this reason, with a message containing the text.
    Stopped(StopReason, &'static str),
    /// Succeeded, with a message containing the text (the host bounded
    /// what the task tried without stopping it).
    Succeeded(&'static str),
}

const MISBEHAVE: &str = "Cronwerk.Test.Misbehave";

const HOSTILE: &[Hostile] = &[
    Hostile {
        name: "header-hog",
        implementation: "Acme.HostHog",
        flags: &["--memory", "16MiB"],
        expect: Expect::Stopped(StopReason::Resources, "2048 host handles"),
    },
    Hostile {
        name: "body-hog",
        implementation: "Acme.BodyHog",
        flags: &["--memory", "16MiB"],
        expect: Expect::Succeeded(""),
    },
    Hostile {
        name: "allocator",
        implementation: MISBEHAVE,
        flags: &["-p", "action=alloc", "--memory", "64MiB"],
        expect: Expect::Stopped(StopReason::Memory, "memory limit of 64.0 MiB"),
    },
    Hostile {
        name: "spinner",
        implementation: MISBEHAVE,
        flags: &["-p", "action=spin", "--timeout", "1s"],
        expect: Expect::Stopped(StopReason::Time, ""),
    },
    Hostile {
        name: "burner",
        implementation: MISBEHAVE,
        flags: &["-p", "action=spin", "--fuel", "500000000"],
        expect: Expect::Stopped(StopReason::Fuel, ""),
    },
    Hostile {
        name: "logger",
        implementation: MISBEHAVE,
        flags: &["-p", "action=log-flood", "-p", "n=200000"],
        expect: Expect::Succeeded("logged 200000 lines"),
    },
    Hostile {
        name: "big-result",
        implementation: MISBEHAVE,
        flags: &["-p", "action=huge-result", "-p", "bytes=33554432"],
        expect: Expect::Succeeded(""),
    },
    Hostile {
        name: "broadcaster",
        implementation: MISBEHAVE,
        flags: &[
            "-p",
            "action=broadcast-flood",
            "-p",
            "identifier=Cronwerk.Test.Misbehave",
            "-p",
            "n=20",
            "-p",
            "bytes=1048576",
        ],
        expect: Expect::Succeeded("made 3 of 20 broadcasts"),
    },
    Hostile {
        name: "chatterer",
        implementation: MISBEHAVE,
        flags: &[
            "-p",
            "action=broadcast-flood",
            "-p",
            "identifier=Cronwerk.Test.Misbehave",
            "-p",
            "n=100000",
            "-p",
            "bytes=100",
        ],
        expect: Expect::Succeeded("made 10 of 100000 broadcasts"),
    },
    Hostile {
        name: "hoarder",
        implementation: MISBEHAVE,
        flags: &["-p", "action=state-fill"],
        expect: Expect::Succeeded("stopped at k"),
    },
    Hostile {
        name: "recurser",
        implementation: MISBEHAVE,
        flags: &["-p", "action=recurse", "-p", "depth=100000000"],
        expect: Expect::Stopped(StopReason::Stack, ""),
    },
    Hostile {
        name: "panicker",
        implementation: MISBEHAVE,
        flags: &["-p", "action=panic"],
        expect: Expect::Stopped(StopReason::Panic, "boom on purpose"),
    },
];

fn component_from_wat(wat: &str) -> Vec<u8> {
    wat::parse_str(wat).expect("the test component assembles")
}

/// Resident memory of process `pid` (`VmRSS`, or `VmHWM` for the peak), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A run that started and finished; a slot skipped because the previous
/// run was still going (a hostile run can take longer than its interval)
/// did neither.
fn ran(run: &RunRecord) -> bool {
    run.state != RunState::Skipped && run.started_at.is_some() && run.finished_at.is_some()
}

fn check_outcome(hostile: &Hostile, run: &RunRecord) {
    let what = format!(
        "{} run {}: {:?} {:?} {}",
        hostile.name, run.id, run.state, run.reason, run.message
    );
    match hostile.expect {
        Expect::Stopped(reason, text) => {
            assert_eq!(run.state, RunState::Stopped, "{what}");
            assert_eq!(run.reason, Some(reason), "{what}");
            assert!(run.message.contains(text), "{what}");
        }
        Expect::Succeeded(text) => {
            assert_eq!(run.state, RunState::Succeeded, "{what}");
            assert!(run.message.contains(text), "{what}");
        }
    }
}

#[test]
fn hostile_tasks_are_stopped_by_their_limits_while_hello_keeps_time_and_memory_stays_bounded() {
    let env = Env::new(&["hello.wasm", "misbehave.wasm"]);
    let header_hog = include_str!("wat/host_hog.wat")
        .replace("HOG_IN_DESCRIBE", "0")
        .replace("HANDLES", "20000")
        .replace("APPENDS", "1")
        .replace("VALUE_BYTES", "12000");
    std::fs::write(
        env.plugins.join("header_hog.wasm"),
        component_from_wat(&header_hog),
    )
    .unwrap();
    let body_hog = include_str!("wat/body_hog.wat").replace("BODIES", "200");
    std::fs::write(
        env.plugins.join("body_hog.wasm"),
        component_from_wat(&body_hog),
    )
    .unwrap();

    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    for hostile in HOSTILE {
        let mut args = vec![
            "task",
            "add",
            hostile.name,
            "--implementation",
            hostile.implementation,
            "--every",
            "2s",
        ];
        args.extend_from_slice(hostile.flags);
        env.ok(&args);
    }

    let serve = env.serve();
    let pid = serve.child.id();
    let baseline_kib = status_kib(pid, "VmRSS:");

    // Sample the resident set while the runs go on, as well as reading the
    // kernel's peak at the end: a sample shows when, the peak cannot miss.
    let stop = Arc::new(AtomicBool::new(false));
    let highest_sample = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, highest) = (stop.clone(), highest_sample.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    && let Some(kib) = status
                        .lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                {
                    highest.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Two finished runs of every hostile configuration.
    for hostile in HOSTILE {
        env.wait_runs(
            hostile.name,
            &format!("two finished runs of {}", hostile.name),
            |runs| runs.iter().filter(|r| ran(r)).count() >= 2,
        );
    }
    let peak_kib = status_kib(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    eprintln!(
        "serve resident memory: {} MiB at start, {} MiB highest sample, {} MiB peak (bound {RSS_BOUND_MIB} MiB)",
        baseline_kib / 1024,
        highest_sample.load(Ordering::Relaxed) / 1024,
        peak_kib / 1024
    );
    assert!(
        peak_kib / 1024 < RSS_BOUND_MIB,
        "serve reached {} MiB resident, over the bound of {RSS_BOUND_MIB} MiB",
        peak_kib / 1024
    );

    // The hello configuration: every slot from its first to its last run
    // is there, one second apart, succeeded, and started promptly.
    let hello: Vec<RunRecord> = env
        .runs("hello")
        .into_iter()
        .filter(|r| r.finished_at.is_some())
        .collect();
    assert!(hello.len() >= 3, "hello ran {} times", hello.len());
    let mut worst = Duration::ZERO;
    for run in &hello {
        assert_eq!(run.state, RunState::Succeeded, "hello: {run:?}");
        let late = (run.started_at.unwrap() - run.scheduled_for.unwrap())
            .to_std()
            .unwrap_or_default();
        worst = worst.max(late);
    }
    for pair in hello.windows(2) {
        assert_eq!(
            pair[1].scheduled_for.unwrap() - pair[0].scheduled_for.unwrap(),
            chrono::TimeDelta::seconds(1),
            "hello missed a slot between {:?} and {:?}",
            pair[0].scheduled_for,
            pair[1].scheduled_for
        );
    }
    eprintln!(
        "hello: {} runs, latest start {} ms after its slot",
        hello.len(),
        worst.as_millis()
    );
    assert!(
        worst < HELLO_START_BOUND,
        "a hello run started {} ms after its slot",
        worst.as_millis()
    );

    for hostile in HOSTILE {
        for run in env.runs(hostile.name).iter().filter(|r| ran(r)) {
            check_outcome(hostile, run);
        }
    }

    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}
