//! cronwerk: a scheduled-task host whose task implementations are
//! WebAssembly components.
//!
//! Data flows one way: [`plugins`] turn files into ready components,
//! [`scheduler`] decides when, [`runtime`] decides how one run happens,
//! [`store`] records what happened, in the terms of [`model`]. The HTTP API
//! and dashboard in [`api`] drive them; [`instance`] assembles all of it
//! into one serving instance, and the CLI in [`cli`] starts that or drives
//! the rest directly, the CLI and the API through the checks in [`spec`].
//!
//! No module uses one above it: `model` at the bottom, then `runtime` and
//! `store`, `plugins`, `scheduler`, `api`, `instance`, `cli`.

pub mod api;
pub mod cli;
pub mod instance;
pub mod model;
pub mod plugins;
pub mod runtime;
pub mod scheduler;
pub mod spec;
pub mod store;
