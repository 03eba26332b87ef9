//! [`Context`]: what a run knows about itself.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;
use crate::bindings::cronwerk::task::types;

pub use types::Trigger;

/// Data sent with a broadcast run.
pub type Payload = types::Payload;

/// The run being executed: configuration, trigger, times and properties.
pub struct Context {
    raw: types::RunContext,
    payload: Option<Payload>,
}

impl Context {
    #[doc(hidden)]
    pub fn new(raw: types::RunContext, payload: Option<Payload>) -> Self {
        Context { raw, payload }
    }

    /// The configuration's name, e.g. `Nightly cleanup`.
    pub fn configuration_name(&self) -> &str {
        &self.raw.configuration_name
    }

    /// The implementation identifier this run is for.
    pub fn identifier(&self) -> &str {
        &self.raw.identifier
    }

    /// Unique id of this run.
    pub fn run_id(&self) -> &str {
        &self.raw.run_id
    }

    /// Why this run happens.
    pub fn trigger(&self) -> Trigger {
        self.raw.trigger
    }

    /// Which attempt this is: 1 for a first run, 2 for its first retry, ...
    pub fn attempt(&self) -> u32 {
        self.raw.attempt
    }

    /// When the host stops the run for lasting too long (its wall-time
    /// limit). A task working in batches can stop cleanly before it.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.raw.deadline.map(to_system_time)
    }

    /// The time left before [`deadline`](Self::deadline), zero once it has
    /// passed; `None` when the run has no deadline.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline().map(|d| {
            d.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }

    /// The schedule slot this run belongs to (none for manual runs).
    pub fn scheduled_for(&self) -> Option<SystemTime> {
        self.raw.scheduled_for.map(to_system_time)
    }

    /// When the previous run started.
    pub fn last_run(&self) -> Option<SystemTime> {
        self.raw.last_run.map(to_system_time)
    }

    /// When the schedule fires next.
    pub fn next_run(&self) -> Option<SystemTime> {
        self.raw.next_run.map(to_system_time)
    }

    /// Runs of this configuration before this one.
    pub fn run_count(&self) -> u64 {
        self.raw.run_count
    }

    /// Name of the instance executing the run.
    pub fn instance_name(&self) -> &str {
        &self.raw.instance_name
    }

    /// A custom property of the configuration.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.raw
            .properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A property, or `default` when it is not set.
    pub fn property_or<'a>(&'a self, name: &str, default: &'a str) -> &'a str {
        self.property(name).unwrap_or(default)
    }

    /// A property that must be set; the error names it.
    pub fn require_property(&self, name: &str) -> Result<&str, Error> {
        self.property(name).ok_or_else(|| {
            Error::msg(format!(
                "property '{name}' is not set: add it to the configuration"
            ))
        })
    }

    /// A property parsed as `T`; `Ok(None)` when it is not set, and an error
    /// naming the property and the value when it does not parse.
    pub fn parse_property<T>(&self, name: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.property(name) {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|e| Error::msg(format!("property '{name}' = '{text}' is not valid: {e}"))),
        }
    }

    /// All properties, in the order the host sent them.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.raw
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The payload of a broadcast run; of a follow-up run, the ended run as
    /// JSON text (target `follow-up`).
    pub fn payload(&self) -> Option<&Payload> {
        self.payload.as_ref()
    }

    /// Whether the host asked this run to stop; poll it in long loops.
    pub fn is_cancelled(&self) -> bool {
        crate::cancellation::is_cancelled()
    }
}

fn to_system_time(d: types::Datetime) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(d.nanoseconds));
    if d.seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(d.seconds as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(d.seconds.unsigned_abs()) + nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(props: &[(&str, &str)]) -> Context {
        Context::new(
            types::RunContext {
                configuration_name: "c".into(),
                identifier: "A.B".into(),
                run_id: "r".into(),
                trigger: Trigger::Manual,
                attempt: 2,
                deadline: Some(types::Datetime {
                    seconds: 4_000_000_000,
                    nanoseconds: 0,
                }),
                scheduled_for: Some(types::Datetime {
                    seconds: 10,
                    nanoseconds: 5,
                }),
                last_run: None,
                next_run: None,
                run_count: 3,
                instance_name: "i".into(),
                properties: props
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            None,
        )
    }

    #[test]
    fn typed_property_access() {
        let c = ctx(&[("days", "7"), ("bad", "x")]);
        assert_eq!(c.property("days"), Some("7"));
        assert_eq!(c.property_or("none", "d"), "d");
        assert_eq!(c.parse_property::<u32>("days").unwrap(), Some(7));
        assert_eq!(c.parse_property::<u32>("none").unwrap(), None);
        let e = c.parse_property::<u32>("bad").unwrap_err().to_string();
        assert!(e.contains("'bad' = 'x'"), "{e}");
        assert!(
            c.require_property("none")
                .unwrap_err()
                .to_string()
                .contains("'none'")
        );
        assert_eq!(c.properties().count(), 2);
    }

    #[test]
    fn times_convert() {
        let c = ctx(&[]);
        assert_eq!(c.scheduled_for(), Some(UNIX_EPOCH + Duration::new(10, 5)));
        assert_eq!(c.run_count(), 3);
        assert_eq!(c.attempt(), 2);
        assert_eq!(
            c.deadline(),
            Some(UNIX_EPOCH + Duration::from_secs(4_000_000_000))
        );
        // A deadline decades away leaves decades.
        assert!(c.time_left().unwrap() > Duration::from_secs(3600 * 24 * 365));
    }
}
