//! What the host offers a task inside one run: the implementations of the
//! `log`, `cancellation`, `config`, `state`, `farm` and `instance` imports
//! (of every contract version),
//! plus the WASI and `wasi:http` contexts, the memory limiter and the count of
//! open files of the run's store.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::cancel::CancelToken;
use super::events::EventLog;
use super::http::HttpPolicy;
use super::limits::MemoryLimiter;
use super::limits::OpenFiles;
use crate::model::{BroadcastPayload, EventSource, InstanceInfo, Level};

/// Where `farm.broadcast` goes. Absent (as under `cronwerk exec`), the import
/// answers that no farm is configured.
#[async_trait::async_trait]
pub trait Farm: Send + Sync {
    /// Creates a broadcast of `identifier`; returns its id, or a message
    /// for the task saying why not.
    async fn broadcast(
        &self,
        identifier: &str,
        payload: BroadcastPayload,
    ) -> Result<String, String>;
}

/// Limits of the per-configuration key-value state.
pub const STATE_MAX_KEY_BYTES: usize = 256;
pub const STATE_MAX_VALUE_BYTES: usize = 64 * 1024;
pub const STATE_MAX_TOTAL_BYTES: usize = 1024 * 1024;

/// The key-value state a run reads and changes; the caller persists it.
#[derive(Debug, Clone, Default)]
pub struct TaskState {
    entries: BTreeMap<String, String>,
}

impl TaskState {
    pub fn new(entries: BTreeMap<String, String>) -> Self {
        TaskState { entries }
    }

    pub fn into_entries(self) -> BTreeMap<String, String> {
        self.entries
    }

    fn total_bytes(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    pub fn set(&mut self, key: String, value: String) -> Result<(), String> {
        // Kept as the store will keep it (NUL becomes U+FFFD), so that two
        // keys differing only there are one key here too, instead of two
        // rows that collide when the run's state is written.
        let key = crate::model::text::storable(&key).into_owned();
        let value = crate::model::text::storable(&value).into_owned();
        if key.is_empty() || key.len() > STATE_MAX_KEY_BYTES {
            return Err(format!(
                "state key must be 1 to {STATE_MAX_KEY_BYTES} bytes, got {}",
                key.len()
            ));
        }
        if value.len() > STATE_MAX_VALUE_BYTES {
            return Err(format!(
                "state value for '{key}' is {} bytes; the limit is {STATE_MAX_VALUE_BYTES}",
                value.len()
            ));
        }
        let old = self.entries.get(&key).map_or(0, |v| key.len() + v.len());
        let total = self.total_bytes() - old + key.len() + value.len();
        if total > STATE_MAX_TOTAL_BYTES {
            return Err(format!(
                "state would hold {total} bytes; the limit is {STATE_MAX_TOTAL_BYTES} per configuration"
            ));
        }
        self.entries.insert(key, value);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<String> {
        let key = crate::model::text::storable(key);
        self.entries.get(key.as_ref()).cloned()
    }

    pub fn remove(&mut self, key: &str) {
        let key = crate::model::text::storable(key);
        self.entries.remove(key.as_ref());
    }

    pub fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }
}

/// The store data of one run.
pub struct RunState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http: WasiHttpCtx,
    pub(crate) http_policy: HttpPolicy,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) open_files: OpenFiles,
    pub(crate) events: EventLog,
    pub(crate) cancel: CancelToken,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) state: TaskState,
    pub(crate) instance: InstanceInfo,
    pub(crate) farm: Option<Arc<dyn Farm>>,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for RunState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

/// The host interfaces of one contract version. Every version has its own
/// generated traits and types, alike in shape; one body serves them all.
macro_rules! host_imports {
    ($v:ident) => {
        mod $v {
            use super::super::bindings::$v::cronwerk::task::{
                cancellation, config, farm, instance, log, state, types,
            };
            use super::RunState;
            use crate::model::{BroadcastPayload, Level};

            impl types::Host for RunState {}

            impl log::Host for RunState {
                fn write(&mut self, level: log::Level, event_code: String, message: String) {
                    let level = match level {
                        log::Level::Trace => Level::Trace,
                        log::Level::Debug => Level::Debug,
                        log::Level::Info => Level::Info,
                        log::Level::Warning => Level::Warning,
                        log::Level::Error => Level::Error,
                    };
                    self.task_log(level, &event_code, &message);
                }
            }

            impl cancellation::Host for RunState {
                fn is_cancelled(&mut self) -> bool {
                    self.cancel.is_cancelled()
                }
            }

            impl config::Host for RunState {
                fn get(&mut self, key: String) -> Option<String> {
                    self.config.get(&key).cloned()
                }

                fn get_all(&mut self) -> Vec<(String, String)> {
                    self.config_pairs()
                }
            }

            impl state::Host for RunState {
                fn get(&mut self, key: String) -> Option<String> {
                    self.state.get(&key)
                }

                fn set(&mut self, key: String, value: String) -> Result<(), String> {
                    self.state.set(key, value)
                }

                fn remove(&mut self, key: String) {
                    self.state.remove(&key)
                }

                fn keys(&mut self) -> Vec<String> {
                    self.state.keys()
                }
            }

            impl farm::Host for RunState {
                async fn broadcast(
                    &mut self,
                    identifier: String,
                    payload: types::Payload,
                ) -> Result<String, String> {
                    let payload = BroadcastPayload {
                        target: payload.target,
                        text: payload.text,
                        data: payload.data,
                    };
                    self.send_broadcast(identifier, payload).await
                }
            }

            impl instance::Host for RunState {
                fn name(&mut self) -> String {
                    self.instance.name.clone()
                }

                fn roles(&mut self) -> Vec<String> {
                    self.instance.roles.clone()
                }
            }
        }
    };
}

host_imports!(v0_1);
host_imports!(v0_2);

/// What the imports do, whichever version asks.
impl RunState {
    fn task_log(&mut self, level: Level, event_code: &str, message: &str) {
        self.events
            .push(level, EventSource::Task, event_code, message);
    }

    fn config_pairs(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    async fn send_broadcast(
        &mut self,
        identifier: String,
        payload: BroadcastPayload,
    ) -> Result<String, String> {
        match &self.farm {
            Some(farm) => {
                let made = farm.broadcast(&identifier, payload).await;
                if let Err(message) = &made {
                    // Kept with the run (within its event limits), so a
                    // refused broadcast shows even if the task ignores it.
                    self.events.push(
                        Level::Warning,
                        EventSource::Host,
                        "BROADCAST_REFUSED",
                        message,
                    );
                }
                made
            }
            None => Err(format!(
                "cannot broadcast '{identifier}': no farm is configured \
                 (broadcasts need `cronwerk serve` with a shared database)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_enforces_key_value_and_total_limits() {
        let mut s = TaskState::default();
        assert!(s.set(String::new(), "v".into()).is_err());
        assert!(
            s.set("k".repeat(257), "v".into())
                .unwrap_err()
                .contains("256")
        );
        assert!(
            s.set("k".into(), "v".repeat(64 * 1024 + 1))
                .unwrap_err()
                .contains("65536")
        );
        for i in 0..15 {
            s.set(format!("key{i:02}"), "v".repeat(64 * 1024)).unwrap();
        }
        let err = s.set("key15".into(), "v".repeat(64 * 1024)).unwrap_err();
        assert!(err.contains("1048576"), "{err}");
        // Replacing a value counts the new size, not both.
        s.set("key00".into(), "small".into()).unwrap();
        s.set("key15".into(), "v".repeat(60 * 1024)).unwrap();
        assert_eq!(s.into_entries().len(), 16);
    }

    #[test]
    fn keys_differing_only_by_nul_and_its_replacement_are_one_key() {
        let mut s = TaskState::default();
        s.set("a\0".into(), "x\0".into()).unwrap();
        s.set("a\u{fffd}".into(), "y".into()).unwrap();
        let entries = s.into_entries();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries["a\u{fffd}"], "y");
    }
}
