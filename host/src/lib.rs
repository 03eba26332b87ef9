//! cronwerk: a scheduled-task host whose task implementations are
//! WebAssembly components.
//!
//! Data flows one way: [`runtime`] decides how one run happens (sandbox,
//! limits, outcome); the CLI in [`cli`] drives it.

pub mod cli;
pub mod runtime;
