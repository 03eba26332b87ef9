//! `cronwerk test FILE --cases CASES.toml`: runs the built component in the
//! real sandbox once per declared case (what the run is told, and what it
//! should come to: outcome, message, events, state after) and reports each
//! as passed or failed, for a task author's CI. A case file that cannot be
//! read names the case and the field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::common::shown;
use super::compile_cache::{self, CacheArgs, LoadArgs};
use super::{args, exit};
use crate::model::{BroadcastPayload, Grants, InstanceInfo, RunLimits, Trigger};
use crate::runtime::{
    CancelToken, Component, EngineSettings, Outcome, RunContext, RunReport, RunRequest, Runtime,
};

#[derive(Args)]
pub struct TestArgs {
    /// The component file (.wasm, or .wat text).
    file: PathBuf,
    /// The cases: a TOML file of `[[case]]` tables (see docs/contract.md,
    /// "Testing a component").
    #[arg(long, value_name = "CASES.toml")]
    cases: PathBuf,
    /// Run only the cases whose name contains this.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// One JSON object per case instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    #[serde(rename = "case", default)]
    cases: Vec<Case>,
}

/// One run and what it should come to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// The configuration name the task is told (default: the case's name).
    configuration: Option<String>,
    #[serde(default)]
    trigger: Option<String>,
    #[serde(default = "first_attempt")]
    attempt: u32,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    #[serde(default)]
    settings: BTreeMap<String, String>,
    #[serde(default)]
    state: BTreeMap<String, String>,
    payload: Option<CasePayload>,
    #[serde(default = "default_timeout")]
    timeout: String,
    fuel: Option<u64>,
    #[serde(default = "default_memory")]
    memory: String,
    #[serde(default)]
    expect: Expect,
}

fn first_attempt() -> u32 {
    1
}
fn default_timeout() -> String {
    "60s".into()
}
fn default_memory() -> String {
    "128MiB".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePayload {
    #[serde(default)]
    target: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    data: String,
}

/// What the run should come to; what is left out is not checked.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// succeeded, failed, stopped or cancelled.
    outcome: Option<String>,
    /// For a stopped run: fuel, memory, timeout, trap, ...
    reason: Option<String>,
    /// The result message exactly ...
    message: Option<String>,
    /// ... or a regular expression it matches.
    message_matches: Option<String>,
    /// Events that must appear, in this order (others may come between).
    #[serde(default)]
    events: Vec<ExpectedEvent>,
    /// The state after the run, exactly ...
    state: Option<BTreeMap<String, String>>,
    /// ... or these entries among it.
    #[serde(default)]
    state_includes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedEvent {
    level: Option<String>,
    code: Option<String>,
    message: Option<String>,
    message_matches: Option<String>,
}

/// A case made ready to run: parsed values and compiled patterns.
struct Ready {
    case: Case,
    trigger: Trigger,
    limits: RunLimits,
    message_re: Option<regex::Regex>,
    event_res: Vec<Option<regex::Regex>>,
}

/// Reads and checks the cases; the error names the file, the case and the
/// field.
fn read_cases(path: &std::path::Path) -> Result<Vec<Ready>, String> {
    let where_ = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{where_}: {e}"))?;
    let file: CasesFile = toml::from_str(&text).map_err(|e| format!("{where_}: {e}"))?;
    if file.cases.is_empty() {
        return Err(format!(
            "{where_}: no [[case]] tables: each case has a name, what the run is told and an \
             [case.expect] table"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    file.cases
        .into_iter()
        .map(|case| {
            let at = |field: &str, why: String| {
                format!("{where_}: case '{}': {field}: {why}", case.name)
            };
            if !seen.insert(case.name.clone()) {
                return Err(format!("{where_}: case '{}' is named twice", case.name));
            }
            let trigger = match &case.trigger {
                Some(t) => t
                    .parse::<Trigger>()
                    .map_err(|_| at("trigger", format!("'{t}' is not a trigger (manual, schedule, retry, broadcast, follow-up, backfill, startup)")))?,
                None => Trigger::Manual,
            };
            let limits = RunLimits {
                timeout: args::duration(&case.timeout).map_err(|e| at("timeout", e))?,
                fuel: case.fuel,
                memory_bytes: args::size(&case.memory).map_err(|e| at("memory", e))?,
            };
            if let Some(outcome) = &case.expect.outcome
                && !["succeeded", "failed", "stopped", "cancelled"].contains(&outcome.as_str())
            {
                return Err(at(
                    "expect.outcome",
                    format!("'{outcome}' is not succeeded, failed, stopped or cancelled"),
                ));
            }
            let pattern = |field: &str, p: &Option<String>| {
                p.as_deref()
                    .map(regex::Regex::new)
                    .transpose()
                    .map_err(|e| at(field, e.to_string()))
            };
            let message_re = pattern("expect.message_matches", &case.expect.message_matches)?;
            let event_res = case
                .expect
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| pattern(&format!("expect.events[{i}].message_matches"), &e.message_matches))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Ready {
                case,
                trigger,
                limits,
                message_re,
                event_res,
            })
        })
        .collect()
}

/// The outcome's name and stop reason.
fn outcome_parts(outcome: &Outcome) -> (&'static str, Option<&'static str>) {
    match outcome {
        Outcome::Stopped { reason, .. } => ("stopped", Some(reason.as_str())),
        other => (other.kind(), None),
    }
}

/// Why the report falls short of the case, one line each; none if it passed.
fn check(ready: &Ready, report: &RunReport) -> Vec<String> {
    let expect = &ready.case.expect;
    let mut wrong = Vec::new();
    let (outcome, reason) = outcome_parts(&report.outcome);
    let message = report.outcome.message();
    if let Some(want) = &expect.outcome
        && want != outcome
    {
        wrong.push(format!(
            "outcome: expected {want}, got {outcome} ({message:?})"
        ));
    }
    if let Some(want) = &expect.reason
        && Some(want.as_str()) != reason
    {
        wrong.push(format!(
            "reason: expected {want}, got {}",
            reason.unwrap_or("none (the run was not stopped)")
        ));
    }
    if let Some(want) = &expect.message
        && want != message
    {
        wrong.push(format!("message: expected {want:?}, got {message:?}"));
    }
    if let Some(re) = &ready.message_re
        && !re.is_match(message)
    {
        wrong.push(format!("message: {message:?} does not match /{re}/"));
    }
    // The expected events, in order, each matched by a later event.
    let mut from = 0;
    for (i, want) in expect.events.iter().enumerate() {
        let matches = |e: &crate::runtime::Event| {
            want.level.as_deref().is_none_or(|l| {
                e.level.as_str() == l || (l == "warn" && e.level.as_str() == "warning")
            }) && want.code.as_deref().is_none_or(|c| e.code == c)
                && want.message.as_deref().is_none_or(|m| e.message == m)
                && ready.event_res[i]
                    .as_ref()
                    .is_none_or(|re| re.is_match(&e.message))
        };
        match report.events[from..].iter().position(matches) {
            Some(at) => from += at + 1,
            None => {
                let described = [
                    want.level.as_ref().map(|l| format!("level {l}")),
                    want.code.as_ref().map(|c| format!("code {c}")),
                    want.message.as_ref().map(|m| format!("message {m:?}")),
                    want.message_matches
                        .as_ref()
                        .map(|m| format!("message matching /{m}/")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
                wrong.push(format!(
                    "events[{i}]: no event with {described} (after the ones matched before it); \
                     the run logged {}",
                    report
                        .events
                        .iter()
                        .map(|e| format!("{} {} {:?}", e.level.as_str(), e.code, e.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                break;
            }
        }
    }
    if let Some(want) = &expect.state
        && *want != report.state
    {
        wrong.push(format!("state: expected {want:?}, got {:?}", report.state));
    }
    for (key, value) in &expect.state_includes {
        let got = report.state.get(key);
        if got != Some(value) {
            wrong.push(format!(
                "state_includes.{key}: expected {value:?}, got {got:?}"
            ));
        }
    }
    wrong
}

fn request(ready: &Ready) -> RunRequest {
    let case = &ready.case;
    RunRequest {
        context: RunContext {
            configuration_name: case
                .configuration
                .clone()
                .unwrap_or_else(|| case.name.clone()),
            run_id: uuid::Uuid::now_v7().to_string(),
            trigger: ready.trigger,
            attempt: case.attempt,
            scheduled_for: matches!(ready.trigger, Trigger::Schedule | Trigger::Backfill)
                .then(std::time::SystemTime::now),
            last_run: None,
            next_run: None,
            run_count: 0,
            properties: case.properties.clone(),
        },
        payload: case.payload.as_ref().map(|p| BroadcastPayload {
            target: p.target.clone(),
            text: p.text.clone(),
            data: p.data.clone().into_bytes(),
        }),
        limits: ready.limits,
        grants: Grants::default(),
        config: case.settings.clone(),
        secrets: Vec::new(),
        state: case.state.clone(),
        instance: InstanceInfo {
            name: "test".into(),
            roles: Vec::new(),
        },
        farm: None,
        cancel: CancelToken::new(),
        grace: Duration::from_secs(5),
    }
}

#[derive(Serialize)]
struct CaseResult<'a> {
    case: &'a str,
    passed: bool,
    problems: &'a [String],
    outcome: &'a str,
    message: &'a str,
    duration_us: u64,
    fuel: u64,
}

pub async fn run(a: TestArgs) -> anyhow::Result<u8> {
    let cases = match read_cases(&a.cases) {
        Ok(cases) => cases,
        Err(why) => {
            eprintln!("error: {why}");
            return Ok(exit::USAGE);
        }
    };
    let selected: Vec<&Ready> = cases
        .iter()
        .filter(|c| a.only.as_deref().is_none_or(|o| c.case.name.contains(o)))
        .collect();
    if selected.is_empty() {
        eprintln!(
            "error: no case's name contains '{}' (the cases: {})",
            a.only.as_deref().unwrap_or_default(),
            cases
                .iter()
                .map(|c| c.case.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(exit::USAGE);
    }
    let runtime = Runtime::new(EngineSettings {
        max_concurrent_runs: 1,
        load: a.load.limits(),
        ..Default::default()
    })?;
    let component: Component =
        match compile_cache::open_and_load(&runtime, &a.cache, &a.file, a.json).await {
            Ok((component, _)) => component,
            Err(code) => return Ok(code),
        };
    if !a.json {
        let info = component.info();
        println!(
            "{} {}  ({}, {} case(s))",
            shown(&info.identifier),
            shown(&info.version),
            component.origin(),
            selected.len()
        );
    }
    let mut failed = 0;
    for ready in selected.iter().copied() {
        let report = runtime.run(&component, request(ready)).await;
        let problems = check(ready, &report);
        if !problems.is_empty() {
            failed += 1;
        }
        let (outcome, _) = outcome_parts(&report.outcome);
        if a.json {
            let result = CaseResult {
                case: &ready.case.name,
                passed: problems.is_empty(),
                problems: &problems,
                outcome,
                message: report.outcome.message(),
                duration_us: report.duration.as_micros() as u64,
                fuel: report.fuel_consumed,
            };
            println!("{}", serde_json::to_string(&result)?);
        } else if problems.is_empty() {
            println!(
                "  ok      {}  ({outcome}, {:.2} ms, fuel {})",
                shown(&ready.case.name),
                report.duration.as_secs_f64() * 1e3,
                report.fuel_consumed
            );
        } else {
            println!("  FAILED  {}", shown(&ready.case.name));
            for problem in &problems {
                println!("          {}", shown(problem));
            }
        }
    }
    if !a.json {
        println!("{} passed, {failed} failed", selected.len() - failed);
    }
    Ok(if failed == 0 {
        exit::OK
    } else {
        exit::TASK_FAILED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases(text: &str) -> Result<Vec<Ready>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.toml");
        std::fs::write(&path, text).unwrap();
        read_cases(&path)
    }

    #[test]
    fn a_wrong_case_file_names_the_case_and_the_field() {
        let e = cases("[[case]]\nname = \"a\"\ntimeout = \"soon\"\n")
            .err()
            .unwrap();
        assert!(e.contains("case 'a': timeout:"), "{e}");
        let e = cases("[[case]]\nname = \"a\"\n[case.expect]\noutcome = \"fine\"\n")
            .err()
            .unwrap();
        assert!(e.contains("case 'a': expect.outcome: 'fine'"), "{e}");
        let e = cases("[[case]]\nname = \"a\"\n[case.expect]\nmessage_matches = \"(\"\n")
            .err()
            .unwrap();
        assert!(e.contains("case 'a': expect.message_matches:"), "{e}");
        let e = cases("[[case]]\nname = \"a\"\nproperty = {}\n")
            .err()
            .unwrap();
        assert!(e.contains("property"), "{e}");
        let e = cases("[[case]]\nname = \"a\"\n[[case]]\nname = \"a\"\n")
            .err()
            .unwrap();
        assert!(e.contains("case 'a' is named twice"), "{e}");
        assert!(cases("").err().unwrap().contains("no [[case]] tables"));
        let e = cases("[[case]]\nname = \"a\"\ntrigger = \"whenever\"\n")
            .err()
            .unwrap();
        assert!(e.contains("case 'a': trigger: 'whenever'"), "{e}");
    }
}
