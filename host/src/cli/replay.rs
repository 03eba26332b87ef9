//! `cronwerk runs replay RUN_ID [--component FILE]`: runs a recorded run's
//! inputs again, here, in the sandbox, against the component that ran it
//! (from the compile cache or the plugins folder) or a fixed one, and shows
//! the old and the new outcome, message, events and state side by side.
//! The loop after a failure: replay against the fix until it passes.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::common::{self, HttpArgs, shown};
use super::compile_cache::{self, CacheArgs, LoadArgs};
use super::exec::{GrantArgs, cancel_on_ctrl_c};
use super::exit;
use crate::model::replay::{RunInputs, StoredInputs};
use crate::model::{EventRecord, Grants, InstanceInfo, RunRecord, RunState};
use crate::runtime::{
    CancelToken, Component, EngineSettings, RunContext, RunReport, RunRequest, Runtime, sha256_hex,
};
use crate::store::{EventFilter, Store};

#[derive(Args)]
pub struct ReplayArgs {
    /// The run's id, or any start of it that only one run has.
    run_id: String,
    /// Run this component file instead of the one that ran (a fix, say).
    #[arg(long, value_name = "FILE")]
    component: Option<PathBuf>,
    /// Where to look for the component that ran when the compile cache
    /// lacks it: the plugins folder `serve` watched.
    #[arg(long, default_value = "plugins", value_name = "DIR")]
    plugins: PathBuf,
    /// What the replay is granted (the run's own grants are not applied:
    /// its folders may not exist here).
    #[command(flatten)]
    grants: GrantArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    http: HttpArgs,
}

/// What a replay does not reproduce, said with every replay.
const NOT_REPRODUCED: &[&str] = &[
    "the clock and randomness: the task sees today's time and fresh random numbers \
     (its deadline is its time limit from now)",
    "files and the network: only what --grant-dir and --allow-http give here",
    "the farm: a broadcast fails, as under `cronwerk exec`",
    "cancellation: the run is not asked to stop (Ctrl-C asks it)",
];

/// One side of the comparison.
#[derive(Serialize)]
struct Side {
    outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    message: String,
    component_sha256: Option<String>,
    component_version: Option<String>,
    events: Vec<SideEvent>,
    state: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct SideEvent {
    at: chrono::DateTime<chrono::Utc>,
    level: String,
    source: String,
    code: String,
    message: String,
}

#[derive(Serialize)]
struct Replay<'a> {
    run_id: &'a str,
    configuration: &'a str,
    identifier: &'a str,
    /// The component replayed: the file, or `compile cache`.
    component: String,
    state_before: &'a BTreeMap<String, String>,
    was: Side,
    now: Side,
    not_reproduced: &'a [&'a str],
}

pub async fn run(data_dir: &Path, a: ReplayArgs) -> anyhow::Result<u8> {
    let grants = match a.grants.checked() {
        Ok(grants) => grants,
        Err(code) => return Ok(code),
    };
    let store = common::open_existing_store(data_dir).await?;
    let id = super::run_ids::resolve(&*store, &a.run_id).await?;
    let record = store.get_run(&id).await?;
    let inputs = match recorded_inputs(&*store, &record).await? {
        Ok(inputs) => inputs,
        Err(why) => {
            eprintln!("error: run {id} cannot be replayed: {why}");
            return Ok(exit::USAGE);
        }
    };
    let runtime = Runtime::new(EngineSettings {
        max_concurrent_runs: 1,
        load: a.load.limits(),
        http: a.http.settings(),
        ..Default::default()
    })?;
    let component = match component(&runtime, &a, &record).await? {
        Ok(found) => found,
        Err(code) => return Ok(code),
    };
    if component.info().identifier != inputs.identifier && !a.json {
        eprintln!(
            "note: {} implements {}, the run was of {}; replaying it anyway",
            component.origin(),
            component.info().identifier,
            inputs.identifier
        );
    }
    let (config, secrets) = settings(&*store, &inputs).await?;
    let request = request(&inputs, &record, grants, config, secrets)?;
    let on_ctrl_c = cancel_on_ctrl_c(request.cancel.clone(), request.grace)?;
    let report = runtime.run(&component, request).await;
    on_ctrl_c.abort();

    let events = store
        .list_events(&EventFilter {
            run_id: Some(id.clone()),
            limit: Some(10_000),
            ..Default::default()
        })
        .await?;
    let replay = Replay {
        run_id: &id,
        configuration: &inputs.configuration,
        identifier: &inputs.identifier,
        component: component.origin().to_owned(),
        state_before: &inputs.state,
        was: was(&record, &inputs, &events),
        now: now(&component, &report),
        not_reproduced: NOT_REPRODUCED,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&replay)?);
    } else {
        print_text(&replay, &record, &inputs)?;
    }
    Ok(super::exec::exit_code(&report.outcome))
}

/// The run's recorded inputs, or why there are none.
async fn recorded_inputs(
    store: &dyn Store,
    record: &RunRecord,
) -> anyhow::Result<Result<RunInputs, String>> {
    let Some(stored) = store.run_inputs(&record.id).await? else {
        let why = match record.state {
            RunState::Running | RunState::Queued => {
                format!("it is {} (replay a run that ended)", record.state)
            }
            RunState::Abandoned => "it was abandoned: its instance went away before recording \
                                    what it was given"
                .to_owned(),
            RunState::Skipped => "it was skipped and never started".to_owned(),
            _ => "nothing was recorded of what it was given (it ended before its instance \
                  kept run inputs, or never started)"
                .to_owned(),
        };
        return Ok(Err(why));
    };
    Ok(match StoredInputs::parse(&stored) {
        Ok(StoredInputs::Kept(inputs)) => Ok(*inputs),
        Ok(StoredInputs::TooLarge { omitted_bytes }) => Err(format!(
            "what it was given took {}, more than the {} a run's record keeps \
             (a large state, most likely)",
            bytesize::ByteSize(omitted_bytes),
            bytesize::ByteSize(crate::model::replay::MAX_RUN_INPUTS_BYTES as u64)
        )),
        Err(e) => Err(e),
    })
}

/// The component to replay: `--component`, else the one that ran, from
/// the compile cache or the plugins folder. `Err` is the exit code, the
/// reason said.
async fn component(
    runtime: &Runtime,
    a: &ReplayArgs,
    record: &RunRecord,
) -> anyhow::Result<Result<Component, u8>> {
    if let Some(file) = &a.component {
        return Ok(
            compile_cache::open_and_load(runtime, &a.cache, file, a.json)
                .await
                .map(|(component, _)| component),
        );
    }
    let Some(sha256) = &record.component_sha256 else {
        eprintln!(
            "error: run {} never reached a component (no component ran it); give one with \
             --component FILE",
            record.id
        );
        return Ok(Err(exit::USAGE));
    };
    let cache = match a.cache.open() {
        Ok(cache) => cache,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Err(exit::USAGE));
        }
    };
    if let Some(cache) = &cache {
        let origin = format!("the compile cache ({})", &sha256[..sha256.len().min(12)]);
        match runtime.load_cached_by_sha256(sha256, origin, cache).await {
            Ok(Some(component)) => return Ok(Ok(component)),
            Ok(None) => {}
            Err(e) => return Ok(Err(compile_cache::report_load_error(&e, a.json))),
        }
    }
    if let Some(file) = file_with_sha256(&a.plugins, sha256, a.load.max_component_size) {
        return Ok(
            compile_cache::open_and_load(runtime, &a.cache, &file, a.json)
                .await
                .map(|(component, _)| component),
        );
    }
    let version = record.component_version.as_deref().unwrap_or("?");
    let looked = match &cache {
        Some(cache) => format!(
            "the compile cache {} nor the plugins folder {}",
            cache.dir().display(),
            a.plugins.display()
        ),
        None => format!("the plugins folder {}", a.plugins.display()),
    };
    eprintln!(
        "error: the component run {} used ({} {version}, sha256 {}) is in neither {looked}; \
         give it (or a fix) with --component FILE, or point --plugins or --cache-dir where it is",
        record.id,
        record.implementation,
        &sha256[..sha256.len().min(12)]
    );
    Ok(Err(exit::LOAD_ERROR))
}

/// The `.wasm` file in `dir` whose content has `sha256`, if any.
fn file_with_sha256(dir: &Path, sha256: &str, max_bytes: u64) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.flatten().map(|e| e.path()).find(|path| {
        path.extension().is_some_and(|x| x == "wasm")
            && std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() <= max_bytes)
            && std::fs::read(path).is_ok_and(|bytes| sha256_hex(&bytes) == sha256)
    })
}

/// The settings the replay gives: the recorded ones, and the secret ones
/// as the store holds them now (their values were not recorded).
async fn settings(
    store: &dyn Store,
    inputs: &RunInputs,
) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut config = inputs.settings.clone();
    let mut secrets = Vec::new();
    if !inputs.secret_settings.is_empty() {
        let all = store.list_settings().await?;
        let now = all.get(&inputs.identifier);
        for key in &inputs.secret_settings {
            if let Some(setting) = now.and_then(|n| n.get(key)) {
                config.insert(key.clone(), setting.value.clone());
                secrets.push(setting.value.clone());
            }
        }
    }
    Ok((config, secrets))
}

fn request(
    inputs: &RunInputs,
    record: &RunRecord,
    grants: Grants,
    config: BTreeMap<String, String>,
    secrets: Vec<String>,
) -> anyhow::Result<RunRequest> {
    let payload = match &inputs.payload {
        Some(p) => Some(
            p.payload()
                .map_err(|e| anyhow::anyhow!("run {}: {e}", record.id))?,
        ),
        None => None,
    };
    Ok(RunRequest {
        context: RunContext {
            configuration_name: inputs.configuration.clone(),
            run_id: record.id.clone(),
            trigger: inputs.trigger,
            attempt: inputs.attempt,
            scheduled_for: inputs.scheduled_for.map(Into::into),
            last_run: inputs.last_run.map(Into::into),
            next_run: inputs.next_run.map(Into::into),
            run_count: inputs.run_count,
            properties: inputs.properties.clone(),
        },
        payload,
        limits: inputs.limits,
        grants,
        config,
        secrets,
        state: inputs.state.clone(),
        instance: InstanceInfo {
            name: inputs.instance.clone(),
            roles: inputs.roles.clone(),
        },
        farm: None,
        cancel: CancelToken::new(),
        grace: Duration::from_secs(5),
    })
}

fn was(record: &RunRecord, inputs: &RunInputs, events: &[EventRecord]) -> Side {
    Side {
        outcome: record.state.to_string(),
        reason: record.reason.map(|r| r.as_str().to_owned()),
        message: record.message.clone(),
        component_sha256: record.component_sha256.clone(),
        component_version: record.component_version.clone(),
        events: events
            .iter()
            .map(|e| SideEvent {
                at: e.at,
                level: e.level.as_str().to_owned(),
                source: e.source.to_string(),
                code: e.code.clone(),
                message: e.message.clone(),
            })
            .collect(),
        state: inputs
            .state_after
            .clone()
            .unwrap_or_else(|| inputs.state.clone()),
    }
}

fn now(component: &Component, report: &RunReport) -> Side {
    let reason = match &report.outcome {
        crate::runtime::Outcome::Stopped { reason, .. } => Some(reason.as_str().to_owned()),
        _ => None,
    };
    Side {
        outcome: report.outcome.kind().to_owned(),
        reason,
        message: report.outcome.message().to_owned(),
        component_sha256: Some(report.component_sha256.clone()),
        component_version: Some(component.info().version.clone()),
        events: report
            .events
            .iter()
            .map(|e| SideEvent {
                at: e.at.into(),
                level: e.level.as_str().to_owned(),
                source: e.source.to_string(),
                code: e.code.clone(),
                message: e.message.clone(),
            })
            .collect(),
        state: report.state.clone(),
    }
}

fn print_text(r: &Replay, record: &RunRecord, inputs: &RunInputs) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let sha = |s: &Option<String>| {
        s.as_deref()
            .map_or("-".to_owned(), |s| s[..s.len().min(12)].to_owned())
    };
    let version = |v: &Option<String>| v.as_deref().unwrap_or("-").to_owned();
    writeln!(
        out,
        "replaying run {} of '{}' ({}), trigger {}, attempt {}",
        r.run_id,
        shown(r.configuration),
        shown(r.identifier),
        inputs.trigger,
        inputs.attempt
    )?;
    writeln!(
        out,
        "  was: {} on {} at {} (sha256 {})",
        shown(&version(&r.was.component_version)),
        shown(record.instance.as_deref().unwrap_or("-")),
        common::time(record.started_at),
        sha(&r.was.component_sha256)
    )?;
    writeln!(
        out,
        "  now: {} from {} (sha256 {})",
        shown(&version(&r.now.component_version)),
        shown(&r.component),
        sha(&r.now.component_sha256)
    )?;
    let outcome = |s: &Side| match &s.reason {
        Some(reason) => format!("{} ({reason})", s.outcome),
        None => s.outcome.clone(),
    };
    writeln!(out)?;
    writeln!(out, "outcome  was: {}", outcome(&r.was))?;
    writeln!(out, "         now: {}", outcome(&r.now))?;
    writeln!(out, "message  was: {}", shown(&r.was.message))?;
    writeln!(out, "         now: {}", shown(&r.now.message))?;
    for (title, side) in [("events   was:", &r.was), ("events   now:", &r.now)] {
        if side.events.is_empty() {
            writeln!(out, "{title} none")?;
            continue;
        }
        writeln!(out, "{title}")?;
        for e in &side.events {
            let code = if e.code.is_empty() {
                String::new()
            } else {
                format!(" {}", shown(&e.code))
            };
            writeln!(
                out,
                "  {:<7} {:<6}{code}  {}",
                e.level,
                e.source,
                shown(&e.message)
            )?;
        }
    }
    let keys: std::collections::BTreeSet<&String> = r
        .state_before
        .keys()
        .chain(r.was.state.keys())
        .chain(r.now.state.keys())
        .collect();
    if keys.is_empty() {
        writeln!(out, "state    none before or after")?;
    } else {
        writeln!(out, "state")?;
        let cell = |m: &BTreeMap<String, String>, k: &String| {
            m.get(k)
                .map_or("-".to_owned(), |v| common::short(&shown(v), 30))
        };
        let rows: Vec<Vec<String>> = keys
            .into_iter()
            .map(|k| {
                let changed = r.was.state.get(k) != r.now.state.get(k);
                vec![
                    shown(k).into_owned(),
                    cell(r.state_before, k),
                    cell(&r.was.state, k),
                    cell(&r.now.state, k),
                    if changed { "differs" } else { "" }.to_owned(),
                ]
            })
            .collect();
        drop(out);
        common::print_table(
            &["  key", "before", "after (was)", "after (now)", ""],
            &rows,
        );
        out = std::io::stdout().lock();
    }
    writeln!(out)?;
    writeln!(out, "not reproduced:")?;
    for line in r.not_reproduced {
        writeln!(out, "  - {line}")?;
    }
    if !inputs.grants.dirs.is_empty() || !inputs.grants.http_hosts.is_empty() {
        let dirs: Vec<String> = inputs
            .grants
            .dirs
            .iter()
            .map(|d| {
                let ro = if d.read_only { ":ro" } else { "" };
                format!("{}:{}{ro}", d.host_path.display(), d.guest_path)
            })
            .collect();
        let hosts: Vec<String> = inputs
            .grants
            .http_hosts
            .iter()
            .map(|h| h.to_string())
            .collect();
        writeln!(
            out,
            "  (the run had{}{})",
            if dirs.is_empty() {
                String::new()
            } else {
                format!(" --grant-dir {}", dirs.join(" --grant-dir "))
            },
            if hosts.is_empty() {
                String::new()
            } else {
                format!(" --allow-http {}", hosts.join(" --allow-http "))
            }
        )?;
    }
    if !inputs.secret_settings.is_empty() {
        writeln!(
            out,
            "  secret settings ({}) are the store's values now: a run's record keeps their names only",
            inputs.secret_settings.join(", ")
        )?;
    }
    Ok(())
}
