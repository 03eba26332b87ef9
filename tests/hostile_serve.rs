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
/// broadcasts in a loop. Measured: 220 to 300 MiB at peak in a debug
/// build, most of it the runs' own (limited) linear memories, a dozen of
/// which run at once.
const RSS_BOUND_MIB: u64 = 384;

/// Most file descriptors `serve` may hold while all of this goes on: the
/// file hog asks for 1,000 files a run and the connection hog for 500
/// connections; the caps allow 64 files and 32 connections a run.
const FD_BOUND: u64 = 256;

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
    flags: Vec<String>,
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

/// Where the hostile tasks reach: a directory granted to the file hog, a
/// server on a loopback address granted literally, and one granted by the
/// name `localhost` (which the host must not connect to).
struct Reach {
    dir: String,
    literal: String,
    by_name: String,
}

fn hostile(reach: &Reach) -> Vec<Hostile> {
    let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        Hostile {
            name: "header-hog",
            implementation: "Acme.HostHog",
            flags: flags(&["--memory", "16MiB"]),
            expect: Expect::Stopped(StopReason::Resources, "2048 host handles"),
        },
        Hostile {
            name: "body-hog",
            implementation: "Acme.BodyHog",
            flags: flags(&["--memory", "16MiB"]),
            expect: Expect::Succeeded(""),
        },
        Hostile {
            name: "allocator",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=alloc", "--memory", "64MiB"]),
            expect: Expect::Stopped(StopReason::Memory, "memory limit of 64.0 MiB"),
        },
        Hostile {
            name: "spinner",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=spin", "--timeout", "1s"]),
            expect: Expect::Stopped(StopReason::Time, ""),
        },
        Hostile {
            name: "burner",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=spin", "--fuel", "500000000"]),
            expect: Expect::Stopped(StopReason::Fuel, ""),
        },
        Hostile {
            name: "logger",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=log-flood", "-p", "n=200000"]),
            expect: Expect::Succeeded("logged 200000 lines"),
        },
        Hostile {
            name: "big-result",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=huge-result", "-p", "bytes=33554432"]),
            expect: Expect::Succeeded(""),
        },
        Hostile {
            name: "broadcaster",
            implementation: MISBEHAVE,
            flags: flags(&[
                "-p",
                "action=broadcast-flood",
                "-p",
                "identifier=Cronwerk.Test.Misbehave",
                "-p",
                "n=20",
                "-p",
                "bytes=1048576",
            ]),
            expect: Expect::Succeeded("made 3 of 20 broadcasts"),
        },
        Hostile {
            name: "chatterer",
            implementation: MISBEHAVE,
            flags: flags(&[
                "-p",
                "action=broadcast-flood",
                "-p",
                "identifier=Cronwerk.Test.Misbehave",
                "-p",
                "n=100000",
                "-p",
                "bytes=100",
            ]),
            expect: Expect::Succeeded("made 10 of 100000 broadcasts"),
        },
        Hostile {
            name: "hoarder",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=state-fill"]),
            expect: Expect::Succeeded("stopped at k"),
        },
        Hostile {
            name: "recurser",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=recurse", "-p", "depth=100000000"]),
            expect: Expect::Stopped(StopReason::Stack, ""),
        },
        Hostile {
            name: "panicker",
            implementation: MISBEHAVE,
            flags: flags(&["-p", "action=panic"]),
            expect: Expect::Stopped(StopReason::Panic, "boom on purpose"),
        },
        Hostile {
            name: "file-hog",
            implementation: "Acme.FdHog",
            flags: flags(&["--grant-dir", &reach.dir]),
            expect: Expect::Stopped(StopReason::Resources, "64 files open at once"),
        },
        Hostile {
            name: "connection-hog",
            implementation: "Acme.HttpHog",
            flags: flags(&["--allow-http", &reach.literal, "--timeout", "2s"]),
            expect: Expect::Stopped(StopReason::Time, ""),
        },
        Hostile {
            name: "internal-prober",
            implementation: "Acme.HttpHoX",
            flags: flags(&["--allow-http", &reach.by_name, "--timeout", "2s"]),
            expect: Expect::Stopped(StopReason::Time, ""),
        },
    ]
}

/// Assembles a test component and puts it in the plugins folder as `file`.
fn plant(env: &Env, file: &str, wat: &str) {
    let bytes = wat::parse_str(wat).expect("the test component assembles");
    std::fs::write(env.plugins.join(file), bytes).unwrap();
}

/// File descriptors process `pid` holds open.
fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
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
    plant(&env, "header_hog.wasm", &header_hog);
    let body_hog = include_str!("wat/body_hog.wat").replace("BODIES", "200");
    plant(&env, "body_hog.wasm", &body_hog);
    let file_hog = include_str!("wat/fd_hog.wat")
        .replace("OPENS", "1000")
        .replace("MODE", "0")
        .replace("SPIN", "0");
    plant(&env, "fd_hog.wasm", &file_hog);
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("f"), "a file to open many times").unwrap();

    // Servers that never answer: connections wait in their backlogs. The
    // second one counts the connections it gets, which must be none.
    let literal = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let by_name = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reach = Reach {
        dir: granted.path().display().to_string(),
        literal: literal.local_addr().unwrap().to_string(),
        by_name: format!("localhost:{}", by_name.local_addr().unwrap().port()),
    };
    let probed = Arc::new(AtomicU64::new(0));
    std::thread::spawn({
        let probed = probed.clone();
        move || {
            for _ in by_name.incoming() {
                probed.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    for (file, identifier, authority) in [
        ("http_hog.wasm", "Acme.HttpHog", &reach.literal),
        ("http_probe.wasm", "Acme.HttpHoX", &reach.by_name),
    ] {
        // The identifier is a data segment of fixed length: same length.
        let wat = include_str!("wat/http_hog.wat")
            .replace("\"Acme.HttpHog\"", &format!("\"{identifier}\""))
            .replace("REQUESTS", "500")
            .replace("AUTHORITY_LEN", &authority.len().to_string())
            .replace("AUTHORITY", authority);
        plant(&env, file, &wat);
    }
    let hostile = hostile(&reach);

    env.ok(&[
        "task",
        "add",
        "hello",
        "--implementation",
        "Acme.HelloScheduledTask",
        "--every",
        "1s",
    ]);
    for hostile in &hostile {
        let mut args = vec![
            "task",
            "add",
            hostile.name,
            "--implementation",
            hostile.implementation,
            "--every",
            "2s",
        ];
        args.extend(hostile.flags.iter().map(String::as_str));
        env.ok(&args);
    }

    let serve = env.serve();
    let pid = serve.child.id();
    let baseline_kib = status_kib(pid, "VmRSS:");

    // Sample the resident set while the runs go on, as well as reading the
    // kernel's peak at the end: a sample shows when, the peak cannot miss.
    let stop = Arc::new(AtomicBool::new(false));
    let highest_sample = Arc::new(AtomicU64::new(0));
    let baseline_fds = open_descriptors(pid);
    let most_fds = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, highest, most_fds) = (stop.clone(), highest_sample.clone(), most_fds.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                most_fds.fetch_max(open_descriptors(pid), Ordering::Relaxed);
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
    for hostile in &hostile {
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
    let most_fds = most_fds.load(Ordering::Relaxed);
    eprintln!(
        "serve file descriptors: {baseline_fds} at start, {most_fds} at most (bound {FD_BOUND})"
    );
    assert!(
        most_fds < FD_BOUND,
        "serve held {most_fds} file descriptors"
    );
    assert_eq!(
        probed.load(Ordering::Relaxed),
        0,
        "a task reached a loopback server through a name granted as localhost"
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
        assert_eq!(
            run.state,
            RunState::Succeeded,
            "hello: {run:?}\nall hello runs (slot, started, finished, took):\n{}",
            hello
                .iter()
                .map(|r| format!(
                    "{:?} {:?} {:?} {:?} µs",
                    r.scheduled_for, r.started_at, r.finished_at, r.duration_us
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
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

    for hostile in &hostile {
        for run in env.runs(hostile.name).iter().filter(|r| ran(r)) {
            check_outcome(hostile, run);
        }
    }

    let (code, _) = serve.stop();
    assert_eq!(code, Some(0));
}
