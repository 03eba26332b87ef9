//! # cronwerk-guest: write cronwerk scheduled tasks in Rust
//!
//! A cronwerk task is a WebAssembly component that says who it is
//! ([`ScheduledTask::info`]) and does one run of work when asked
//! ([`ScheduledTask::execute`]). This crate gives you the trait to implement,
//! the macro that exports it, and typed access to everything the host offers.
//!
//! ## Your first task
//!
//! `Cargo.toml`:
//! ```toml
//! [package]
//! name = "my-task"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! cronwerk-guest = { path = "../guest-sdk" }
//! ```
//!
//! `src/lib.rs`:
//! ```no_run
//! use cronwerk_guest::{Context, Error, ScheduledTask, TaskInfo};
//!
//! struct Hello;
//!
//! impl ScheduledTask for Hello {
//!     fn info() -> TaskInfo {
//!         TaskInfo::new("Acme.HelloScheduledTask", "Hello scheduled task")
//!             .description("Logs a greeting")
//!             .version(env!("CARGO_PKG_VERSION"))
//!             .default_schedule("every 10s")
//!     }
//!
//!     fn execute(ctx: &Context) -> Result<String, Error> {
//!         let greeting = ctx.property_or("greeting", "Hello");
//!         cronwerk_guest::warn!(code: "NOTIFICATION", "{greeting} from my scheduled task!");
//!         Ok(String::new()) // empty message: plain success
//!     }
//! }
//!
//! cronwerk_guest::export_task!(Hello);
//! ```
//!
//! Build and try it:
//! ```text
//! rustup target add wasm32-wasip2
//! cargo build --release --target wasm32-wasip2
//! cronwerk exec target/wasm32-wasip2/release/my_task.wasm --property greeting=Hi
//! ```
//! Then copy the `.wasm` into the host's plugins folder.
//!
//! ## What a run may do
//! - **Result**: `Ok(message)` is success (an empty message means nothing to
//!   report), `Err(error)` is failure; either message becomes the run's
//!   *last result*. Use `?` on any `std::error::Error`, or [`bail!`].
//! - **Log**: [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`], each
//!   optionally with an event code: `info!(code: "SYNCED", "{n} rows")`.
//!   `println!`/`eprintln!` also land in the event log, as info/warning lines.
//! - **Why and when**: [`Context::trigger`] (schedule, manual, retry,
//!   follow-up, backfill, startup, broadcast), [`Context::attempt`], and
//!   [`Context::time_left`] before the run's wall-time limit stops it.
//! - **Properties** of the configuration: [`Context::property`],
//!   [`Context::parse_property`], [`Context::require_property`].
//! - **Config** scoped to the task's identifier: [`config::get`].
//! - **State** kept between runs of one configuration: [`state::get`],
//!   [`state::set`] (keys ≤ 256 B, values ≤ 64 KiB, ≤ 1 MiB in all).
//! - **Cancellation**: poll [`Context::is_cancelled`] in long loops and return
//!   early; a task that ignores it is stopped after the grace period.
//! - **Farm**: [`farm::broadcast`] asks every instance to run a task once.
//! - **Instance**: [`instance::name`], [`instance::roles`].
//!
//! ## Testing
//! `cargo test` runs natively, where there is no cronwerk: run the task's
//! `execute` with [`testing::TestHost`], an in-memory host (properties,
//! settings, state in and out, logged events, cancellation, a farm that
//! records broadcasts). A host call made outside one panics saying so.
//! To test the built component in the real sandbox, use `cronwerk exec`.
//!
//! ## What a run may not do
//! Nothing is granted by default: no files, no network, no environment
//! variables. The operator grants directories per configuration (they appear
//! at the path the grant names). Every run has a wall-time limit, a memory
//! limit and possibly a fuel limit; crossing one stops the run with an
//! outcome naming the limit.

// The generated bindings name this crate by its public path, also from inside it.
extern crate self as cronwerk_guest;

mod context;
mod error;
mod host;
mod info;

pub mod cancellation;
pub mod config;
pub mod farm;
pub mod instance;
pub mod log;
pub mod state;
// Tests run natively; inside a component the host is cronwerk itself.
#[cfg(not(target_family = "wasm"))]
pub mod testing;

pub use context::{Context, Payload, Trigger};
pub use error::Error;
pub use info::TaskInfo;

/// Bindings generated from cronwerk's WIT package; used by [`export_task!`].
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "scheduled-task",
        pub_export_macro: true,
        export_macro_name: "__export_scheduled_task",
        default_bindings_module: "cronwerk_guest::bindings",
        runtime_path: "cronwerk_guest::__private::wit_bindgen::rt",
    });
}

/// A scheduled task. Implement this on a unit struct and export it with
/// [`export_task!`].
pub trait ScheduledTask {
    /// Who the task is. Called once when the host loads the component.
    fn info() -> TaskInfo;

    /// One run. `Ok(message)` is success, `Err(error)` failure.
    fn execute(ctx: &Context) -> Result<String, Error>;
}

/// Exports a [`ScheduledTask`] implementation as the component's `task`.
/// Use it once per component, at the crate root.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        const _: () = {
            struct __CronwerkTask;
            impl $crate::bindings::exports::cronwerk::task::task::Guest for __CronwerkTask {
                fn describe() -> $crate::bindings::cronwerk::task::types::TaskInfo {
                    $crate::__private::describe::<$task>()
                }
                fn execute(
                    context: $crate::bindings::cronwerk::task::types::RunContext,
                    payload: ::core::option::Option<$crate::bindings::cronwerk::task::types::Payload>,
                ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__private::execute::<$task>(context, payload)
                }
            }
            $crate::bindings::__export_scheduled_task!(__CronwerkTask with_types_in $crate::bindings);
        };
    };
}

/// Returns early with an [`Error`] built from a format string.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::Error::msg(::std::format!($($arg)+)))
    };
}

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::cronwerk::task::types;

    pub fn describe<T: crate::ScheduledTask>() -> types::TaskInfo {
        T::info().into_wit()
    }

    pub fn execute<T: crate::ScheduledTask>(
        context: types::RunContext,
        payload: Option<types::Payload>,
    ) -> Result<String, String> {
        let ctx = crate::Context::new(context, payload);
        T::execute(&ctx).map_err(|e| e.to_string())
    }
}
