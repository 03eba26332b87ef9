//! The seam between deciding that a run happens and making it happen. The
//! scheduler decides *when* and hands each run to an [`Executor`]; what
//! stands behind it (the plugins folder on a serving instance, a script in
//! the scheduler's tests, a metering wrapper in the API) is not its concern.
//! It lives here, beside [`RunRequest`] and [`RunReport`] which it speaks,
//! so that both the scheduler and the plugins can reach it without one
//! depending on the other.

use super::{RunReport, RunRequest};

/// Runs one task execution; the scheduler's only way to reach components.
#[async_trait::async_trait]
pub trait Executor: Send + Sync {
    async fn execute(&self, implementation: &str, request: RunRequest) -> Execution;
    /// Whether it can run `implementation` now. An executor that cannot
    /// tell says it serves everything.
    fn availability(&self, implementation: &str) -> Availability {
        let _ = implementation;
        Availability::Serves
    }
}

/// Whether an [`Executor`] can run an identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// A component serves it.
    Serves,
    /// None yet, but components are still being compiled: one may be it.
    Loading,
    /// No component implements it here.
    Lacks,
}

/// What an [`Executor`] did.
pub enum Execution {
    /// No loaded component implements the identifier.
    Missing,
    /// The run happened; `version` is the component's own version.
    Ran {
        report: Box<RunReport>,
        version: String,
    },
}
