//! `cronwerk apply -f tasks.toml`: makes the store's configurations and
//! settings match a file kept in Git. Everything is checked before anything
//! is written (each configuration as `task add` checks it, follow-ups
//! against the file's whole set), the plan is printed as a diff, and
//! applying the same file again changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::common;
use super::exit;
use super::tasks_file::TasksFile;
use crate::api::tasks::TaskInput;
use crate::model::audit::{self, AuditKind, Change};
use crate::model::{TaskConfig, TaskRecord};
use crate::spec;
use crate::store::{Setting, Store};

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The configurations file (TOML; `cronwerk export` writes one).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// Show what would change, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also remove the configurations and settings the file does not name
    /// (a secret listed without its value is kept).
    #[arg(long)]
    prune: bool,
    /// Refuse a configuration whose implementation no running instance has
    /// loaded (without it: a warning naming the nearest loaded identifiers).
    #[arg(long)]
    strict: bool,
}

/// What applying does to one configuration.
enum Step {
    Create(TaskConfig, Option<DateTime<Utc>>),
    Update {
        old: Box<TaskRecord>,
        new: TaskConfig,
        next: Option<DateTime<Utc>>,
        shown: Vec<Change>,
    },
    Delete(Box<TaskRecord>),
}

/// What applying does to one setting.
enum SettingStep {
    Set {
        identifier: String,
        key: String,
        setting: Setting,
        before: Option<Setting>,
    },
    Remove {
        identifier: String,
        key: String,
        before: Setting,
    },
}

pub async fn run(data_dir: &std::path::Path, a: ApplyArgs) -> anyhow::Result<u8> {
    let file = match TasksFile::read(&a.file) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(exit::USAGE);
        }
    };
    let store = common::open_store(data_dir).await?;
    let origin = a.file.display().to_string();
    let plan = match plan(&*store, &file, &origin, a.prune).await? {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(exit::USAGE);
        }
    };
    let unknown = unknown_identifiers(&*store, &file).await?;
    for warning in &unknown {
        eprintln!("{}: {warning}", if a.strict { "error" } else { "warning" });
    }
    if a.strict && !unknown.is_empty() {
        eprintln!("error: nothing applied (--strict)");
        return Ok(exit::USAGE);
    }
    print_plan(&plan, a.prune);
    if plan.steps.is_empty() && plan.settings.is_empty() {
        println!("nothing to change");
        return Ok(exit::OK);
    }
    if a.dry_run {
        println!("dry run: nothing changed");
        return Ok(exit::OK);
    }
    write(&*store, plan).await?;
    Ok(exit::OK)
}

struct Plan {
    steps: Vec<Step>,
    unchanged: usize,
    /// Configurations in the store the file does not name (without --prune).
    not_named: Vec<String>,
    settings: Vec<SettingStep>,
    /// Secrets the file lists without a value that the store lacks.
    missing_secrets: Vec<String>,
}

/// Everything applying `file` would do, checked; `Err` says what in the
/// file is wrong, naming the configuration and the field.
async fn plan(
    store: &dyn Store,
    file: &TasksFile,
    origin: &str,
    prune: bool,
) -> anyhow::Result<Result<Plan, String>> {
    let now = store.clock().now();
    let existing = store.list_tasks().await?;
    let by_name: BTreeMap<&str, &TaskRecord> = existing
        .iter()
        .map(|t| (t.config.name.as_str(), t))
        .collect();
    let mut seen = BTreeSet::new();
    let mut steps = Vec::new();
    let mut unchanged = 0;
    // The set as it will be, for the checks that look at all of them.
    let mut after: Vec<TaskRecord> = Vec::new();
    for input in &file.tasks {
        let at = |e: spec::FieldError| {
            format!(
                "{origin}: task '{}': {}: {}",
                input.name,
                e.field.json(),
                e.message
            )
        };
        if !seen.insert(input.name.as_str()) {
            return Ok(Err(format!(
                "{origin}: task '{}' is named twice: each configuration once",
                input.name
            )));
        }
        let config = match input.to_config(now) {
            Ok(c) => c,
            Err(e) => return Ok(Err(at(e))),
        };
        match by_name.get(input.name.as_str()) {
            None => {
                let next = match spec::first_run_checked(&config, now) {
                    Ok(next) => next,
                    Err(e) => return Ok(Err(at(e))),
                };
                after.push(TaskRecord::unsaved(config.clone(), now));
                steps.push(Step::Create(config, next));
            }
            Some(old) => {
                let mut config = config;
                // Who paused it and why stays while the file keeps it disabled.
                if !config.enabled && !old.config.enabled {
                    config.paused = old.config.paused.clone();
                }
                let (new, next) = match spec::change(old, config, now) {
                    Ok(changed) => changed,
                    Err(e) => return Ok(Err(at(e))),
                };
                let shown = audit::changes(
                    Some(&TaskInput::of(&old.config)),
                    Some(&TaskInput::of(&new)),
                );
                after.push(TaskRecord {
                    config: new.clone(),
                    ..(*old).clone()
                });
                if shown.is_empty() {
                    unchanged += 1;
                } else {
                    steps.push(Step::Update {
                        old: Box::new((*old).clone()),
                        new,
                        next,
                        shown,
                    });
                }
            }
        }
    }
    let mut not_named = Vec::new();
    for old in existing
        .iter()
        .filter(|t| !seen.contains(t.config.name.as_str()))
    {
        if prune {
            steps.push(Step::Delete(Box::new(old.clone())));
        } else {
            not_named.push(old.config.name.clone());
            after.push(old.clone());
        }
    }
    // Follow-ups name configurations of the set as it will be.
    for t in &after {
        if let Err(e) = spec::check_follow_ups(&t.config, &after) {
            return Ok(Err(format!(
                "{origin}: task '{}': {}: {}",
                t.config.name,
                e.field.json(),
                e.message
            )));
        }
    }
    let (settings, missing_secrets) =
        match plan_settings(&store.list_settings().await?, file, origin, prune) {
            Ok(planned) => planned,
            Err(message) => return Ok(Err(message)),
        };
    Ok(Ok(Plan {
        steps,
        unchanged,
        not_named,
        settings,
        missing_secrets,
    }))
}

type SettingsPlan = (Vec<SettingStep>, Vec<String>);

fn plan_settings(
    stored: &crate::store::Settings,
    file: &TasksFile,
    origin: &str,
    prune: bool,
) -> Result<SettingsPlan, String> {
    let mut steps = Vec::new();
    let mut missing = Vec::new();
    for (identifier, entries) in &file.settings {
        for (key, entry) in entries {
            super::config::check(identifier, key)
                .map_err(|e| format!("{origin}: settings of '{identifier}': {e}"))?;
            let before = stored.get(identifier).and_then(|s| s.get(key));
            match entry.setting() {
                Some(setting) => {
                    if setting.value.len() > crate::runtime::STATE_MAX_VALUE_BYTES {
                        return Err(format!(
                            "{origin}: settings of '{identifier}': {key} is over {} bytes",
                            crate::runtime::STATE_MAX_VALUE_BYTES
                        ));
                    }
                    if before != Some(&setting) {
                        steps.push(SettingStep::Set {
                            identifier: identifier.clone(),
                            key: key.clone(),
                            setting,
                            before: before.cloned(),
                        });
                    }
                }
                None if before.is_some_and(|b| b.secret) => {}
                None => missing.push(format!("{identifier} {key}")),
            }
        }
    }
    if prune {
        for (identifier, entries) in stored {
            for (key, before) in entries {
                let named = file
                    .settings
                    .get(identifier)
                    .is_some_and(|e| e.contains_key(key));
                if !named {
                    steps.push(SettingStep::Remove {
                        identifier: identifier.clone(),
                        key: key.clone(),
                        before: before.clone(),
                    });
                }
            }
        }
    }
    Ok((steps, missing))
}

/// Warnings for configurations whose implementation no instance serves,
/// each naming the nearest identifiers that are loaded.
async fn unknown_identifiers(store: &dyn Store, file: &TasksFile) -> anyhow::Result<Vec<String>> {
    let loaded = spec::loaded_identifiers(&store.list_plugins().await?);
    if loaded.is_empty() {
        // No instance has reported its plugins: nothing to compare with.
        return Ok(Vec::new());
    }
    Ok(file
        .tasks
        .iter()
        .filter_map(|t| {
            spec::unknown_identifier(&t.implementation, &loaded)
                .map(|why| format!("task '{}': {why}", t.name))
        })
        .collect())
}

fn print_plan(plan: &Plan, prune: bool) {
    for step in &plan.steps {
        match step {
            Step::Create(c, _) => {
                println!("+ {} ({}, {})", c.name, c.implementation, c.schedule)
            }
            Step::Update { old, shown, .. } => {
                println!("~ {}", old.config.name);
                for change in shown {
                    println!(
                        "    {}: {} → {}",
                        change.field,
                        value_text(&change.before),
                        value_text(&change.after)
                    );
                }
            }
            Step::Delete(old) => println!("- {} (not in the file; --prune)", old.config.name),
        }
    }
    for step in &plan.settings {
        match step {
            SettingStep::Set {
                identifier,
                key,
                setting,
                before,
            } => {
                let sign = if before.is_some() { "~" } else { "+" };
                let shown = if setting.secret {
                    "(secret)".to_owned()
                } else {
                    format!("{:?}", setting.value)
                };
                println!("{sign} setting {identifier} {key} = {shown}");
            }
            SettingStep::Remove {
                identifier, key, ..
            } => {
                println!("- setting {identifier} {key} (not in the file; --prune)")
            }
        }
    }
    for missing in &plan.missing_secrets {
        println!(
            "! setting {missing}: a secret the file lists without its value, and the store has \
             none: set it with `cronwerk config set {missing} --secret`"
        );
    }
    let (mut created, mut updated, mut deleted) = (0, 0, 0);
    for step in &plan.steps {
        match step {
            Step::Create(..) => created += 1,
            Step::Update { .. } => updated += 1,
            Step::Delete(_) => deleted += 1,
        }
    }
    println!(
        "{created} to create, {updated} to change, {deleted} to remove, {} unchanged; \
         {} setting change(s)",
        plan.unchanged,
        plan.settings.len()
    );
    if !prune && !plan.not_named.is_empty() {
        println!(
            "not in the file, kept (--prune removes them): {}",
            plan.not_named.join(", ")
        );
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

/// Makes the changes, in an order that keeps every state in between
/// valid for the scheduler: new configurations first (follow-ups may name
/// them), then changes, then removals.
async fn write(store: &dyn Store, plan: Plan) -> anyhow::Result<()> {
    let mut steps = plan.steps;
    steps.sort_by_key(|s| match s {
        Step::Create(..) => 0,
        Step::Update { .. } => 1,
        Step::Delete(_) => 2,
    });
    // On a terminal, a bar over the writes (a file of thousands takes a
    // while on a remote database); nothing when piped.
    let bar = indicatif::ProgressBar::new((steps.len() + plan.settings.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} changes  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    for step in steps {
        bar.inc(1);
        bar.set_message(match &step {
            Step::Create(config, _) => config.name.clone(),
            Step::Update { new, .. } => new.name.clone(),
            Step::Delete(old) => old.config.name.clone(),
        });
        match step {
            Step::Create(config, next) => {
                let task = store.create_task(&config, next).await?;
                let changes = audit::changes(None, Some(&task.config));
                common::audit(
                    store,
                    AuditKind::Configuration,
                    &config.name,
                    "created",
                    changes,
                )
                .await;
            }
            Step::Update { old, new, next, .. } => {
                store.update_task(&old.config.name, &new, next).await?;
                let changes = audit::changes(Some(&old.config), Some(&new));
                common::audit(
                    store,
                    AuditKind::Configuration,
                    &new.name,
                    "changed",
                    changes,
                )
                .await;
            }
            Step::Delete(old) => {
                store.delete_task(&old.config.name).await?;
                let changes = audit::changes(Some(&old.config), None);
                common::audit(
                    store,
                    AuditKind::Configuration,
                    &old.config.name,
                    "deleted",
                    changes,
                )
                .await;
            }
        }
    }
    for step in plan.settings {
        bar.inc(1);
        match step {
            SettingStep::Set {
                identifier,
                key,
                setting,
                before,
            } => {
                if before.as_ref().is_some_and(|b| b.secret != setting.secret) {
                    // A secret stays secret unless removed first (the store's rule).
                    store.set_setting(&identifier, &key, None).await?;
                }
                store.set_setting(&identifier, &key, Some(&setting)).await?;
                let change = setting_change(before.as_ref(), Some(&setting));
                common::audit(
                    store,
                    AuditKind::Setting,
                    &format!("{identifier} {key}"),
                    "set",
                    change,
                )
                .await;
            }
            SettingStep::Remove {
                identifier,
                key,
                before,
            } => {
                store.set_setting(&identifier, &key, None).await?;
                let change = setting_change(Some(&before), None);
                common::audit(
                    store,
                    AuditKind::Setting,
                    &format!("{identifier} {key}"),
                    "removed",
                    change,
                )
                .await;
            }
        }
    }
    bar.finish_and_clear();
    println!("applied");
    Ok(())
}

fn setting_change(before: Option<&Setting>, after: Option<&Setting>) -> Vec<Change> {
    let shown = |s: Option<&Setting>| match s {
        None => serde_json::Value::Null,
        Some(s) if s.secret => audit::MASKED.into(),
        Some(s) => s.value.clone().into(),
    };
    vec![Change {
        field: "value".into(),
        before: shown(before),
        after: shown(after),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Setting;

    fn file(text: &str) -> TasksFile {
        TasksFile::parse(text).unwrap()
    }

    #[test]
    fn settings_plan_sets_what_differs_keeps_listed_secrets_and_prunes_the_rest() {
        let mut stored = crate::store::Settings::new();
        stored.entry("Acme.A".into()).or_default().extend([
            ("same".to_owned(), Setting::plain("1")),
            ("old".to_owned(), Setting::plain("x")),
            (
                "token".to_owned(),
                Setting {
                    value: "s3cret".into(),
                    secret: true,
                },
            ),
        ]);
        let f = file(
            "[settings.\"Acme.A\"]\nsame = \"1\"\nnew = \"2\"\ntoken = { secret = true }\n\
             [settings.\"Acme.B\"]\nkey = { secret = true }\n",
        );
        let (steps, missing) = plan_settings(&stored, &f, "t.toml", true).unwrap();
        let shown: Vec<String> = steps
            .iter()
            .map(|s| match s {
                SettingStep::Set { key, .. } => format!("set {key}"),
                SettingStep::Remove { key, .. } => format!("remove {key}"),
            })
            .collect();
        assert_eq!(shown, ["set new", "remove old"]);
        assert_eq!(missing, ["Acme.B key"]);
        let bad = file("[settings.\"not an identifier\"]\nk = \"v\"\n");
        let err = plan_settings(&stored, &bad, "t.toml", false).err().unwrap();
        assert!(
            err.starts_with("t.toml: settings of 'not an identifier'"),
            "{err}"
        );
    }
}
