//! __IDENTIFIER__: a cronwerk scheduled task.
//!
//! `info` tells the host who this task is; `execute` does one run. The
//! host's interfaces (log, state, config, cancellation, farm, instance)
//! come through the SDK in `cronwerk-guest/` (`cargo doc --open` shows it).

use cronwerk_guest::{Context, Error, ScheduledTask, TaskInfo, bail, state};

struct Task;

impl ScheduledTask for Task {
    /// Called once when the host loads the component. Configurations refer
    /// to the task by its identifier; keep it stable across versions.
    fn info() -> TaskInfo {
        TaskInfo::new("__IDENTIFIER__", "__DISPLAY_NAME__")
            .description("Greets the configuration it runs for and counts its runs.")
            .version(env!("CARGO_PKG_VERSION"))
            .default_schedule("every 1m")
    }

    /// One run. `Ok(message)` is success (an empty message means nothing to
    /// report); `Err(error)` is failure. Either message is the run's result.
    fn execute(ctx: &Context) -> Result<String, Error> {
        // Properties are set per configuration (`--property greeting=Hi`).
        let greeting = ctx.property_or("greeting", "Hello");
        if greeting.trim().is_empty() {
            bail!("property 'greeting' is empty: set a word such as Hi, or leave it out");
        }

        // State is kept per configuration from one run to the next.
        let runs = state::get_parsed::<u64>("runs")?.unwrap_or(0) + 1;
        state::set("runs", runs)?;

        // Events land in the host's event log, tagged with this run's id.
        let name = ctx.configuration_name();
        cronwerk_guest::info!(code: "GREETING", "{greeting}, {name}!");

        Ok(format!("greeted {name}, run {runs}"))
    }
}

cronwerk_guest::export_task!(Task);
