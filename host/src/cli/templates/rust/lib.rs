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

/// `cargo test` runs `execute` against an in-memory host: no WebAssembly,
/// no cronwerk needed.
#[cfg(test)]
mod tests {
    use super::Task;
    use cronwerk_guest::testing::TestHost;

    #[test]
    fn greets_and_counts_its_runs() {
        let mut host = TestHost::new()
            .configuration("nightly")
            .property("greeting", "Hi")
            .state("runs", "41");
        let run = host.run::<Task>();
        assert_eq!(run.result, Ok("greeted nightly, run 42".to_owned()));
        assert_eq!(run.events.len(), 1);
        assert_eq!(run.events[0].code, "GREETING");
        assert_eq!(run.events[0].message, "Hi, nightly!");
        assert_eq!(host.state_of("runs"), Some("42"));
    }

    #[test]
    fn an_empty_greeting_fails_and_counts_nothing() {
        let mut host = TestHost::new().property("greeting", " ");
        let run = host.run::<Task>();
        let error = run.result.unwrap_err();
        assert!(error.starts_with("property 'greeting' is empty"), "{error}");
        assert_eq!(host.state_of("runs"), None);
    }
}
