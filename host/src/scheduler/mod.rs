//! When runs happen: schedules (interval, cron with time zone, one-off, the
//! RunOn + IntervalSeconds form) and the dispatcher that claims due slots.
//! Knows nothing of wasmtime: it hands runs to the runtime.

pub mod schedule;
