//! cronwerk: a scheduled-task host whose task implementations are
//! WebAssembly components.
//!
//! Data flows one way: [`plugins`] turn files into ready components,
//! [`scheduler`] decides when, [`runtime`] decides how one run happens,
//! [`store`] records what happened. The CLI in [`cli`] and the HTTP API and
//! dashboard in [`api`] drive them, both through the checks in [`spec`].

pub mod api;
pub mod cli;
pub mod model;
pub mod plugins;
pub mod runtime;
pub mod scheduler;
pub mod spec;
pub mod store;
