//! One run's sandbox: a fresh store with its limits, WASI context (deny by
//! default; only granted directories, no sockets), host state, and the guard
//! that stops the guest when its time or grace period is up.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::cancel::CancelToken;
use super::capture::CapturedOutput;
use super::events::EventLog;
use super::host_state::{Farm, RunState, TaskState};
use super::http::{HttpPolicy, HttpSettings};
use super::limits::OpenFiles;
use super::limits::{MAX_HTTP_FIELDS_BYTES, MAX_RESOURCE_HANDLES, MemoryLimiter};
use super::outcome::{StoppedAfterGrace, TimeLimitExceeded};
use crate::model::{Grants, InstanceInfo, RunLimits};

/// Everything a sandbox is built from besides the component.
pub(crate) struct SandboxSpec<'a> {
    pub limits: &'a RunLimits,
    pub grants: &'a Grants,
    pub events: EventLog,
    pub cancel: CancelToken,
    pub grace: Duration,
    pub config: BTreeMap<String, String>,
    pub state: BTreeMap<String, String>,
    pub instance: InstanceInfo,
    pub farm: Option<Arc<dyn Farm>>,
    pub http: HttpSettings,
}

/// A store ready to instantiate into, and when its run must end.
pub(crate) struct Sandbox {
    pub store: Store<RunState>,
    deadline: Instant,
    timeout: Duration,
    cancel: CancelToken,
    grace: Duration,
    initial_fuel: u64,
}

/// Fuel handed to the guest at a time (the rest stays in the store's reserve).
/// A run stopped by time or cancellation inside a loop that makes no calls
/// reports its fuel short by at most this much (about a millisecond of
/// spinning); a run stopped by fuel reports it exactly. Each slice also
/// yields to the async executor, which costs a few microseconds.
pub(crate) const FUEL_SLICE: u64 = 10_000_000;

/// How long after a deadline the outer guard gives the epoch check before it
/// drops the call itself (needed when the guest waits inside a host call).
const BACKSTOP: Duration = Duration::from_millis(100);

impl Sandbox {
    pub fn new(engine: &wasmtime::Engine, spec: SandboxSpec<'_>) -> anyhow::Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(CapturedOutput::stdout(spec.events.clone()))
            .stderr(CapturedOutput::stderr(spec.events.clone()));
        // wasmtime's defaults, stated: no socket can be created (so none
        // holds a descriptor of the process) and no name looked up.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for dir in &spec.grants.dirs {
            let perms = if dir.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            wasi.preopened_dir(&dir.host_path, &dir.guest_path, perms)
                .map_err(anyhow::Error::from)
                .map_err(|e| {
                    e.context(format!(
                        "granting directory {} as {}",
                        dir.host_path.display(),
                        dir.guest_path
                    ))
                })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCE_HANDLES);
        let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
        http.set_field_size_limit(MAX_HTTP_FIELDS_BYTES);
        let state = RunState {
            wasi: wasi.build(),
            table,
            http,
            http_policy: HttpPolicy::new(
                spec.grants.http_hosts.clone(),
                spec.http,
                spec.events.clone(),
            ),
            limiter: MemoryLimiter::new(spec.limits.memory_bytes),
            open_files: OpenFiles::default(),
            events: spec.events,
            cancel: spec.cancel.clone(),
            config: spec.config,
            state: TaskState::new(spec.state),
            instance: spec.instance,
            farm: spec.farm,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limiter);
        let initial_fuel = spec.limits.fuel.unwrap_or(u64::MAX);
        // Compiled code keeps the fuel count of a running function in a
        // register and stores it only at calls, returns and when the injected
        // fuel runs out, not at the epoch check that stops a runaway loop.
        // Injecting fuel in slices makes the count reach the store at least
        // every slice, so the figure a stopped loop reports is what it burnt.
        store
            .fuel_async_yield_interval(Some(FUEL_SLICE))
            .map_err(anyhow::Error::from)?;
        store.set_fuel(initial_fuel).map_err(anyhow::Error::from)?;

        let timeout = spec.limits.timeout;
        let deadline = Instant::now() + timeout;
        let cancel = spec.cancel;
        let grace = spec.grace;
        // Every epoch tick the guest pauses here: past the deadline or the
        // grace period it is stopped; otherwise it yields to the executor so
        // other runs and the outer guard make progress.
        store.epoch_deadline_callback({
            let cancel = cancel.clone();
            move |_| {
                let now = Instant::now();
                if now >= deadline {
                    return Err(wasmtime::Error::new(TimeLimitExceeded(timeout)));
                }
                if cancel.requested_at().is_some_and(|at| now >= at + grace) {
                    return Err(wasmtime::Error::new(StoppedAfterGrace(grace)));
                }
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        Ok(Sandbox {
            store,
            deadline,
            timeout,
            cancel,
            grace,
            initial_fuel,
        })
    }

    /// Fuel burnt so far.
    pub fn fuel_consumed(&self) -> u64 {
        self.initial_fuel
            .saturating_sub(self.store.get_fuel().unwrap_or(0))
    }

    /// Runs `work` (which uses this sandbox's store) under the wall-time and
    /// cancellation guards. The epoch callback stops guest code; this outer
    /// guard also covers a guest blocked inside a host call.
    pub async fn guard<R>(
        deadline: Instant,
        timeout: Duration,
        cancel: &CancelToken,
        grace: Duration,
        work: impl Future<Output = wasmtime::Result<R>>,
    ) -> wasmtime::Result<R> {
        let time_up = tokio::time::sleep_until((deadline + BACKSTOP).into());
        let grace_up = async {
            cancel.cancelled().await;
            let at = cancel.requested_at().unwrap_or_else(Instant::now);
            tokio::time::sleep_until((at + grace + BACKSTOP).into()).await;
        };
        tokio::select! {
            biased;
            result = work => result,
            _ = time_up => Err(wasmtime::Error::new(TimeLimitExceeded(timeout))),
            _ = grace_up => Err(wasmtime::Error::new(StoppedAfterGrace(grace))),
        }
    }

    /// The pieces [`guard`](Self::guard) needs, copied out so the store can be
    /// borrowed by the work future.
    pub fn guard_params(&self) -> (Instant, Duration, CancelToken, Duration) {
        (self.deadline, self.timeout, self.cancel.clone(), self.grace)
    }
}
