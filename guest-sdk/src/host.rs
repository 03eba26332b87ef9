//! The one place the SDK reaches the host. Inside a component (wasm) each
//! call goes to cronwerk through the generated bindings; in a native build
//! (`cargo test` of a task) it goes to the [`TestHost`](crate::testing::TestHost)
//! running the task, and without one it panics saying so, instead of
//! reaching the bindings' `unreachable!()`, which aborts the test binary.

#[cfg(target_family = "wasm")]
mod imp {
    use crate::bindings::cronwerk::task::{
        cancellation, config, farm, instance, log, state, types,
    };

    pub fn log_write(level: log::Level, code: &str, message: &str) {
        log::write(level, code, message)
    }
    pub fn state_get(key: &str) -> Option<String> {
        state::get(key)
    }
    pub fn state_set(key: &str, value: &str) -> Result<(), String> {
        state::set(key, value)
    }
    pub fn state_remove(key: &str) {
        state::remove(key)
    }
    pub fn state_keys() -> Vec<String> {
        state::keys()
    }
    pub fn config_get(key: &str) -> Option<String> {
        config::get(key)
    }
    pub fn config_get_all() -> Vec<(String, String)> {
        config::get_all()
    }
    pub fn is_cancelled() -> bool {
        cancellation::is_cancelled()
    }
    pub fn broadcast(identifier: &str, payload: &types::Payload) -> Result<String, String> {
        farm::broadcast(identifier, payload)
    }
    pub fn instance_name() -> String {
        instance::name()
    }
    pub fn instance_roles() -> Vec<String> {
        instance::roles()
    }
}

#[cfg(not(target_family = "wasm"))]
mod imp {
    use crate::bindings::cronwerk::task::{log, types};
    use crate::testing::with_host;

    pub fn log_write(level: log::Level, code: &str, message: &str) {
        with_host("log::write", |h| h.log(level, code, message))
    }
    pub fn state_get(key: &str) -> Option<String> {
        with_host("state::get", |h| h.state.get(key).cloned())
    }
    pub fn state_set(key: &str, value: &str) -> Result<(), String> {
        with_host("state::set", |h| h.set_state(key, value))
    }
    pub fn state_remove(key: &str) {
        with_host("state::remove", |h| {
            h.state.remove(key);
        })
    }
    pub fn state_keys() -> Vec<String> {
        with_host("state::keys", |h| h.state.keys().cloned().collect())
    }
    pub fn config_get(key: &str) -> Option<String> {
        with_host("config::get", |h| h.settings.get(key).cloned())
    }
    pub fn config_get_all() -> Vec<(String, String)> {
        with_host("config::get_all", |h| {
            h.settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }
    pub fn is_cancelled() -> bool {
        with_host("cancellation::is_cancelled", |h| h.cancelled)
    }
    pub fn broadcast(identifier: &str, payload: &types::Payload) -> Result<String, String> {
        with_host("farm::broadcast", |h| h.broadcast(identifier, payload))
    }
    pub fn instance_name() -> String {
        with_host("instance::name", |h| h.instance.clone())
    }
    pub fn instance_roles() -> Vec<String> {
        with_host("instance::roles", |h| h.roles.clone())
    }
}

pub(crate) use imp::*;
