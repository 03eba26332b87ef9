//! __IDENTIFIER__: a cronwerk scheduled task.
//!
//! `describe` tells the host who this task is; `execute` does one run. The
//! host's interfaces (log, state, config, cancellation, farm, instance) are
//! Rust modules generated from `wit/task.wit` by the macro below.

wit_bindgen::generate!({
    path: "wit",
    world: "scheduled-task",
});

use cronwerk::task::log::{self, Level};
use cronwerk::task::state;
use cronwerk::task::types::{Payload, RunContext, TaskInfo};

struct Task;

impl exports::cronwerk::task::task::Guest for Task {
    /// Called once when the host loads the component. Configurations refer
    /// to the task by `identifier`; keep it stable across versions.
    fn describe() -> TaskInfo {
        TaskInfo {
            identifier: "__IDENTIFIER__".into(),
            display_name: "__DISPLAY_NAME__".into(),
            description: "Greets the configuration it runs for and counts its runs.".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            default_schedule: Some("every 1m".into()),
        }
    }

    /// One run. `Ok(message)` is success (an empty message means nothing to
    /// report); `Err(message)` is failure. Either message is the run's result.
    fn execute(context: RunContext, _payload: Option<Payload>) -> Result<String, String> {
        // Properties are set per configuration (`--property greeting=Hi`).
        let greeting = property(&context, "greeting").unwrap_or("Hello");
        if greeting.trim().is_empty() {
            return Err(
                "property 'greeting' is empty: set a word such as Hi, or leave it out".into(),
            );
        }

        // State is kept per configuration from one run to the next.
        let runs = state::get("runs")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        state::set("runs", &runs.to_string())
            .map_err(|e| format!("cannot store the run count: {e}"))?;

        // Events land in the host's event log, tagged with this run's id.
        let name = &context.configuration_name;
        log::write(Level::Info, "GREETING", &format!("{greeting}, {name}!"));

        Ok(format!("greeted {name}, run {runs}"))
    }
}

/// The value of the configuration's property `key`, if set.
fn property<'a>(context: &'a RunContext, key: &str) -> Option<&'a str> {
    context
        .properties
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

export!(Task);
