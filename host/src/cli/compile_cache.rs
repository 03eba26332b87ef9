//! Where `exec` and `inspect` keep compiled components between invocations:
//! a per-user cache directory, so trying a 15 MB Python or JavaScript task a
//! second time takes a fraction of a second instead of seconds of
//! Cranelift. A folder that others could change is refused before anything
//! is loaded (see [`crate::runtime::CompileCache`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::runtime::{CacheOutcome, CompileCache, Component, LoadError, LoadLimits, Runtime};

#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Keep compiled components here [default: $XDG_CACHE_HOME/cronwerk, else ~/.cache/cronwerk];
    /// it must be writable by this user only (a new one is made with mode 0700).
    #[arg(long, env = "CRONWERK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile from scratch and leave the cache alone.
    #[arg(long)]
    no_cache: bool,
}

/// What loading one component may cost: `serve`, `exec` and `inspect`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Largest component file loaded; a larger one is refused unread.
    #[arg(long, default_value = "64MiB", value_parser = super::args::size, value_name = "SIZE")]
    pub max_component_size: u64,
    /// Longest a component may take to compile before it is given up on.
    #[arg(long, default_value = "5m", value_parser = super::args::duration, value_name = "DURATION")]
    pub compile_timeout: std::time::Duration,
}

impl LoadArgs {
    pub fn limits(&self) -> LoadLimits {
        LoadLimits {
            max_file_bytes: self.max_component_size,
            compile_timeout: self.compile_timeout,
        }
    }
}

/// The flag that raises the limit a load error is about, if any.
pub fn limit_hint(e: &LoadError) -> &'static str {
    match e {
        LoadError::TooLarge { .. } => " (raise the limit with --max-component-size)",
        LoadError::CompileTimeout { .. } => " (raise the limit with --compile-timeout)",
        _ => "",
    }
}

impl CacheArgs {
    /// Opens the cache in use, if any; `Err` is a message for the user
    /// when its folder is refused.
    pub fn open(&self) -> Result<Option<CompileCache>, String> {
        match self.dir() {
            None => Ok(None),
            Some(dir) => CompileCache::open(&dir)
                .map(Some)
                .map_err(|e| format!("{e}, or run with --no-cache")),
        }
    }

    /// The cache directory in use, if any.
    fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(user_cache_dir)
    }
}

/// The compile cache `exec`, `inspect` and `serve` share on a machine by
/// default: the user's cache folder (see [`default_dir`]).
pub fn user_cache_dir() -> Option<PathBuf> {
    default_dir(
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// `$XDG_CACHE_HOME/cronwerk`, else `$HOME/.cache/cronwerk` (relative values
/// are ignored, as the XDG specification asks).
fn default_dir(xdg_cache_home: Option<PathBuf>, home: Option<PathBuf>) -> Option<PathBuf> {
    match xdg_cache_home.filter(|p| p.is_absolute()) {
        Some(base) => Some(base.join("cronwerk")),
        None => home
            .filter(|p| p.is_absolute())
            .map(|h| h.join(".cache").join("cronwerk")),
    }
}

/// How a component came to be loaded.
#[derive(Debug, Clone, Serialize)]
pub struct LoadStats {
    /// `hit`, `miss` or `off`.
    pub cache: &'static str,
    pub millis: f64,
}

impl LoadStats {
    /// A few words for a status line, e.g. "loaded from the compile cache in 1.9 ms".
    pub fn describe(&self) -> String {
        let took = format_millis(self.millis);
        match self.cache {
            "hit" => format!("loaded from the compile cache in {took}"),
            "miss" => format!("compiled in {took}, now cached"),
            _ => format!("compiled in {took}, cache off"),
        }
    }
}

fn format_millis(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// Loads `file` through `cache` (from [`CacheArgs::open`]).
/// `exec` and `inspect`'s way in: opens the cache `args` name and loads
/// `file` through it. On failure, says why (as JSON with `json`) and gives
/// the exit code.
pub async fn open_and_load(
    runtime: &Runtime,
    args: &CacheArgs,
    file: &Path,
    json: bool,
) -> Result<(Component, LoadStats), u8> {
    let cache = args.open().map_err(|message| {
        eprintln!("error: {message}");
        super::exit::USAGE
    })?;
    // A Python or JavaScript component takes seconds to compile: say so on
    // a terminal, and nothing when the output is read by a program.
    let _spinner = (!json && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| Spinner::after(SPINNER_DELAY, format!("loading {}", file.display())));
    load(runtime, file, cache.as_ref())
        .await
        .map_err(|e| report_load_error(&e, json))
}

/// How long a load goes before it gets a spinner (a cached one takes ms).
const SPINNER_DELAY: Duration = Duration::from_millis(300);

/// A spinner with the elapsed time on stderr, shown once `delay` has
/// passed and cleared when dropped (before anything else is printed).
struct Spinner {
    /// The bar once shown; `Err` once the spinner is dropped, so a late
    /// start does not show one.
    bar: std::sync::Arc<std::sync::Mutex<Result<Option<indicatif::ProgressBar>, ()>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Spinner {
    fn after(delay: Duration, message: String) -> Spinner {
        let bar = std::sync::Arc::new(std::sync::Mutex::new(Ok(None)));
        let slot = bar.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(shown) = &mut *slot {
                let spinner = indicatif::ProgressBar::new_spinner()
                    .with_style(
                        indicatif::ProgressStyle::with_template(
                            "{spinner} {msg} (compiling, {elapsed})",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
                    )
                    .with_message(message);
                spinner.enable_steady_tick(Duration::from_millis(100));
                *shown = Some(spinner);
            }
        });
        Spinner { bar, task }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.task.abort();
        let mut slot = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(Some(spinner)) = std::mem::replace(&mut *slot, Err(())) {
            spinner.finish_and_clear();
        }
    }
}

pub async fn load(
    runtime: &Runtime,
    file: &Path,
    cache: Option<&CompileCache>,
) -> Result<(Component, LoadStats), LoadError> {
    let started = Instant::now();
    let elapsed = |s: Instant| Duration::as_secs_f64(&s.elapsed()) * 1e3;
    match cache {
        None => {
            let component = runtime.load_file(file).await?;
            let millis = elapsed(started);
            Ok((
                component,
                LoadStats {
                    cache: "off",
                    millis,
                },
            ))
        }
        Some(cache) => {
            let bytes = runtime.read_file(file)?;
            let (component, outcome) = runtime
                .load_bytes_cached(bytes, file.display().to_string(), cache)
                .await?;
            let cache = match outcome {
                CacheOutcome::Hit => "hit",
                CacheOutcome::Miss => "miss",
            };
            Ok((
                component,
                LoadStats {
                    cache,
                    millis: elapsed(started),
                },
            ))
        }
    }
}

/// Prints a load error (text to stderr, or JSON to stdout) and returns exit 3.
pub fn report_load_error(e: &LoadError, json: bool) -> u8 {
    if json {
        let message = format!("{e}{}", limit_hint(e));
        let v = serde_json::json!({ "outcome": "load-error", "message": message });
        println!("{v}");
    } else {
        eprintln!("error: {e}{}", limit_hint(e));
    }
    super::exit::LOAD_ERROR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_xdg_then_home() {
        let p = PathBuf::from;
        assert_eq!(
            default_dir(Some(p("/x/cache")), Some(p("/home/u"))),
            Some(p("/x/cache/cronwerk"))
        );
        assert_eq!(
            default_dir(Some(p("relative")), Some(p("/home/u"))),
            Some(p("/home/u/.cache/cronwerk"))
        );
        assert_eq!(default_dir(None, None), None);
    }
}
