//! When runs happen: schedules (interval, cron with time zone, one-off, the
//! RunOn + IntervalSeconds form), the pure decision of what to do with a due
//! slot, and the dispatcher that claims slots in the store and hands runs to
//! an [`Executor`]. Knows nothing of wasmtime.

pub mod dispatcher;
#[cfg(test)]
mod dispatcher_tests;
pub mod farm;
pub mod plan;

pub use dispatcher::{Dispatcher, DispatcherConfig, ManualStart};
