//! Settings the operator scoped to this task's identifier, shared by all of
//! its configurations (a configuration's own values are its properties).

use crate::host;

/// One setting.
pub fn get(key: &str) -> Option<String> {
    host::config_get(key)
}

/// All settings, sorted by key.
pub fn get_all() -> Vec<(String, String)> {
    host::config_get_all()
}
