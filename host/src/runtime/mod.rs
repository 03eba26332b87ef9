//! How one run of a task component happens: the engine, loading and
//! validating components, and executing each run in a fresh sandbox with
//! fuel, memory and wall-time limits and caps on the host resources (handles,
//! open files, HTTP connections) it holds. Knows nothing of schedules.

mod address;
mod bindings;
mod cache;
mod cancel;
mod capture;
pub mod compile_child;
pub mod compile_worker;
mod component;
mod context;
mod contract;
mod egress;
mod engine;
mod events;
mod executor;
mod files;
mod guest_pool;
mod host_state;
mod http;
mod limits;
mod outcome;
mod redact;
mod sandbox;
mod task_info;
pub(crate) mod time_format;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::Linker;

pub use cache::{CacheOutcome, Collected, CompileCache, UnsafeCache};
pub use cancel::CancelToken;
pub use component::{Component, LoadError, LoadLimits, TaskInfo, read_component_file, sha256_hex};
pub use context::RunContext;
pub use contract::Contract;
pub use engine::{Allocator, CronwerkEngine, EngineSettings};
pub use events::{Event, EventLimits, EventLog, truncate};
pub use executor::{Availability, Execution, Executor};
pub use host_state::{Farm, STATE_MAX_KEY_BYTES, STATE_MAX_TOTAL_BYTES, STATE_MAX_VALUE_BYTES};
pub use http::HttpSettings;
pub use limits::{MAX_HTTP_CONNECTIONS, MAX_OPEN_FILES, MemoryLimitExceeded};
pub use outcome::{Outcome, RunReport, Timeline};
pub use redact::{MASK, MIN_SECRET_BYTES, Redactor};

use crate::model::{
    BroadcastPayload, EventSource, Grants, InstanceInfo, Level, RunLimits, StopReason,
};
use contract::{RunFacts, TaskPre};
use guest_pool::GuestPool;
use host_state::RunState;
use sandbox::{Sandbox, SandboxSpec};

/// Longest result message kept from a task; the rest is cut with a note.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Fuel `describe` may burn. The example tasks' `describe` burns 2,500
/// (Rust), 150,000 (Python) and 1,500,000 (JavaScript); a runaway one is
/// stopped after about a tenth of a second instead of spinning until the
/// time limit.
pub const DESCRIBE_FUEL: u64 = 1_000_000_000;

/// Limits for `describe`, which runs once at load time.
fn describe_limits() -> RunLimits {
    RunLimits {
        timeout: Duration::from_secs(10),
        fuel: Some(DESCRIBE_FUEL),
        ..RunLimits::default()
    }
}

/// Everything about one run besides the component.
#[derive(Clone, Default)]
pub struct RunRequest {
    pub context: RunContext,
    /// Present for broadcast runs.
    pub payload: Option<BroadcastPayload>,
    pub limits: RunLimits,
    pub grants: Grants,
    /// Settings scoped to the task's identifier (`config` import).
    pub config: BTreeMap<String, String>,
    /// Values the run's events and result message never show (its
    /// identifier's secret settings): each occurrence is kept as `***`.
    pub secrets: Vec<String>,
    /// The configuration's state as the previous run left it.
    pub state: BTreeMap<String, String>,
    pub instance: InstanceInfo,
    pub farm: Option<Arc<dyn Farm>>,
    pub cancel: CancelToken,
    /// How long a cancelled run may take to stop by itself.
    pub grace: Duration,
}

/// Loads components and runs them. One per process; cheap to share by `Arc`.
pub struct Runtime {
    engine: CronwerkEngine,
    linker: Linker<RunState>,
    slots: Semaphore,
    event_limits: EventLimits,
    guests: GuestPool,
    /// Where components are compiled when they are not in a cache: in a
    /// child process if set, else in this one.
    compile_worker: Option<(compile_child::CompileWorker, compile_child::WorkerEngine)>,
}

impl Runtime {
    pub fn new(settings: EngineSettings) -> anyhow::Result<Self> {
        let slots = Semaphore::new(settings.max_concurrent_runs as usize);
        files::raise_open_file_limit(settings.max_concurrent_runs);
        let engine = CronwerkEngine::new(settings)?;
        let mut linker = Linker::new(&engine.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        files::cap_open_at(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        contract::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;
        Ok(Runtime {
            engine,
            linker,
            slots,
            event_limits: EventLimits::default(),
            guests: GuestPool::new()?,
            compile_worker: None,
        })
    }

    /// Compiles what is not in a compile cache in child processes started
    /// from `exe` (this program's `compile-worker` verb): their memory goes
    /// back to the system when they exit.
    pub fn compile_in_child(mut self, exe: std::path::PathBuf) -> Self {
        let settings = compile_child::WorkerEngine::of(&self.engine);
        self.compile_worker = Some((compile_child::CompileWorker { exe }, settings));
        self
    }

    pub fn engine(&self) -> &CronwerkEngine {
        &self.engine
    }

    /// Reads, validates, compiles, links and describes a component file.
    pub async fn load_file(&self, path: &Path) -> Result<Component, LoadError> {
        let bytes = self.read_file(path)?;
        self.load_bytes(bytes, path.display().to_string()).await
    }

    /// Reads a component file within this runtime's size limit.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>, LoadError> {
        read_component_file(path, self.engine.settings.load.max_file_bytes)
    }

    /// What a failed compilation of `origin` is as a load error.
    fn compile_error(&self, origin: &str, e: cache::CompileError) -> LoadError {
        match e {
            cache::CompileError::Invalid(message) => LoadError::Invalid {
                origin: origin.to_owned(),
                message,
            },
            cache::CompileError::TimedOut => LoadError::CompileTimeout {
                origin: origin.to_owned(),
                limit: self.engine.settings.load.compile_timeout,
            },
        }
    }

    /// Like [`load_file`](Self::load_file) for bytes from elsewhere; `origin`
    /// names them in errors (a `.wat` suffix allows the text format).
    pub async fn load_bytes(&self, bytes: Vec<u8>, origin: String) -> Result<Component, LoadError> {
        component::check_header(&bytes, &origin)?;
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len();
        let timeout = self.engine.settings.load.compile_timeout;
        let compiled = cache::compile(&self.engine.engine, bytes, timeout)
            .await
            .map_err(|e| self.compile_error(&origin, e))?;
        self.finish_load(compiled, sha256, size, origin).await
    }

    /// Like [`load_bytes`](Self::load_bytes), but takes the compiled code
    /// from `cache` when an earlier load left it there, and leaves it there
    /// otherwise. A cache that cannot be read or written only costs a
    /// compilation (and a warning); it never fails the load.
    pub async fn load_bytes_cached(
        &self,
        bytes: Vec<u8>,
        origin: String,
        cache: &CompileCache,
    ) -> Result<(Component, CacheOutcome), LoadError> {
        component::check_header(&bytes, &origin)?;
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len();
        let timeout = self.engine.settings.load.compile_timeout;
        let worker = self.compile_worker.as_ref().map(|(w, s)| (w, s));
        let (compiled, outcome) =
            cache::compile_cached(&self.engine.engine, bytes, &sha256, cache, timeout, worker)
                .await
                .map_err(|e| self.compile_error(&origin, e))?;
        let component = self.finish_load(compiled, sha256, size, origin).await?;
        Ok((component, outcome))
    }

    /// Leaves the compiled code of `bytes` in `cache` (compiling it, in a
    /// child process if this runtime has one) without loading it here: a
    /// later [`load_bytes_if_cached`](Self::load_bytes_if_cached) then
    /// loads it as a restart would. With a child, this process never holds
    /// the compiler's memory nor a second copy of the code.
    pub async fn precompile(
        &self,
        bytes: Vec<u8>,
        origin: String,
        cache: &CompileCache,
    ) -> Result<(), LoadError> {
        component::check_header(&bytes, &origin)?;
        let sha256 = sha256_hex(&bytes);
        let timeout = self.engine.settings.load.compile_timeout;
        let worker = self.compile_worker.as_ref().map(|(w, s)| (w, s));
        cache::precompile(&self.engine.engine, bytes, &sha256, cache, timeout, worker)
            .await
            .map_err(|e| self.compile_error(&origin, e))
    }

    /// Like [`load_bytes_cached`](Self::load_bytes_cached) when `cache`
    /// holds the compiled code; `Ok(None)` when it would have to compile.
    pub async fn load_bytes_if_cached(
        &self,
        bytes: &[u8],
        origin: String,
        cache: &CompileCache,
    ) -> Result<Option<Component>, LoadError> {
        component::check_header(bytes, &origin)?;
        let sha256 = sha256_hex(bytes);
        let Some(compiled) = cache::lookup_cached(&self.engine.engine, &sha256, cache).await else {
            return Ok(None);
        };
        let component = self
            .finish_load(compiled, sha256, bytes.len(), origin)
            .await?;
        Ok(Some(component))
    }

    /// The component whose file's content had `sha256`, from `cache` alone,
    /// without the file: `Ok(None)` when the cache does not hold it (or
    /// `sha256` is not one).
    pub async fn load_cached_by_sha256(
        &self,
        sha256: &str,
        origin: String,
        cache: &CompileCache,
    ) -> Result<Option<Component>, LoadError> {
        let is_sha256 = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_sha256 {
            return Ok(None);
        }
        let sha256 = sha256.to_ascii_lowercase();
        let Some(compiled) = cache::lookup_cached(&self.engine.engine, &sha256, cache).await else {
            return Ok(None);
        };
        let component = self.finish_load(compiled, sha256, 0, origin).await?;
        Ok(Some(component))
    }

    /// Validates, links and describes compiled code: the part of a load that
    /// a cache hit cannot skip.
    async fn finish_load(
        &self,
        compiled: wasmtime::component::Component,
        sha256: String,
        size: usize,
        origin: String,
    ) -> Result<Component, LoadError> {
        let (imports, exports) = component::interface_names(&compiled, &self.engine.engine);
        let Some(contract) = Contract::of_exports(&exports) else {
            return Err(component::missing_export(&origin, &exports));
        };
        let instance_pre =
            self.linker
                .instantiate_pre(&compiled)
                .map_err(|e| LoadError::UnsupportedImport {
                    origin: origin.clone(),
                    message: format!("{e:#}"),
                })?;
        let pre = TaskPre::new(contract, instance_pre).map_err(|e| LoadError::WrongShape {
            origin: origin.clone(),
            export: contract.task_export(),
            message: format!("{e:#}"),
        })?;
        let info = self
            .describe(&pre)
            .await
            .map_err(|message| LoadError::Describe {
                origin: origin.clone(),
                message,
            })?;
        crate::model::validate_identifier(&info.identifier).map_err(|message| {
            LoadError::BadIdentifier {
                origin: origin.clone(),
                message,
            }
        })?;
        info.check_sizes(&origin)?;
        Ok(Component::new(
            sha256, size, origin, info, imports, exports, pre,
        ))
    }

    fn guest_settings(&self) -> GuestSettings {
        GuestSettings {
            engine: self.engine.engine.clone(),
            event_limits: self.event_limits,
            http: self.engine.settings.http,
        }
    }

    /// Runs the component's `describe` on the guest threads, with the
    /// limits of [`describe_limits`].
    async fn describe(&self, pre: &TaskPre) -> Result<TaskInfo, String> {
        let _slot = self.slots.acquire().await.expect("semaphore never closes");
        let work = describe(self.guest_settings(), pre.clone());
        self.guests
            .run(work)
            .await
            .unwrap_or_else(|panic| Err(format!("the host failed describing it: {panic}")))
    }

    /// Executes one run of `component` and reports how it went. Never fails:
    /// every problem, including a sandbox that cannot be set up, is an
    /// outcome in the report.
    pub async fn run(&self, component: &Component, request: RunRequest) -> RunReport {
        let _slot = self.slots.acquire().await.expect("semaphore never closes");
        let started = Instant::now();
        let unfinished = RunReport::blank(component, &request);
        let work = execute(self.guest_settings(), component.clone(), request);
        match self.guests.run(work).await {
            Ok(report) => report,
            // A host bug, not the task's doing; the run still gets an outcome.
            Err(panic) => RunReport {
                outcome: Outcome::Stopped {
                    reason: StopReason::Trap,
                    message: format!("the host failed running the task: {panic}"),
                },
                duration: started.elapsed(),
                ..unfinished
            },
        }
    }
}

impl RunReport {
    /// The report of a run of `component` for `request` before anything
    /// happened: no time, fuel or events, the state as it came.
    fn blank(component: &Component, request: &RunRequest) -> RunReport {
        RunReport {
            outcome: Outcome::Succeeded {
                message: String::new(),
            },
            run_id: request.context.run_id.clone(),
            identifier: component.info().identifier.clone(),
            component_sha256: component.sha256().to_owned(),
            duration: Duration::ZERO,
            fuel_consumed: 0,
            peak_memory_bytes: 0,
            events: Vec::new(),
            state: request.state.clone(),
            timeline: Timeline::default(),
        }
    }
}

/// What a run or a `describe` on the guest threads takes from the runtime.
struct GuestSettings {
    engine: wasmtime::Engine,
    event_limits: EventLimits,
    http: HttpSettings,
}

/// One run, from a fresh sandbox to its report; runs on the guest threads.
async fn execute(settings: GuestSettings, component: Component, request: RunRequest) -> RunReport {
    let started = Instant::now();
    let started_wall = std::time::SystemTime::now();
    let redactor = Redactor::new(&request.secrets);
    let events = EventLog::redacting(settings.event_limits, redactor.clone());
    let mut report = RunReport::blank(&component, &request);
    let instance_name = request.instance.name.clone();
    let payload = request.payload.clone();
    let cancel = request.cancel.clone();
    let sandbox = Sandbox::new(
        &settings.engine,
        SandboxSpec {
            limits: &request.limits,
            grants: &request.grants,
            events: events.clone(),
            cancel: request.cancel,
            grace: request.grace,
            config: request.config,
            state: request.state,
            instance: request.instance,
            farm: request.farm,
            http: settings.http,
        },
    );
    let mut sandbox = match sandbox {
        Ok(s) => s,
        Err(e) => {
            report.outcome = Outcome::Stopped {
                reason: StopReason::Trap,
                message: format!("the sandbox could not be set up: {e:#}"),
            };
            report.duration = started.elapsed();
            report.timeline = Timeline::ended_at(started_wall, None);
            return report;
        }
    };
    let (deadline, timeout, guard_cancel, grace) = sandbox.guard_params();
    let store = &mut sandbox.store;
    let facts = RunFacts {
        context: &request.context,
        identifier: &report.identifier,
        instance_name: &instance_name,
        payload: payload.as_ref(),
        deadline: Some(std::time::SystemTime::now() + timeout),
    };
    let mut instantiated = None;
    let result = Sandbox::guard(deadline, timeout, &guard_cancel, grace, async {
        component
            .pre()
            .execute(&mut *store, &facts, &mut instantiated)
            .await
    })
    .await;
    report.duration = started.elapsed();
    report.timeline = Timeline::ended_at(started_wall, instantiated);
    let kept = |message: &str| truncate(&redactor.redact(message, false), MAX_RESULT_BYTES);
    report.outcome = match result {
        Ok(Ok(message)) => Outcome::Succeeded {
            message: kept(&message),
        },
        Ok(Err(message)) if cancel.is_cancelled() => Outcome::Cancelled {
            message: kept(&message),
        },
        Ok(Err(message)) => Outcome::Failed {
            message: kept(&message),
        },
        Err(e) => with_panic_message(outcome::classify(&e), &events),
    };
    // A trap's message can carry what the task wrote (a panic's).
    if let Outcome::Stopped { message, .. } = &mut report.outcome {
        *message = redactor.redact(message, false).into_owned();
    }
    // A run that did not succeed says so in its events, where someone
    // following `cronwerk events --level warning` looks.
    match &report.outcome {
        Outcome::Stopped { reason, message } => events.push_outcome(
            Level::Error,
            &format!("STOPPED_{}", reason.as_str().to_ascii_uppercase()),
            message,
        ),
        Outcome::Failed { message } => events.push_outcome(Level::Error, "RUN_FAILED", message),
        Outcome::Cancelled { message } => events.push_outcome(Level::Warning, "CANCELLED", message),
        Outcome::Succeeded { .. } => {}
    }
    events.finish();
    report.fuel_consumed = sandbox.fuel_consumed();
    let state = sandbox.store.into_data();
    report.peak_memory_bytes = state.limiter.peak_bytes();
    report.state = state.state.into_entries();
    report.events = events.snapshot();
    report
}

/// The component's `describe` in a fresh sandbox; runs on the guest threads.
async fn describe(settings: GuestSettings, pre: TaskPre) -> Result<TaskInfo, String> {
    let events = EventLog::new(settings.event_limits);
    let limits = describe_limits();
    let mut sandbox = Sandbox::new(
        &settings.engine,
        SandboxSpec {
            limits: &limits,
            grants: &Grants::default(),
            events: events.clone(),
            cancel: CancelToken::new(),
            grace: Duration::ZERO,
            config: BTreeMap::new(),
            state: BTreeMap::new(),
            instance: InstanceInfo::default(),
            farm: None,
            http: settings.http,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    let (deadline, timeout, cancel, grace) = sandbox.guard_params();
    let store = &mut sandbox.store;
    let result = Sandbox::guard(deadline, timeout, &cancel, grace, async {
        pre.describe(&mut *store).await
    })
    .await;
    match result {
        Ok(info) => Ok(info),
        Err(e) => {
            events.finish();
            let stderr: Vec<String> = events
                .snapshot()
                .into_iter()
                .filter(|e| e.source == EventSource::Stderr)
                .map(|e| e.message)
                .collect();
            let outcome = outcome::classify(&e);
            let mut message = outcome.message().to_owned();
            if !stderr.is_empty() {
                message.push_str(&format!(" (stderr: {})", stderr.join(" / ")));
            }
            Err(message)
        }
    }
}

/// A Rust guest prints its panic message to stderr before trapping; put it
/// into the outcome so the result says *why* it panicked.
fn with_panic_message(outcome: Outcome, events: &EventLog) -> Outcome {
    let Outcome::Stopped {
        reason: StopReason::Panic,
        message,
    } = outcome
    else {
        return outcome;
    };
    let stderr: Vec<Event> = events
        .snapshot()
        .into_iter()
        .filter(|e| e.source == EventSource::Stderr)
        .collect();
    let detail = stderr
        .iter()
        .position(|e| e.message.contains("panicked at"))
        .and_then(|i| stderr.get(i + 1))
        .map(|e| e.message.clone());
    Outcome::Stopped {
        reason: StopReason::Panic,
        message: match detail {
            Some(detail) => format!("the task panicked: {detail}"),
            None => message,
        },
    }
}
