//! `Cronwerk.Test.Misbehave`: a task that does whatever its `action`
//! property asks — behave, fail, spin, allocate, recurse, panic, flood the
//! log, sleep, or reach for files, environment and network it was not
//! granted. The host's tests use it to prove every limit is obeyed when
//! respected and enforced when crossed.
//!
//! Parameters come from properties: `n` (a count), `bytes`, `depth`, `ms`,
//! `path`, `addr`, `key`, `text`, `identifier`, `target`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cronwerk_guest::{
    Context, Error, ScheduledTask, TaskInfo, Trigger, bail, config, farm, instance, state,
};

struct Misbehave;

impl ScheduledTask for Misbehave {
    fn info() -> TaskInfo {
        TaskInfo::new("Cronwerk.Test.Misbehave", "Misbehaving test task")
            .description(
                "Misbehaves as its 'action' property (or a broadcast's target) asks; for testing the sandbox",
            )
            .version(env!("CARGO_PKG_VERSION"))
    }

    fn execute(ctx: &Context) -> Result<String, Error> {
        // A broadcast has no configuration: its target names the action.
        let action = match (ctx.property("action"), ctx.payload()) {
            (Some(action), _) => action,
            (None, Some(payload)) => payload.target.as_str(),
            (None, None) => ctx.require_property("action")?,
        };
        match action {
            "ok" => Ok("ok".into()),
            "fail" => bail!("{}", ctx.property_or("text", "failed on purpose")),
            "spin" => spin_forever(),
            "count" => count(ctx.parse_property("n")?.unwrap_or(1_000)),
            "alloc" => alloc(ctx.parse_property("bytes")?),
            "recurse" => recurse(ctx.parse_property("depth")?),
            "panic" => panic!("{}", ctx.property_or("text", "boom on purpose")),
            "huge-result" => Ok("x".repeat(ctx.parse_property("bytes")?.unwrap_or(1 << 20))),
            "log-flood" => log_flood(ctx.parse_property("n")?.unwrap_or(5_000)),
            "print" => print(ctx.parse_property("n")?.unwrap_or(3)),
            "sleep" => sleep_polling(ctx, ctx.parse_property("ms")?.unwrap_or(60_000)),
            "sleep-ignoring-cancel" => sleep_ignoring(ctx.parse_property("ms")?.unwrap_or(60_000)),
            "block" => {
                // One long host call: the guest is not running wasm code
                // while it waits, so only the host's outer guard can stop it.
                std::thread::sleep(Duration::from_millis(
                    ctx.parse_property("ms")?.unwrap_or(60_000),
                ));
                Ok("woke up".into())
            }
            "read-file" => read_file(ctx.require_property("path")?),
            "write-file" => {
                write_file(ctx.require_property("path")?, ctx.property_or("text", "hi"))
            }
            "list-dir" => list_dir(ctx.require_property("path")?),
            "env" => env(),
            "socket" => socket(ctx.require_property("addr")?),
            "state" => state_counter(),
            "state-fill" => state_fill(),
            "config" => Ok(format!("{:?}", config::get(ctx.property_or("key", "key")))),
            "broadcast" => farm::broadcast(
                "Acme.HelloScheduledTask",
                "all",
                "from misbehave",
                b"\x01\x02",
            )
            .map(|id| format!("broadcast {id}")),
            "broadcast-flood" => broadcast_flood(
                ctx.property_or("identifier", "Cronwerk.Test.Misbehave"),
                ctx.parse_property("n")?.unwrap_or(1_000),
                ctx.parse_property("bytes")?.unwrap_or(1 << 20),
            ),
            // Broadcasts this component with an action for every instance
            // (by default: allocate until stopped).
            "broadcast-self" => farm::broadcast(
                "Cronwerk.Test.Misbehave",
                ctx.property_or("target", "alloc"),
                "",
                b"",
            )
            .map(|id| format!("broadcast {id}")),
            "instance" => Ok(format!("{} {:?}", instance::name(), instance::roles())),
            "context" => Ok(describe_context(ctx)),
            "deadline" => match ctx.time_left() {
                Some(left) => Ok(format!("deadline in {} ms", left.as_millis())),
                None => Ok("no deadline".into()),
            },
            other => bail!("unknown action '{other}'"),
        }
    }
}

cronwerk_guest::export_task!(Misbehave);

fn spin_forever() -> Result<String, Error> {
    let mut x: u64 = 0;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

fn count(n: u64) -> Result<String, Error> {
    let mut sum: u64 = 0;
    for i in 0..n {
        sum = black_box(sum.wrapping_add(i));
    }
    Ok(format!("counted to {n}: {sum}"))
}

/// Tries `n` broadcasts of `bytes` of data each (as action `ok`), going on
/// past refusals; tells how many were made and the last refusal.
fn broadcast_flood(identifier: &str, n: u64, bytes: usize) -> Result<String, Error> {
    let data = vec![0x5a; bytes];
    let (mut made, mut refused) = (0u64, String::new());
    for _ in 0..n {
        match farm::broadcast(identifier, "ok", "", &data) {
            Ok(_) => made += 1,
            Err(e) => refused = e.to_string(),
        }
    }
    Ok(format!(
        "made {made} of {n} broadcasts; last refusal: {refused}"
    ))
}

/// With `bytes`: allocates and touches that much, then succeeds. Without:
/// keeps allocating 1 MiB blocks until something stops it.
fn alloc(bytes: Option<usize>) -> Result<String, Error> {
    match bytes {
        Some(n) => {
            let v = vec![1u8; n];
            Ok(format!("allocated {} bytes", black_box(&v).len()))
        }
        None => {
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            loop {
                blocks.push(vec![1u8; 1 << 20]);
                black_box(&blocks);
            }
        }
    }
}

/// Recursion whose frames live on the wasm (native) stack, which the host
/// bounds; nothing here takes an address, so Rust's shadow stack in linear
/// memory stays untouched.
fn recurse(depth: Option<u64>) -> Result<String, Error> {
    #[inline(never)]
    fn down(n: u64, limit: u64) -> u64 {
        if n >= limit {
            return n;
        }
        black_box(down(black_box(n + 1), limit))
    }
    let reached = down(0, depth.unwrap_or(u64::MAX));
    Ok(format!("recursed {reached} deep"))
}

fn log_flood(n: u64) -> Result<String, Error> {
    for i in 0..n {
        cronwerk_guest::info!(code: "FLOOD", "line {i}");
    }
    Ok(format!("logged {n} lines"))
}

fn print(n: u64) -> Result<String, Error> {
    for i in 0..n {
        println!("stdout line {i}");
    }
    eprintln!("a line on stderr");
    Ok(format!("printed {n} lines"))
}

fn sleep_polling(ctx: &Context, ms: u64) -> Result<String, Error> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        if ctx.is_cancelled() {
            cronwerk_guest::info!(code: "CANCELLED", "stopping early");
            bail!("cancelled after {} ms", start.elapsed().as_millis());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(format!("slept {ms} ms"))
}

fn sleep_ignoring(ms: u64) -> Result<String, Error> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(format!("slept {ms} ms without looking"))
}

fn read_file(path: &str) -> Result<String, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::msg(e).context(format!("reading {path}")))?;
    Ok(format!("read {} bytes: {}", text.len(), text.trim()))
}

fn write_file(path: &str, text: &str) -> Result<String, Error> {
    std::fs::write(path, text).map_err(|e| Error::msg(e).context(format!("writing {path}")))?;
    Ok(format!("wrote {} bytes", text.len()))
}

fn list_dir(path: &str) -> Result<String, Error> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .map_err(|e| Error::msg(e).context(format!("listing {path}")))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names.join(","))
}

fn env() -> Result<String, Error> {
    let vars = std::env::vars().count();
    let args = std::env::args().count();
    let home = std::env::var("HOME").ok();
    Ok(format!("vars={vars} args={args} home={home:?}"))
}

fn socket(addr: &str) -> Result<String, Error> {
    match std::net::TcpStream::connect(addr) {
        Ok(_) => Ok(format!("connected to {addr}")),
        Err(e) => bail!("cannot connect to {addr}: {e}"),
    }
}

fn state_counter() -> Result<String, Error> {
    let n: u64 = state::get_parsed("count")?.unwrap_or(0) + 1;
    state::set("count", n)?;
    Ok(format!("count={n}"))
}

fn state_fill() -> Result<String, Error> {
    let value = "v".repeat(60 * 1024);
    for i in 0..100 {
        if let Err(e) = state::set(&format!("k{i}"), &value) {
            return Ok(format!("stopped at k{i}: {e}"));
        }
    }
    bail!("state accepted 6 MB")
}

fn describe_context(ctx: &Context) -> String {
    let payload = ctx
        .payload()
        .map(|p| format!("{}|{}|{}", p.target, p.text, p.data.len()))
        .unwrap_or_else(|| "none".into());
    format!(
        "name={} id={} trigger={} attempt={} runs={} instance={} scheduled={} payload={}",
        ctx.configuration_name(),
        ctx.identifier(),
        match ctx.trigger() {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Broadcast => "broadcast",
            Trigger::Retry => "retry",
            Trigger::FollowUp => "follow-up",
            Trigger::Backfill => "backfill",
            Trigger::Startup => "startup",
        },
        ctx.attempt(),
        ctx.run_count(),
        ctx.instance_name(),
        ctx.scheduled_for().is_some(),
        payload
    )
}
