//! Host-side bindings generated from `wit/`: the `scheduled-task` world.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "scheduled-task",
    exports: { default: async },
    // Broadcasting writes to the shared store; every other import is local.
    imports: { "cronwerk:task/farm.broadcast": async },
});

pub use self::cronwerk::task::types::{Datetime, Payload, RunContext as WitRunContext, Trigger};

/// The interface name a task component must export.
pub const TASK_EXPORT: &str = "cronwerk:task/task@0.1.0";
/// The WIT package version this host implements.
pub const CONTRACT_VERSION: &str = "0.1.0";
