//! `Acme.HelloScheduledTask`: the reference documentation's first task. Logs
//! the warning "Hello from my scheduled task!" with event code
//! `NOTIFICATION` and succeeds.

use cronwerk_guest::{Context, Error, ScheduledTask, TaskInfo};

struct Hello;

impl ScheduledTask for Hello {
    fn info() -> TaskInfo {
        TaskInfo::new("Acme.HelloScheduledTask", "Hello scheduled task")
            .description("Logs a greeting to the event log")
            .version(env!("CARGO_PKG_VERSION"))
            .default_schedule("every 10s")
    }

    fn execute(ctx: &Context) -> Result<String, Error> {
        cronwerk_guest::warn!(code: "NOTIFICATION", "Hello from my scheduled task!");
        // An optional greeting shows how properties reach a task.
        if let Some(greeting) = ctx.property("greeting") {
            cronwerk_guest::info!(code: "GREETING", "{greeting}, {}!", ctx.configuration_name());
        }
        Ok(String::new())
    }
}

cronwerk_guest::export_task!(Hello);
