//! Running a task's `execute` in a plain `cargo test`, with an in-memory
//! host instead of cronwerk: properties, settings, state in and out, the
//! events it logs, cancellation, the instance, and a farm that records
//! broadcasts. No WebAssembly, no cronwerk installed.
//!
//! ```
//! use cronwerk_guest::testing::TestHost;
//! use cronwerk_guest::{Context, Error, ScheduledTask, TaskInfo, state};
//!
//! struct Counter;
//!
//! impl ScheduledTask for Counter {
//!     fn info() -> TaskInfo {
//!         TaskInfo::new("Acme.Counter", "Counter")
//!     }
//!     fn execute(ctx: &Context) -> Result<String, Error> {
//!         let runs = state::get_parsed::<u64>("runs")?.unwrap_or(0) + 1;
//!         state::set("runs", runs)?;
//!         cronwerk_guest::info!(code: "COUNTED", "{} ran {runs} times", ctx.configuration_name());
//!         Ok(format!("run {runs}"))
//!     }
//! }
//!
//! let mut host = TestHost::new().configuration("nightly").state("runs", "41");
//! let run = host.run::<Counter>();
//! assert_eq!(run.result, Ok("run 42".to_owned()));
//! assert_eq!(host.state_of("runs"), Some("42"));
//! assert_eq!(run.events[0].code, "COUNTED");
//! assert_eq!(run.events[0].message, "nightly ran 42 times");
//! ```
//!
//! The state keeps the host's limits (keys 1 to 256 bytes, values up to
//! 64 KiB, 1 MiB in all) and answers as the host does when one is crossed.
//! What this does not reproduce: the sandbox (files, network, clocks and
//! randomness are the test process's own), fuel, memory and time limits, and
//! stdout/stderr capture. For those, run the component itself:
//! `cronwerk exec` or `cronwerk test`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bindings::cronwerk::task::log::Level;
use crate::bindings::cronwerk::task::types;
use crate::{Context, ScheduledTask, Trigger};

/// The host's state limits (the same as cronwerk's).
const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;
const MAX_TOTAL_BYTES: usize = 1024 * 1024;

/// An event the task logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub level: Level,
    /// Empty when the task gave none.
    pub code: String,
    pub message: String,
}

/// A broadcast the task asked the farm for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub identifier: String,
    pub target: String,
    pub text: String,
    pub data: Vec<u8>,
}

/// How one run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// `Ok(message)` or `Err(message)`, as cronwerk would record it.
    pub result: Result<String, String>,
    /// The events it logged, in order.
    pub events: Vec<Event>,
    /// The broadcasts it made.
    pub broadcasts: Vec<Broadcast>,
}

/// An in-memory host for a task's tests. Build it with what the run is
/// told, call [`run`](Self::run), then read the outcome and the state.
/// The state carries over from one `run` to the next, as between runs of a
/// configuration.
#[derive(Debug, Clone)]
pub struct TestHost {
    context: types::RunContext,
    payload: Option<types::Payload>,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) state: BTreeMap<String, String>,
    pub(crate) cancelled: bool,
    pub(crate) instance: String,
    pub(crate) roles: Vec<String>,
    farm: bool,
    events: Vec<Event>,
    broadcasts: Vec<Broadcast>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

/// Calls `f` on the host running a task on this thread; panics, naming the
/// call, where there is none.
pub(crate) fn with_host<R>(call: &str, f: impl FnOnce(&mut TestHost) -> R) -> R {
    CURRENT.with(|current| match current.borrow_mut().as_mut() {
        Some(host) => f(host),
        None => panic!(
            "cronwerk_guest: `{call}` reached for cronwerk's host, which only a component \
             running in cronwerk has; in a test, run the task with \
             `cronwerk_guest::testing::TestHost::new().run::<YourTask>()`"
        ),
    })
}

fn datetime(t: SystemTime) -> types::Datetime {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    types::Datetime {
        seconds: d.as_secs() as i64,
        nanoseconds: d.subsec_nanos(),
    }
}

impl TestHost {
    /// A manual run (attempt 1) of configuration `test` of `Test.Task`, on
    /// instance `test`, with a farm, no properties, settings or state.
    pub fn new() -> Self {
        TestHost {
            context: types::RunContext {
                configuration_name: "test".into(),
                identifier: "Test.Task".into(),
                run_id: "00000000-0000-7000-8000-000000000000".into(),
                trigger: Trigger::Manual,
                attempt: 1,
                deadline: None,
                scheduled_for: None,
                last_run: None,
                next_run: None,
                run_count: 0,
                instance_name: "test".into(),
                properties: Vec::new(),
            },
            payload: None,
            settings: BTreeMap::new(),
            state: BTreeMap::new(),
            cancelled: false,
            instance: "test".into(),
            roles: Vec::new(),
            farm: true,
            events: Vec::new(),
            broadcasts: Vec::new(),
        }
    }

    /// The configuration's name.
    pub fn configuration(mut self, name: &str) -> Self {
        self.context.configuration_name = name.into();
        self
    }

    /// The identifier the run is for.
    pub fn identifier(mut self, identifier: &str) -> Self {
        self.context.identifier = identifier.into();
        self
    }

    /// Why the run happens, and which attempt it is.
    pub fn trigger(mut self, trigger: Trigger, attempt: u32) -> Self {
        self.context.trigger = trigger;
        self.context.attempt = attempt;
        self
    }

    /// A scheduled run of the slot at `at`.
    pub fn scheduled_for(mut self, at: SystemTime) -> Self {
        self.context.trigger = Trigger::Schedule;
        self.context.scheduled_for = Some(datetime(at));
        self
    }

    /// The run's wall-time limit ends `left` from now.
    pub fn time_left(mut self, left: Duration) -> Self {
        self.context.deadline = Some(datetime(SystemTime::now() + left));
        self
    }

    /// A property of the configuration.
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.context.properties.push((key.into(), value.into()));
        self
    }

    /// A setting of the identifier (`config::get`).
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }

    /// A state entry the run starts with.
    pub fn state(mut self, key: &str, value: &str) -> Self {
        self.state.insert(key.into(), value.into());
        self
    }

    /// The instance's name and roles.
    pub fn instance(mut self, name: &str, roles: &[&str]) -> Self {
        self.instance = name.into();
        self.context.instance_name = name.into();
        self.roles = roles.iter().map(|r| r.to_string()).collect();
        self
    }

    /// The run is asked to stop: `is_cancelled` answers true.
    pub fn cancelled(mut self) -> Self {
        self.cancelled = true;
        self
    }

    /// A broadcast run with this payload.
    pub fn payload(mut self, target: &str, text: &str, data: &[u8]) -> Self {
        self.context.trigger = Trigger::Broadcast;
        self.payload = Some(types::Payload {
            target: target.into(),
            text: text.into(),
            data: data.to_vec(),
        });
        self
    }

    /// No farm, as under `cronwerk exec`: `farm::broadcast` fails.
    pub fn without_farm(mut self) -> Self {
        self.farm = false;
        self
    }

    /// Runs `T::execute` once against this host. The state it leaves is
    /// kept for the next run; a panic in the task is the test's panic.
    pub fn run<T: ScheduledTask>(&mut self) -> TestRun {
        let ctx = Context::new(self.context.clone(), self.payload.clone());
        let mut host = self.clone();
        host.events.clear();
        host.broadcasts.clear();
        CURRENT.with(|c| *c.borrow_mut() = Some(host));
        // Put back even if the task panics, so the next test on this
        // thread starts clean.
        struct Restore<'a>(&'a mut TestHost);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(host) = CURRENT.with(|c| c.borrow_mut().take()) {
                    *self.0 = host;
                }
            }
        }
        let restore = Restore(self);
        let result = T::execute(&ctx).map_err(|e| e.to_string());
        drop(restore);
        self.context.run_count += 1;
        TestRun {
            result,
            events: self.events.clone(),
            broadcasts: self.broadcasts.clone(),
        }
    }

    /// The state as the runs so far left it.
    pub fn state_of(&self, key: &str) -> Option<&str> {
        self.state.get(key).map(String::as_str)
    }

    /// Every state entry, sorted by key.
    pub fn states(&self) -> &BTreeMap<String, String> {
        &self.state
    }

    pub(crate) fn log(&mut self, level: Level, code: &str, message: &str) {
        self.events.push(Event {
            level,
            code: code.into(),
            message: message.into(),
        });
    }

    pub(crate) fn set_state(&mut self, key: &str, value: &str) -> Result<(), String> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "state key must be 1 to {MAX_KEY_BYTES} bytes, got {}",
                key.len()
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "state value for '{key}' is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            ));
        }
        let total: usize = self.state.iter().map(|(k, v)| k.len() + v.len()).sum();
        let old = self.state.get(key).map_or(0, |v| key.len() + v.len());
        let total = total - old + key.len() + value.len();
        if total > MAX_TOTAL_BYTES {
            return Err(format!(
                "state would hold {total} bytes; the limit is {MAX_TOTAL_BYTES} per configuration"
            ));
        }
        self.state.insert(key.into(), value.into());
        Ok(())
    }

    pub(crate) fn broadcast(
        &mut self,
        identifier: &str,
        payload: &types::Payload,
    ) -> Result<String, String> {
        if !self.farm {
            return Err("no farm: this run was started without one (cronwerk exec)".into());
        }
        self.broadcasts.push(Broadcast {
            identifier: identifier.into(),
            target: payload.target.clone(),
            text: payload.text.clone(),
            data: payload.data.clone(),
        });
        Ok(format!("test-broadcast-{}", self.broadcasts.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, TaskInfo, bail, cancellation, config, farm, instance, state};

    /// Uses every host interface once.
    struct Everything;

    impl ScheduledTask for Everything {
        fn info() -> TaskInfo {
            TaskInfo::new("Test.Everything", "Everything")
        }
        fn execute(ctx: &Context) -> Result<String, Error> {
            if cancellation::is_cancelled() {
                bail!("cancelled before starting");
            }
            let folder = config::get("folder").unwrap_or_default();
            state::set("seen", ctx.property_or("p", "-"))?;
            crate::warn!(code: "W", "{} on {} {:?}", folder, instance::name(), instance::roles());
            let id = farm::broadcast("Test.Other", "t", "x", b"d")?;
            Ok(format!("{id} {}", state::keys().join(",")))
        }
    }

    #[test]
    fn every_interface_answers_from_the_test_host() {
        let mut host = TestHost::new()
            .property("p", "v")
            .setting("folder", "/data")
            .state("old", "1")
            .instance("web-1", &["edit"]);
        let run = host.run::<Everything>();
        assert_eq!(run.result, Ok("test-broadcast-1 old,seen".to_owned()));
        assert_eq!(
            run.events,
            [Event {
                level: Level::Warning,
                code: "W".into(),
                message: "/data on web-1 [\"edit\"]".into(),
            }]
        );
        assert_eq!(run.broadcasts[0].identifier, "Test.Other");
        assert_eq!(run.broadcasts[0].data, b"d");
        assert_eq!(host.state_of("seen"), Some("v"));
        // The next run starts from the state this one left, with no events.
        let again = host.run::<Everything>();
        assert_eq!(again.events.len(), 1);
        assert!(again.result.is_ok());
    }

    #[test]
    fn cancellation_and_a_missing_farm_are_what_the_task_sees() {
        let run = TestHost::new().cancelled().run::<Everything>();
        assert_eq!(run.result, Err("cancelled before starting".to_owned()));
        let run = TestHost::new().without_farm().run::<Everything>();
        let error = run.result.unwrap_err();
        assert!(error.contains("no farm"), "{error}");
    }

    #[test]
    fn the_state_keeps_the_hosts_limits() {
        let mut host = TestHost::new();
        assert!(
            host.set_state("", "x")
                .unwrap_err()
                .contains("1 to 256 bytes")
        );
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(host.set_state("k", &big).unwrap_err().contains("65536"));
        let value = "x".repeat(MAX_VALUE_BYTES);
        for i in 0..15 {
            host.set_state(&format!("k{i:02}"), &value).unwrap();
        }
        let e = host.set_state("k99", &value).unwrap_err();
        assert!(e.contains("per configuration"), "{e}");
    }

    #[test]
    fn a_host_call_outside_a_test_host_panics_saying_what_to_do() {
        let panic = std::panic::catch_unwind(|| state::get("x")).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("`state::get`") && message.contains("TestHost::new().run::<"),
            "{message}"
        );
    }

    /// Panics half way.
    struct Panics;

    impl ScheduledTask for Panics {
        fn info() -> TaskInfo {
            TaskInfo::new("Test.Panics", "Panics")
        }
        fn execute(_: &Context) -> Result<String, Error> {
            state::set("before", 1)?;
            panic!("boom");
        }
    }

    #[test]
    fn a_panicking_task_leaves_no_host_behind_for_the_next_test() {
        let mut host = TestHost::new();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host.run::<Panics>();
        }));
        assert!(panicked.is_err());
        assert_eq!(host.state_of("before"), Some("1"));
        assert!(std::panic::catch_unwind(instance::name).is_err());
    }
}
