//! When runs happen: schedules (interval, cron with time zone, one-off, the
//! RunOn + IntervalSeconds form), the pure decision of what to do with a due
//! slot, and the dispatcher that claims slots in the store and hands runs to
//! an [`Executor`](crate::runtime::Executor). Knows nothing of wasmtime, nor
//! of the plugins folder behind the executor.

pub mod dispatcher;
pub mod farm;
pub mod plan;

pub use dispatcher::{Dispatcher, DispatcherConfig, ManualStart};
