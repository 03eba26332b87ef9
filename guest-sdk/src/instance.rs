//! Facts about the cronwerk instance running the task.

use crate::host;

/// The instance's name.
pub fn name() -> String {
    host::instance_name()
}

/// The instance's roles, e.g. `edit`.
pub fn roles() -> Vec<String> {
    host::instance_roles()
}
