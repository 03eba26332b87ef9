//! Compiled components kept on disk, so that a restart (or a file renamed
//! back and forth) does not pay for Cranelift again. Big guests take seconds
//! to compile and a fraction of a millisecond to map from a cache file.
//!
//! An entry is keyed by the component's sha256 and by a hash of everything
//! in the engine that affects code generation, so a wasmtime upgrade or a
//! changed engine setting simply misses instead of loading foreign code.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component as WasmComponent;

/// Whether a load found its compiled code in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheOutcome {
    Hit,
    Miss,
}

/// Why compiling did not give code.
pub(super) enum CompileError {
    /// The bytes are not a valid component (or the compiler crashed on them).
    Invalid(String),
    /// Compilation outlasted the limit. Cranelift cannot be interrupted, so
    /// its thread finishes on its own; the load does not wait for it.
    TimedOut,
}

/// Compiles `bytes` off the async threads (compilation is CPU-bound and
/// takes milliseconds to seconds), for at most `timeout`. A panic in the
/// compiler fails this load only, never the process.
pub(super) async fn compile(
    engine: &Engine,
    bytes: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<WasmComponent, CompileError> {
    let engine = engine.clone();
    let worker = tokio::task::spawn_blocking(move || WasmComponent::new(&engine, bytes));
    match tokio::time::timeout(timeout, worker).await {
        Err(_) => Err(CompileError::TimedOut),
        Ok(Err(join)) => Err(CompileError::Invalid(format!(
            "the compiler crashed on it ({})",
            super::guest_pool::panic_text(join)
        ))),
        Ok(Ok(compiled)) => compiled.map_err(|e| CompileError::Invalid(format!("{e:#}"))),
    }
}

/// Maps the cached code for `sha256` if there is usable code, otherwise
/// compiles `bytes` and stores the result for next time. Only compilation
/// errors are errors: the cache is an optimisation and never fails a load.
pub(super) async fn compile_cached(
    engine: &Engine,
    bytes: Vec<u8>,
    sha256: &str,
    cache_dir: &Path,
    timeout: std::time::Duration,
) -> Result<(WasmComponent, CacheOutcome), CompileError> {
    let path = entry_path(engine, sha256, cache_dir);
    let lookup = {
        let engine = engine.clone();
        let path = path.clone();
        tokio::task::spawn_blocking(move || lookup(&engine, &path))
            .await
            .expect("cache lookup thread panicked")
    };
    if let Some(compiled) = lookup {
        return Ok((compiled, CacheOutcome::Hit));
    }
    let compiled = compile(engine, bytes, timeout).await?;
    let to_store = compiled.clone();
    // Writing can take a while for big guests and its failure only costs a
    // future recompilation, but waiting keeps "loaded" meaning "cached too",
    // which makes restarts predictable.
    tokio::task::spawn_blocking(move || store(&to_store, &path))
        .await
        .expect("cache writer thread panicked");
    Ok((compiled, CacheOutcome::Miss))
}

/// `<component sha256>-<engine hash>.cwasm`: the component's hash first so
/// that a person looking at the folder can tell which file is which.
fn entry_path(engine: &Engine, sha256: &str, cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("{sha256}-{}.cwasm", engine_hash(engine)))
}

/// Hex of a sha256 over the engine's compatibility hash. sha2 rather than
/// `DefaultHasher` because the latter's algorithm may change between Rust
/// releases, which would silently invalidate every cache entry.
fn engine_hash(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("a sha256 has 32 bytes"))
    }
}

fn lookup(engine: &Engine, path: &Path) -> Option<WasmComponent> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts the file to hold code wasmtime
    // produced, because it maps it and runs it as is. That holds here: the
    // cache directory belongs to this host and, like its binary, must be
    // writable only by the account running it; `store` only ever publishes a
    // complete, synced file with an atomic rename, so no reader sees a torn
    // write and no file is modified in place while mapped. A file from
    // another wasmtime version or engine configuration never matches the
    // name (the engine hash is in it), and wasmtime checks the header again;
    // whatever fails that check is deleted below and recompiled.
    match unsafe { WasmComponent::deserialize_file(engine, path) } {
        Ok(compiled) => Some(compiled),
        Err(e) => {
            tracing::warn!(
                "discarding unusable compile cache entry {}: {e:#}",
                path.display()
            );
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!("cannot delete {}: {e}", path.display());
            }
            None
        }
    }
}

fn store(compiled: &WasmComponent, path: &Path) {
    if let Err(e) = try_store(compiled, path) {
        tracing::warn!(
            "cannot write compile cache entry {}: {e:#}; the component is loaded \
             but will be compiled again next time",
            path.display()
        );
    }
}

fn try_store(compiled: &WasmComponent, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let image = compiled.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    // Unique per process and call, so concurrent writers of one entry (two
    // folders holding the same file) never share a temporary file; the
    // leading dot keeps it out of plain listings.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name()
            .expect("cache entries have names")
            .to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&image)?;
        // Without the sync a crash could leave the renamed entry empty or
        // partial, which the header check would not always notice.
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    Ok(written?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_hash_is_stable_and_tracks_the_configuration() {
        let a = Engine::default();
        assert_eq!(engine_hash(&a), engine_hash(&Engine::default()));
        assert_eq!(engine_hash(&a).len(), 16);
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        let b = Engine::new(&config).unwrap();
        assert_ne!(engine_hash(&a), engine_hash(&b));
    }
}
