//! Host-side bindings generated from `wit/`: the `scheduled-task` world of
//! every contract version the host links, side by side. Each version's
//! interfaces have their own names (`cronwerk:task/log@0.1.0`,
//! `...@0.2.0`), so one linker holds them all and each component binds to
//! the version it was built against.

/// `cronwerk:task@0.1.0`, frozen in `wit/0.1.0/`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "scheduled-task",
        exports: { default: async },
        // Broadcasting writes to the shared store; every other import is local.
        imports: { "cronwerk:task/farm.broadcast": async },
    });
}

/// `cronwerk:task@0.2.0`, the current version in `wit/`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "scheduled-task",
        exports: { default: async },
        imports: { "cronwerk:task/farm.broadcast": async },
    });
}
