//! `cronwerk task add|list|show|run|enable|disable|edit|rm`: managing task
//! configurations. Changes go to the store; a running `serve` on the same
//! data directory picks them up within a second.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::common::{self, ConfigArgs, ScheduleArgs, print_table, short, shown, time};
use super::exit;
use crate::model::{RunRecord, RunState, TaskRecord};
use crate::spec;
use crate::store::{RunFilter, Store, StoreError};

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Create a configuration.
    Add(AddArgs),
    /// List configurations with their last and next runs.
    List(ListArgs),
    /// Show one configuration, its next fire times and last runs.
    Show(ShowArgs),
    /// Run a configuration now (also when disabled).
    Run(RunArgs),
    /// Enable a configuration (its schedule restarts from now).
    Enable(NameArgs),
    /// Disable a configuration (manual runs still work).
    Disable(DisableArgs),
    /// Change a configuration.
    Edit(EditArgs),
    /// Delete a configuration and its state.
    Rm(NameArgs),
    /// Stop the configuration's running run (see `cronwerk runs stop`).
    Stop(StopArgs),
    /// Run the configuration's slots in a past window (--list, --cancel ID).
    Backfill(super::backfill::BackfillArgs),
}

#[derive(Args)]
pub struct AddArgs {
    /// The configuration's name, e.g. "Nightly cleanup".
    name: String,
    /// Identifier of the component that implements it, e.g. Acme.HelloScheduledTask.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(super::shell::identifiers))]
    implementation: String,
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Create it disabled.
    #[arg(long)]
    disabled: bool,
    /// Refuse an implementation no running instance has loaded (without
    /// it: a warning naming the nearest loaded identifiers).
    #[arg(long)]
    strict: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct NameArgs {
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    name: String,
}

#[derive(Args)]
pub struct DisableArgs {
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    name: String,
    /// Why it is paused, shown with it (`task list/show`, the dashboard)
    /// until it is enabled again.
    #[arg(long)]
    note: Option<String>,
}

#[derive(Args)]
pub struct StopArgs {
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    name: String,
    /// Return once the stop is asked for, without waiting for the run to end.
    #[arg(long)]
    no_wait: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RunArgs {
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    name: String,
    /// Return once the run is requested instead of waiting for its outcome.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for the outcome.
    #[arg(long, default_value = "5m", value_parser = super::args::duration)]
    wait: Duration,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EditArgs {
    #[arg(add = clap_complete::ArgValueCandidates::new(super::shell::task_names))]
    name: String,
    /// New name.
    #[arg(long)]
    rename: Option<String>,
    /// New implementation identifier.
    #[arg(long, add = clap_complete::ArgValueCandidates::new(super::shell::identifiers))]
    implementation: Option<String>,
    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Remove a property (repeatable).
    #[arg(long = "remove-property")]
    remove_properties: Vec<String>,
    /// Remove all directory and HTTP grants (before adding the ones given).
    #[arg(long)]
    clear_grants: bool,
    /// Remove the fuel limit.
    #[arg(long)]
    unlimited_fuel: bool,
    /// Let any instance run it again (removes required roles).
    #[arg(long, conflicts_with = "roles")]
    any_instance: bool,
    /// Refuse a new implementation no running instance has loaded.
    #[arg(long)]
    strict: bool,
}

pub async fn run(data_dir: &Path, command: TaskCommand) -> anyhow::Result<u8> {
    // Only adding a configuration makes a new store; the rest need one.
    let store = match command {
        TaskCommand::Add(_) => common::open_store(data_dir).await?,
        _ => common::open_existing_store(data_dir).await?,
    };
    let result = match command {
        TaskCommand::Add(a) => add(&*store, a).await,
        TaskCommand::List(a) => list(&*store, a).await,
        TaskCommand::Show(a) => show(&*store, a).await,
        TaskCommand::Run(a) => run_now(&*store, a).await,
        TaskCommand::Enable(a) => set_enabled(&*store, &a.name, true, None).await,
        TaskCommand::Disable(a) => set_enabled(&*store, &a.name, false, a.note).await,
        TaskCommand::Edit(a) => edit(&*store, a).await,
        TaskCommand::Stop(a) => stop(&*store, a).await,
        TaskCommand::Backfill(a) => super::backfill::run(&*store, a).await,
        TaskCommand::Rm(a) => remove(&*store, &a.name).await,
    };
    match result {
        Err(e) => match e.downcast_ref::<StoreError>() {
            Some(StoreError::TaskNotFound(_) | StoreError::TaskExists(_)) => {
                eprintln!("error: {e}{}", common::store_hint(&e));
                Ok(exit::USAGE)
            }
            _ if e.is::<spec::FieldError>() => {
                eprintln!("error: {e}");
                Ok(exit::USAGE)
            }
            _ => Err(e),
        },
        ok => ok,
    }
}

/// Checks `config` (new, or changed from `old`) against the other
/// configurations when its follow-ups or a rename make that needed.
async fn check_with_others(
    store: &dyn Store,
    old: Option<&crate::model::TaskConfig>,
    config: &crate::model::TaskConfig,
) -> anyhow::Result<()> {
    if spec::needs_others(old, config) {
        spec::check_with_others(old, config, &store.list_tasks().await?)?;
    }
    Ok(())
}

async fn remove(store: &dyn Store, name: &str) -> anyhow::Result<u8> {
    if let Some(why) = spec::delete_refused(name, &store.list_tasks().await?) {
        eprintln!("error: {why}");
        return Ok(exit::USAGE);
    }
    let task = store.get_task(name).await?;
    store.delete_task(name).await?;
    record(store, name, "deleted", Some(&task.config), None).await;
    println!("removed '{name}'");
    Ok(exit::OK)
}

/// Says when no running instance has loaded a component implementing
/// `identifier`, naming the nearest loaded ones; with `strict`, refuses
/// (false: the caller stops). Silent while no instance reports plugins.
async fn check_identifier(
    store: &dyn Store,
    identifier: &str,
    strict: bool,
) -> anyhow::Result<bool> {
    let loaded = spec::loaded_identifiers(&store.list_plugins().await?);
    let Some(why) = (!loaded.is_empty())
        .then(|| spec::unknown_identifier(identifier, &loaded))
        .flatten()
    else {
        return Ok(true);
    };
    if strict {
        eprintln!("error: --implementation: {why} (--strict)");
        return Ok(false);
    }
    eprintln!("warning: --implementation: {why}");
    Ok(true)
}

async fn add(store: &dyn Store, a: AddArgs) -> anyhow::Result<u8> {
    if !check_identifier(store, &a.implementation, a.strict).await? {
        return Ok(exit::USAGE);
    }
    let (config, next) = spec::new_config(
        &a.name,
        &a.implementation,
        &a.schedule.spec(),
        &a.config.spec(),
        !a.disabled,
        store.clock().now(),
    )?;
    check_with_others(store, None, &config).await?;
    let task = store.create_task(&config, next).await?;
    record(
        store,
        &task.config.name,
        "created",
        None,
        Some(&task.config),
    )
    .await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&task)?);
    } else {
        println!(
            "added '{}' ({}, {}); next run {}",
            task.config.name,
            task.config.implementation,
            task.config.schedule,
            time(task.next_run_at)
        );
    }
    warn_if_no_instance_has_roles(store, &task).await?;
    Ok(exit::OK)
}

/// A configuration that needs roles no live instance has would silently
/// never run; say so while the operator is still looking.
async fn warn_if_no_instance_has_roles(store: &dyn Store, task: &TaskRecord) -> anyhow::Result<()> {
    if task.config.roles.is_empty() {
        return Ok(());
    }
    let live = crate::scheduler::farm::live_instances(store).await?;
    if live.is_empty()
        || live
            .iter()
            .any(|i| task.config.missing_roles(&i.roles).is_empty())
    {
        return Ok(());
    }
    eprintln!(
        "note: no live instance has the role(s) {}; '{}' runs once one is started with {}",
        task.config.roles.join(", "),
        task.config.name,
        task.config
            .roles
            .iter()
            .map(|r| format!("--role {r}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

fn last_result(t: &TaskRecord) -> String {
    match (&t.last_outcome, &t.last_message) {
        (None, _) => "-".into(),
        (Some(o), Some(m)) if !m.is_empty() => format!("{o}: {}", short(m, 40)),
        (Some(o), _) => o.to_string(),
    }
}

async fn list(store: &dyn Store, a: ListArgs) -> anyhow::Result<u8> {
    let tasks = store.list_tasks().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(exit::OK);
    }
    if tasks.is_empty() {
        println!("no task configurations yet: add one with `cronwerk task add`");
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.config.name.clone(),
                t.config.implementation.clone(),
                enabled_text(&t.config),
                t.config.schedule.to_string(),
                time(t.last_run_at),
                last_result(t),
                if t.config.enabled {
                    time(t.next_run_at)
                } else {
                    "-".into()
                },
                t.run_count.to_string(),
                t.skipped_count.to_string(),
                t.failed_count.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "IMPLEMENTATION",
            "ENABLED",
            "SCHEDULE",
            "LAST RUN",
            "LAST RESULT",
            "NEXT RUN",
            "RUNS",
            "SKIPPED",
            "FAILED",
        ],
        &rows,
    );
    Ok(exit::OK)
}

#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    task: &'a TaskRecord,
    upcoming: Vec<chrono::DateTime<Utc>>,
    last_runs: &'a [RunRecord],
}

async fn show(store: &dyn Store, a: ShowArgs) -> anyhow::Result<u8> {
    let task = store.get_task(&a.name).await?;
    let runs = store
        .list_runs(&RunFilter {
            task_id: Some(task.id),
            limit: Some(10),
            ..Default::default()
        })
        .await?;
    let upcoming = spec::upcoming(&task, 10);
    if a.json {
        let shown = Shown {
            task: &task,
            upcoming,
            last_runs: &runs,
        };
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(exit::OK);
    }
    let c = &task.config;
    println!("name            {}", shown(&c.name));
    println!("implementation  {}", shown(&c.implementation));
    println!("enabled         {}", if c.enabled { "yes" } else { "no" });
    if let (false, Some(p)) = (c.enabled, &c.paused) {
        println!(
            "paused          by {} at {}{}",
            shown(&p.by),
            time(Some(p.at)),
            p.note
                .as_deref()
                .map_or(String::new(), |n| format!(": {}", shown(n)))
        );
    }
    println!("schedule        {}", c.schedule);
    println!(
        "misfire         {} (catch-up window {})",
        c.misfire,
        humantime::format_duration(c.catch_up_window)
    );
    println!("on overlap      {}", overlap_text(c));
    if let Some(jitter) = c.jitter {
        println!(
            "jitter          {} (this configuration's slots: +{})",
            humantime::format_duration(jitter),
            humantime::format_duration(c.fire_times().offset().to_std().unwrap_or_default())
        );
    }
    if c.on_start {
        println!("on start        runs once on every instance's start");
    }
    if !c.on_failure.is_empty() {
        println!("on failure      runs {}", follow_up_names(&c.on_failure));
    }
    if !c.on_success.is_empty() {
        println!("on success      runs {}", follow_up_names(&c.on_success));
    }
    match (c.start, c.until) {
        (None, None) => {}
        (start, until) => println!(
            "active          {} to {}",
            start.map_or("always".into(), |t| time(Some(t))),
            until.map_or("no end".into(), |t| time(Some(t)))
        ),
    }
    println!(
        "retries         {} (backoff {}, doubling)",
        c.retries,
        humantime::format_duration(c.retry_backoff)
    );
    if c.keep_runs.is_some() || c.keep_failed.is_some() {
        let kept = |n: Option<u32>| n.map_or("as serve --keep-runs".into(), |n| n.to_string());
        println!(
            "history kept    {} finished runs, {} failed (apart)",
            kept(c.keep_runs),
            kept(c.keep_failed.or(c.keep_runs))
        );
    }
    println!(
        "limits          timeout {}, memory {}, fuel {}",
        humantime::format_duration(c.limits.timeout),
        bytesize::ByteSize(c.limits.memory_bytes),
        c.limits.fuel.map_or("unlimited".into(), |f| f.to_string())
    );
    for (k, v) in &c.properties {
        println!("property        {} = {}", shown(k), shown(v));
    }
    for g in &c.grants.dirs {
        println!(
            "grant           {} as {}{}",
            g.host_path.display(),
            g.guest_path,
            if g.read_only { " (read-only)" } else { "" }
        );
    }
    for h in &c.grants.http_hosts {
        println!("http            {h}");
    }
    if !c.roles.is_empty() {
        println!(
            "runs on         instances with role {}",
            c.roles.join(" and ")
        );
    }
    println!(
        "counters        {} runs, {} skipped, {} failed",
        task.run_count, task.skipped_count, task.failed_count
    );
    if let Some(r) = &task.running_run_id {
        match task.running_count {
            0 | 1 => println!("running         {r}"),
            n => println!("running         {n} runs, the newest {r}"),
        }
    }
    if let Some(r) = task.retry_at {
        println!(
            "retry           attempt {} at {}",
            task.retry_attempt,
            time(Some(r))
        );
    }
    println!("\nnext fire times:");
    if upcoming.is_empty() {
        println!("  none");
    }
    for t in &upcoming {
        println!("  {}", time(Some(*t)));
    }
    println!("\nlast runs:");
    super::runs::print_runs(&runs);
    Ok(exit::OK)
}

fn follow_up_names(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{}'", shown(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a slot does while a run goes on, in words.
fn overlap_text(c: &crate::model::TaskConfig) -> String {
    use crate::model::OverlapPolicy;
    match c.on_overlap {
        OverlapPolicy::Skip => "skip (a slot that comes while a run goes on is skipped)".into(),
        OverlapPolicy::Allow => format!(
            "allow (up to {} runs at once; beyond that, skipped)",
            c.concurrency_limit()
        ),
        OverlapPolicy::Replace => "replace (the running run is stopped, then the slot runs)".into(),
        OverlapPolicy::Queue => "queue (one slot waits for the running run to end)".into(),
    }
}

/// "yes", "no", or "no: NOTE" for one paused with a note.
fn enabled_text(c: &crate::model::TaskConfig) -> String {
    match (
        &c.enabled,
        c.paused.as_ref().and_then(|p| p.note.as_deref()),
    ) {
        (true, _) => "yes".into(),
        (false, Some(note)) => format!("no: {}", short(note, 40)),
        (false, None) => "no".into(),
    }
}

/// Records a change of configuration `name` in the audit trail, with the
/// fields that changed.
async fn record(
    store: &dyn Store,
    name: &str,
    action: &str,
    before: Option<&crate::model::TaskConfig>,
    after: Option<&crate::model::TaskConfig>,
) {
    let changes = crate::model::audit::changes(before, after);
    let kind = crate::model::audit::AuditKind::Configuration;
    common::audit(store, kind, name, action, changes).await;
}

async fn set_enabled(
    store: &dyn Store,
    name: &str,
    enabled: bool,
    note: Option<String>,
) -> anyhow::Result<u8> {
    let task = store.get_task(name).await?;
    let mut config = task.config.clone();
    config.enabled = enabled;
    if !enabled {
        config.paused = Some(crate::model::Pause {
            by: common::actor(),
            at: Utc::now(),
            note: note.filter(|n| !n.trim().is_empty()),
        });
    }
    let (config, next) = spec::change(&task, config, store.clock().now())?;
    store.update_task(name, &config, next).await?;
    let action = if enabled { "enabled" } else { "disabled" };
    record(store, name, action, Some(&task.config), Some(&config)).await;
    println!("'{name}' {action}");
    Ok(exit::OK)
}

async fn edit(store: &dyn Store, a: EditArgs) -> anyhow::Result<u8> {
    let task = store.get_task(&a.name).await?;
    let now = store.clock().now();
    let mut config = task.config.clone();
    if let Some(schedule) = a.schedule.spec().to_schedule(now)? {
        config.schedule = schedule;
    }
    if let Some(name) = &a.rename {
        spec::check_name(name)?;
        config.name = name.clone();
    }
    if let Some(i) = &a.implementation {
        spec::check_implementation(i)?;
        if !check_identifier(store, i, a.strict).await? {
            return Ok(exit::USAGE);
        }
        config.implementation = i.clone();
    }
    if a.clear_grants {
        config.grants.dirs.clear();
        config.grants.http_hosts.clear();
    }
    if a.unlimited_fuel {
        config.limits.fuel = None;
    }
    if a.any_instance {
        config.roles.clear();
    }
    for k in &a.remove_properties {
        config.properties.remove(k);
    }
    a.config.spec().apply(&mut config)?;
    let (config, next) = spec::change(&task, config, now)?;
    check_with_others(store, Some(&task.config), &config).await?;
    let old = task.config;
    let task = store.update_task(&a.name, &config, next).await?;
    record(
        store,
        &task.config.name,
        "changed",
        Some(&old),
        Some(&task.config),
    )
    .await;
    println!(
        "updated '{}' ({}); next run {}",
        task.config.name,
        task.config.schedule,
        time(task.next_run_at)
    );
    warn_if_no_instance_has_roles(store, &task).await?;
    Ok(exit::OK)
}

/// Stops the configuration's runs going on: one, or under `--on-overlap
/// allow` each of them, oldest first.
async fn stop(store: &dyn Store, a: StopArgs) -> anyhow::Result<u8> {
    let task = store.get_task(&a.name).await?;
    let Some(newest) = task.running_run_id.clone() else {
        eprintln!("'{}' has no run going on", a.name);
        return Ok(exit::USAGE);
    };
    let mut going_on = vec![newest];
    if task.running_count > 1 {
        let filter = RunFilter {
            task_id: Some(task.id),
            state: Some(RunState::Running),
            ..RunFilter::default()
        };
        going_on = store
            .list_runs(&filter)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        going_on.reverse();
    }
    let mut code = exit::OK;
    for run_id in going_on {
        code = code.max(super::runs::stop_run(store, &run_id, a.no_wait, a.json).await?);
    }
    Ok(code)
}

async fn run_now(store: &dyn Store, a: RunArgs) -> anyhow::Result<u8> {
    let task = store.get_task(&a.name).await?;
    let id = store.queue_manual_run(task.id, "cronwerk task run").await?;
    if a.no_wait {
        println!("{id}");
        return Ok(exit::OK);
    }
    if !common::some_instance_may_run(store, &task).await? {
        eprintln!(
            "queued run {id}; no `cronwerk serve` that may run it is live on this store{}, \
             so it will start when one is",
            if task.config.roles.is_empty() {
                String::new()
            } else {
                format!(" (it needs role {})", task.config.roles.join(" and "))
            }
        );
        return Ok(exit::OK);
    }
    let deadline = tokio::time::Instant::now() + a.wait;
    loop {
        let run = store.get_run(&id).await?;
        if !matches!(run.state, RunState::Queued | RunState::Running) {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                super::runs::print_runs(std::slice::from_ref(&run));
            }
            return Ok(match run.state {
                RunState::Succeeded => exit::OK,
                RunState::Failed => exit::TASK_FAILED,
                _ => exit::STOPPED,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "run {id} is still {}; see `cronwerk runs --task '{}'`",
                run.state, a.name
            );
            return Ok(exit::STOPPED);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
