//! Facts about the cronwerk instance running the task.

use crate::bindings::cronwerk::task::instance as raw;

/// The instance's name.
pub fn name() -> String {
    raw::name()
}

/// The instance's roles, e.g. `edit`.
pub fn roles() -> Vec<String> {
    raw::roles()
}
