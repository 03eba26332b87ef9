//! When runs happen: the pure decision of what to do with a due slot (the
//! schedules themselves are [`crate::model::Schedule`]), the dispatcher that
//! claims slots in the store and hands runs to an
//! [`Executor`](crate::runtime::Executor), and the web farm. Knows nothing
//! of wasmtime, nor of the plugins folder behind the executor.

pub mod dispatcher;
pub mod farm;
pub mod plan;
pub mod trace;

pub use dispatcher::{Dispatcher, DispatcherConfig, LOOK_AHEAD, ManualStart};
