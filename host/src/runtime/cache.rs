//! Compiled components kept on disk, so that a restart (or a file renamed
//! back and forth) does not pay for Cranelift again. Big guests take seconds
//! to compile and about a tenth of a second to load from a cache file.
//!
//! A cache file is native code that the host runs as is, so nothing in it
//! is trusted because of where it lies or what it is called. The folder
//! must belong to the user running cronwerk and be writable by nobody else
//! ([`CompileCache::open`] refuses any other, and creates a missing one with
//! mode 0700). It holds a key (`.key`, 32 random bytes, mode 0600), and each
//! entry carries an HMAC-SHA256 under that key of the component's sha256,
//! the engine hash and the code. An entry is checked in memory before
//! wasmtime sees it, and the checked bytes are what is loaded: an entry
//! written by anyone without the key, damaged, or copied from another
//! component's name is a miss, deleted and compiled again.
//!
//! An entry is named by the component's sha256 and by a hash of everything
//! in the engine that affects code generation, so a wasmtime upgrade or a
//! changed engine setting simply misses instead of loading foreign code.

use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component as WasmComponent;

use super::compile_child::{self, ChildFailure, CompileWorker, WorkerEngine};

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

/// The name of the key file in a cache folder.
const KEY_FILE: &str = ".key";
/// Bytes in a key.
const KEY_BYTES: usize = 32;
/// What an entry starts with, then [`FORMAT`] (little-endian) and the MAC.
const MAGIC: &[u8; 8] = b"CWCACHE\0";
/// The entry layout; a file of any other version is a miss.
const FORMAT: u32 = 1;
/// Bytes in an HMAC-SHA256.
const MAC_BYTES: usize = 32;
/// Bytes before the code: magic, format, MAC.
const HEADER_BYTES: usize = MAGIC.len() + 4 + MAC_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// A compile cache folder that passed the checks, with its key. Cheap to
/// clone. Without a key (the folder could not be created or read) every
/// load compiles and nothing is stored.
#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    key: Option<Arc<[u8; KEY_BYTES]>>,
}

impl std::fmt::Debug for CompileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileCache")
            .field("dir", &self.dir)
            .field("usable", &self.key.is_some())
            .finish()
    }
}

/// Why a compile cache folder is refused: whoever could change it, or read
/// its key, could make this process run their code.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeCache {
    #[error(
        "the compile cache folder {dir} is writable by group or others (mode {mode:03o}), \
         so whoever can write there could run code in this process; make it private with \
         `chmod go-w {dir}`"
    )]
    Writable { dir: String, mode: u32 },
    #[error(
        "the compile cache folder {dir} belongs to user {owner}, not to user {euid} running \
         this process, so its owner could run code in this process; use a folder of user \
         {euid}'s own"
    )]
    Foreign { dir: String, owner: u32, euid: u32 },
    #[error(
        "the compile cache key {path} {problem}, so it cannot vouch for the cache; delete it \
         (a new key is made and the components in the cache are compiled again)"
    )]
    Key { path: String, problem: String },
}

/// Opening a folder: refused, or merely not possible.
enum OpenError {
    Unsafe(UnsafeCache),
    Io(std::io::Error),
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> Self {
        OpenError::Io(e)
    }
}

impl CompileCache {
    /// Opens the cache in `dir`, creating the folder (mode 0700) and its
    /// key if missing. Fails only if the folder or the key is unsafe; a
    /// folder that cannot be created or read gives a cache that stores
    /// nothing (and a warning), since the cache is an optimisation.
    pub fn open(dir: &Path) -> Result<CompileCache, UnsafeCache> {
        match open_key(dir) {
            Ok(key) => Ok(CompileCache {
                dir: dir.to_owned(),
                key: Some(Arc::new(key)),
            }),
            Err(OpenError::Unsafe(e)) => Err(e),
            Err(OpenError::Io(e)) => {
                tracing::warn!(
                    "cannot use the compile cache folder {}: {e}; components are compiled \
                     on every load",
                    dir.display()
                );
                Ok(CompileCache::off(dir))
            }
        }
    }

    /// A cache in `dir` that is never read or written.
    fn off(dir: &Path) -> CompileCache {
        CompileCache {
            dir: dir.to_owned(),
            key: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the entries not used (loaded or stored) within `max_age`,
    /// then the least recently used ones until the rest take at most
    /// `max_bytes`. A loaded component does not need its entry any more,
    /// so removing one in use only costs a compilation at the next load.
    pub fn collect_garbage(
        &self,
        max_age: std::time::Duration,
        max_bytes: u64,
        now: std::time::SystemTime,
    ) -> std::io::Result<Collected> {
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&self.dir)? {
            let item = item?;
            let path = item.path();
            if path.extension().is_none_or(|e| e != "cwasm") {
                continue;
            }
            let meta = item.metadata()?;
            if meta.is_file() {
                let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                entries.push((used, meta.len(), path));
            }
        }
        // Newest first: what is kept is a prefix.
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let mut collected = Collected::default();
        for (used, size, path) in entries {
            let stale = now.duration_since(used).unwrap_or_default() > max_age;
            if stale || collected.kept_bytes + size > max_bytes {
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        collected.removed += 1;
                        collected.freed_bytes += size;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            } else {
                collected.kept += 1;
                collected.kept_bytes += size;
            }
        }
        Ok(collected)
    }
}

/// What [`CompileCache::collect_garbage`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub removed: usize,
    pub freed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

/// Marks an entry as used now (its modification time), so garbage
/// collection keeps what is loaded.
fn touch(path: &Path) {
    let now = std::time::SystemTime::now();
    if let Err(e) = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(now))
    {
        tracing::debug!("cannot mark {} as used: {e}", path.display());
    }
}

fn open_key(dir: &Path) -> Result<[u8; KEY_BYTES], OpenError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    check_folder(dir)?;
    let path = dir.join(KEY_FILE);
    match read_key(&path) {
        Err(OpenError::Io(e)) if e.kind() == ErrorKind::NotFound => {}
        read => return read,
    }
    create_key(dir, &path)?;
    read_key(&path)
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The folder must be this user's and writable by nobody else: whoever can
/// replace files in it could replace the key.
fn check_folder(dir: &Path) -> Result<(), OpenError> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(OpenError::Io(std::io::Error::new(
            ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    let shown = dir.display().to_string();
    if meta.uid() != euid() {
        return Err(OpenError::Unsafe(UnsafeCache::Foreign {
            dir: shown,
            owner: meta.uid(),
            euid: euid(),
        }));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(OpenError::Unsafe(UnsafeCache::Writable {
            dir: shown,
            mode,
        }));
    }
    Ok(())
}

/// Reads the key, refusing one that a link, another user or a loose mode
/// may have let someone else choose or see.
fn read_key(path: &Path) -> Result<[u8; KEY_BYTES], OpenError> {
    let refuse = |problem: String| {
        OpenError::Unsafe(UnsafeCache::Key {
            path: path.display().to_string(),
            problem,
        })
    };
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refuse("is a symbolic link".into()));
        }
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if meta.uid() != euid() {
        return Err(refuse(format!(
            "belongs to user {}, not to user {}",
            meta.uid(),
            euid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "is open to group or others (mode {mode:03o}, not 600)"
        )));
    }
    if meta.len() != KEY_BYTES as u64 {
        return Err(refuse(format!(
            "holds {} bytes, not {KEY_BYTES}",
            meta.len()
        )));
    }
    let mut key = [0u8; KEY_BYTES];
    file.read_exact(&mut key)?;
    Ok(key)
}

/// Makes a key unless another process just did: written whole to a private
/// temporary file, then hard-linked into place, which (unlike a rename)
/// never replaces a key that is already there.
fn create_key(dir: &Path, path: &Path) -> std::io::Result<()> {
    let mut key = [0u8; KEY_BYTES];
    getrandom::fill(&mut key).map_err(std::io::Error::other)?;
    let temp = dir.join(format!(".key.{}.tmp", random_suffix()?));
    write_new(&temp, &[&key])?;
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// 16 random hex digits, so that nobody can place a file under the name of
/// a temporary file before it is made.
fn random_suffix() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(hex::encode(bytes))
}

/// Creates `path`, which must not exist (not even as a link), readable and
/// writable by this user only, and writes `parts` to it, synced.
fn write_new(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = (|| {
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Loads the cached code for `sha256` if there is an entry this cache
/// wrote for it, otherwise compiles `bytes` and stores the result for next
/// time. Only compilation errors are errors: the cache is an optimisation
/// and never fails a load.
///
/// With a `worker`, the compilation happens in a child process that leaves
/// the code in the cache (see `compile_child`); if that child cannot be
/// started, or its code does not load, this process compiles after all.
pub(super) async fn compile_cached(
    engine: &Engine,
    bytes: Vec<u8>,
    sha256: &str,
    cache: &CompileCache,
    timeout: std::time::Duration,
    worker: Option<(&CompileWorker, &WorkerEngine)>,
) -> Result<(WasmComponent, CacheOutcome), CompileError> {
    let Some(key) = cache.key.clone() else {
        return Ok((compile(engine, bytes, timeout).await?, CacheOutcome::Miss));
    };
    let entry = Entry::new(engine, sha256, &cache.dir);
    let lookup = || {
        let engine = engine.clone();
        let entry = entry.clone();
        let key = key.clone();
        async move {
            tokio::task::spawn_blocking(move || entry.lookup(&engine, &key))
                .await
                .expect("cache lookup thread panicked")
        }
    };
    if let Some(compiled) = lookup().await {
        return Ok((compiled, CacheOutcome::Hit));
    }
    if let Some(worker) = worker
        && let Some(compiled) = in_child(worker, &bytes, cache, timeout).await
    {
        compiled?;
        match lookup().await {
            Some(compiled) => return Ok((compiled, CacheOutcome::Miss)),
            None => tracing::warn!(
                "{}: the compile worker's code for {sha256} is not in the cache; \
                 compiling in this process",
                cache.dir.display()
            ),
        }
    }
    let compiled = compile(engine, bytes, timeout).await?;
    let to_store = compiled.clone();
    // Writing can take a while for big guests and its failure only costs a
    // future recompilation, but waiting keeps "loaded" meaning "cached too",
    // which makes restarts predictable.
    tokio::task::spawn_blocking(move || entry.store(&to_store, &key))
        .await
        .expect("cache writer thread panicked");
    Ok((compiled, CacheOutcome::Miss))
}

/// Like [`compile_cached`], but only leaves the code in the cache: with a
/// worker the code is never loaded into this process at all.
pub(super) async fn precompile(
    engine: &Engine,
    bytes: Vec<u8>,
    sha256: &str,
    cache: &CompileCache,
    timeout: std::time::Duration,
    worker: Option<(&CompileWorker, &WorkerEngine)>,
) -> Result<(), CompileError> {
    if let Some(worker) = worker.filter(|_| cache.key.is_some()) {
        if Entry::new(engine, sha256, &cache.dir).path.exists() {
            return Ok(());
        }
        if let Some(compiled) = in_child(worker, &bytes, cache, timeout).await {
            return compiled;
        }
    }
    compile_cached(engine, bytes, sha256, cache, timeout, None)
        .await
        .map(drop)
}

/// Compiles `bytes` into `cache` in a child process; `None`, with a
/// warning, if the child could not do its job, so the caller compiles in
/// this process instead.
async fn in_child(
    (worker, settings): (&CompileWorker, &WorkerEngine),
    bytes: &[u8],
    cache: &CompileCache,
    timeout: std::time::Duration,
) -> Option<Result<(), CompileError>> {
    match compile_child::compile_into_cache(worker, settings, bytes, &cache.dir, timeout).await {
        Ok(()) => Some(Ok(())),
        Err(ChildFailure::Invalid(message)) => Some(Err(CompileError::Invalid(message))),
        Err(ChildFailure::TimedOut) => Some(Err(CompileError::TimedOut)),
        Err(ChildFailure::Unavailable(why)) => {
            tracing::warn!("cannot compile in a child process ({why}); compiling in this one");
            None
        }
    }
}

/// The child's side of `compile_cached` with a worker: compiles `bytes`
/// and stores the code under their hash. The error is the compiler's.
pub(super) fn compile_and_store(
    engine: &Engine,
    bytes: Vec<u8>,
    cache: &CompileCache,
) -> Result<(), String> {
    let sha256 = super::sha256_hex(&bytes);
    let compiled = WasmComponent::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
    if let Some(key) = &cache.key {
        Entry::new(engine, &sha256, &cache.dir).store(&compiled, key);
    }
    Ok(())
}

/// The compiled code of `sha256` if the cache holds it; never compiles.
pub(super) async fn lookup_cached(
    engine: &Engine,
    sha256: &str,
    cache: &CompileCache,
) -> Option<WasmComponent> {
    let key = cache.key.clone()?;
    let entry = Entry::new(engine, sha256, &cache.dir);
    let engine = engine.clone();
    tokio::task::spawn_blocking(move || entry.lookup(&engine, &key))
        .await
        .expect("cache lookup thread panicked")
}

/// One component's entry for one engine.
#[derive(Clone)]
struct Entry {
    path: PathBuf,
    sha256: String,
    engine_hash: String,
}

impl Entry {
    /// `<component sha256>-<engine hash>.cwasm`: the component's hash first
    /// so that a person looking at the folder can tell which file is which.
    fn new(engine: &Engine, sha256: &str, cache_dir: &Path) -> Entry {
        let engine_hash = engine_hash(engine);
        Entry {
            path: cache_dir.join(format!("{sha256}-{engine_hash}.cwasm")),
            sha256: sha256.to_owned(),
            engine_hash,
        }
    }

    /// The MAC of `image` as this entry's code: it binds the code to the
    /// component and the engine, so an entry copied to another name fails.
    fn mac(&self, key: &[u8; KEY_BYTES]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
        mac.update(MAGIC);
        mac.update(&FORMAT.to_le_bytes());
        for field in [&self.sha256, &self.engine_hash] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }

    /// The code in `file` if it is an entry of this format whose MAC holds.
    fn verify<'a>(&self, key: &[u8; KEY_BYTES], file: &'a [u8]) -> Result<&'a [u8], &'static str> {
        if file.len() < HEADER_BYTES {
            return Err("it is too short to be an entry");
        }
        let (magic, rest) = file.split_at(MAGIC.len());
        let (format, rest) = rest.split_at(4);
        let (tag, image) = rest.split_at(MAC_BYTES);
        if magic != MAGIC || format != FORMAT.to_le_bytes() {
            return Err("it is not an entry of this version's format");
        }
        let mut mac = self.mac(key);
        mac.update(image);
        mac.verify_slice(tag).map_err(|_| {
            "its MAC does not match: it was not written by this cache for this component and engine"
        })?;
        Ok(image)
    }

    fn lookup(&self, engine: &Engine, key: &[u8; KEY_BYTES]) -> Option<WasmComponent> {
        let file = match read_entry(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.discard("it is a symbolic link");
                return None;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot read compile cache entry {}: {e}; compiling instead",
                    self.path.display()
                );
                return None;
            }
        };
        let image = match self.verify(key, &file) {
            Ok(image) => image,
            Err(why) => {
                self.discard(why);
                return None;
            }
        };
        // SAFETY: `deserialize` trusts its bytes to be code wasmtime
        // produced, because it runs them as is. These are: the MAC above
        // proves that this cache's `store` wrote them for this component and
        // this engine, and only this user can read the key or change the
        // folder (`CompileCache::open`). They are the bytes just checked, in
        // this process's memory, not the file again, so nothing can swap
        // them in between. wasmtime checks its own header (version, engine
        // settings) again.
        match unsafe { WasmComponent::deserialize(engine, image) } {
            Ok(compiled) => {
                touch(&self.path);
                Some(compiled)
            }
            Err(e) => {
                self.discard(&format!("{e:#}"));
                None
            }
        }
    }

    /// Deletes an entry that is not usable, so the next store replaces it.
    fn discard(&self, why: &str) {
        tracing::warn!(
            "discarding compile cache entry {}: {why}",
            self.path.display()
        );
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("cannot delete {}: {e}", self.path.display());
        }
    }

    fn store(&self, compiled: &WasmComponent, key: &[u8; KEY_BYTES]) {
        if let Err(e) = self.try_store(compiled, key) {
            tracing::warn!(
                "cannot write compile cache entry {}: {e:#}; the component is loaded \
                 but will be compiled again next time",
                self.path.display()
            );
        }
    }

    fn try_store(&self, compiled: &WasmComponent, key: &[u8; KEY_BYTES]) -> anyhow::Result<()> {
        let image = compiled.serialize().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let mut mac = self.mac(key);
        mac.update(&image);
        let tag = mac.finalize().into_bytes();
        let dir = self
            .path
            .parent()
            .expect("cache entries live in a directory");
        // Random, so concurrent writers of one entry never share a temporary
        // file and nobody can place one under its name beforehand; the
        // leading dot keeps it out of plain listings.
        let temp = dir.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .expect("cache entries have names")
                .to_string_lossy(),
            random_suffix()?
        ));
        publish(
            &temp,
            &self.path,
            &[MAGIC, &FORMAT.to_le_bytes(), &tag, &image],
        )?;
        Ok(())
    }
}

/// Writes `parts` to the new file `temp` and renames it to `path`, so no
/// reader sees a torn entry. Without the sync a crash could leave the
/// renamed entry empty or partial (the MAC would catch it, at the cost of a
/// compilation).
fn publish(temp: &Path, path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    write_new(temp, parts)?;
    let renamed = std::fs::rename(temp, path);
    if renamed.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    renamed
}

/// The whole of an entry file, not following a link.
fn read_entry(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Hex of a sha256 over the engine's compatibility hash. sha2 rather than
/// `DefaultHasher` because the latter's algorithm may change between Rust
/// releases, which would silently invalidate every cache entry.
pub(super) fn engine_hash(engine: &Engine) -> String {
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const NOBODY: u32 = 65534;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A component whose only import is named `name`, so tests can tell
    /// which one a cache returned.
    fn component(name: &str) -> (Vec<u8>, String) {
        let bytes = wat::parse_str(format!(r#"(component (import "{name}" (func)))"#)).unwrap();
        let sha256 = crate::runtime::sha256_hex(&bytes);
        (bytes, sha256)
    }

    fn import_of(engine: &Engine, compiled: &WasmComponent) -> String {
        let ty = compiled.component_type();
        let names: Vec<_> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        names.join(",")
    }

    async fn load(engine: &Engine, cache: &CompileCache, name: &str) -> (String, CacheOutcome) {
        let (bytes, sha256) = component(name);
        let timeout = std::time::Duration::from_secs(60);
        let Ok((compiled, outcome)) =
            compile_cached(engine, bytes, &sha256, cache, timeout, None).await
        else {
            panic!("{name} does not compile");
        };
        (import_of(engine, &compiled), outcome)
    }

    fn entry_of(engine: &Engine, cache: &CompileCache, name: &str) -> PathBuf {
        Entry::new(engine, &component(name).1, cache.dir()).path
    }

    #[tokio::test]
    async fn an_entry_copied_to_another_components_name_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path()).unwrap();
        let engine = Engine::default();
        assert_eq!(
            load(&engine, &cache, "a").await,
            ("a".into(), CacheOutcome::Miss)
        );
        assert_eq!(
            load(&engine, &cache, "b").await,
            ("b".into(), CacheOutcome::Miss)
        );
        assert_eq!(
            load(&engine, &cache, "b").await,
            ("b".into(), CacheOutcome::Hit)
        );

        let (a, b) = (
            entry_of(&engine, &cache, "a"),
            entry_of(&engine, &cache, "b"),
        );
        std::fs::copy(&a, &b).unwrap();
        assert_eq!(
            load(&engine, &cache, "b").await,
            ("b".into(), CacheOutcome::Miss)
        );
        assert_eq!(
            load(&engine, &cache, "b").await,
            ("b".into(), CacheOutcome::Hit)
        );
        assert_eq!(
            load(&engine, &cache, "a").await,
            ("a".into(), CacheOutcome::Hit)
        );
    }

    #[tokio::test]
    async fn damaged_foreign_and_old_format_entries_are_misses_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(dir.path()).unwrap();
        let engine = Engine::default();
        load(&engine, &cache, "a").await;
        let path = entry_of(&engine, &cache, "a");
        let good = std::fs::read(&path).unwrap();
        let (image, _) = component("a");
        let old_format = WasmComponent::new(&engine, image)
            .unwrap()
            .serialize()
            .unwrap();
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let mut other_key = good.clone();
        other_key[MAGIC.len() + 4] ^= 1;
        let damaged: [(&str, Vec<u8>); 5] = [
            ("a flipped bit in the code", flipped),
            ("a MAC under another key", other_key),
            ("a truncated entry", good[..good.len() / 2].to_vec()),
            ("garbage", b"garbage".to_vec()),
            ("an entry of the format before MACs", old_format),
        ];
        for (what, bytes) in damaged {
            std::fs::write(&path, bytes).unwrap();
            let key = cache.key.as_ref().unwrap();
            assert!(
                Entry::new(&engine, &component("a").1, dir.path())
                    .lookup(&engine, key)
                    .is_none(),
                "{what} was used"
            );
            assert!(!path.exists(), "{what} was not deleted");
            assert_eq!(
                load(&engine, &cache, "a").await,
                ("a".into(), CacheOutcome::Miss),
                "{what}"
            );
            assert_eq!(std::fs::read(&path).unwrap().len(), good.len(), "{what}");
            assert_eq!(load(&engine, &cache, "a").await.1, CacheOutcome::Hit);
        }
    }

    #[test]
    fn a_new_folder_and_key_are_private_and_the_key_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deep").join("cache");
        let first = CompileCache::open(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        let second = CompileCache::open(&dir).unwrap();
        assert_eq!(first.key, second.key);
        assert!(first.key.is_some());
    }

    #[test]
    fn a_folder_others_can_write_or_own_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        for mode in [0o777, 0o770, 0o1777] {
            set_mode(&dir, mode);
            let e = CompileCache::open(&dir).unwrap_err();
            assert!(matches!(e, UnsafeCache::Writable { .. }), "{mode:o}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("chmod go-w {}", dir.display())),
                "{text}"
            );
        }
        assert!(
            !dir.join(KEY_FILE).exists(),
            "a key was made in a refused folder"
        );

        set_mode(&dir, 0o700);
        std::os::unix::fs::chown(&dir, Some(NOBODY), None).unwrap();
        let e = CompileCache::open(&dir).unwrap_err();
        assert!(
            matches!(e, UnsafeCache::Foreign { owner: NOBODY, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
    }

    #[test]
    fn a_key_others_could_read_or_choose_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        CompileCache::open(&dir).unwrap();
        let key = dir.join(KEY_FILE);
        let refused = |what: &str| {
            let e = CompileCache::open(&dir).unwrap_err();
            assert!(matches!(e, UnsafeCache::Key { .. }), "{what}: {e}");
            assert!(e.to_string().contains(&key.display().to_string()), "{e}");
        };
        set_mode(&key, 0o644);
        refused("mode 644");
        set_mode(&key, 0o600);
        std::os::unix::fs::chown(&key, Some(NOBODY), None).unwrap();
        refused("owned by nobody");
        std::fs::remove_file(&key).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &key).unwrap();
        std::fs::write(tmp.path().join("elsewhere"), [0u8; KEY_BYTES]).unwrap();
        set_mode(&tmp.path().join("elsewhere"), 0o600);
        refused("a symbolic link");
        std::fs::remove_file(&key).unwrap();
        write_new(&key, &[b"short"]).unwrap();
        refused("5 bytes");
    }

    #[test]
    fn a_file_placed_under_a_temporary_name_is_never_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let entry = tmp.path().join("entry.cwasm");
        let temp = tmp.path().join(".entry.cwasm.0.tmp");
        std::os::unix::fs::symlink(&victim, &temp).unwrap();
        let e = publish(&temp, &entry, &[b"code"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!entry.exists());
        assert!(temp.symlink_metadata().unwrap().file_type().is_symlink());

        std::fs::remove_file(&temp).unwrap();
        std::fs::write(&temp, "placed").unwrap();
        assert!(publish(&temp, &entry, &[b"code"]).is_err());
        assert_eq!(std::fs::read_to_string(&temp).unwrap(), "placed");

        std::fs::remove_file(&temp).unwrap();
        publish(&temp, &entry, &[b"co", b"de"]).unwrap();
        assert_eq!(std::fs::read(&entry).unwrap(), b"code");
        let mode = std::fs::metadata(&entry).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!temp.exists());
    }

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

    #[test]
    fn garbage_collection_drops_entries_unused_for_long_then_the_least_recent_beyond_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::open(&dir.path().join("cache")).unwrap();
        let now = std::time::SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        let entry = |name: &str, size: usize, age: std::time::Duration| {
            let path = cache.dir().join(name);
            std::fs::write(&path, vec![0u8; size]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(now - age)
                .unwrap();
            path
        };
        let old = entry("a-e.cwasm", 10, day * 40);
        let middle = entry("b-e.cwasm", 100, day * 2);
        let recent = entry("c-e.cwasm", 100, std::time::Duration::ZERO);
        let other = entry("notes.txt", 10, day * 400);
        let collected = cache.collect_garbage(day * 30, 150, now).unwrap();
        assert_eq!(
            collected,
            Collected {
                removed: 2,
                freed_bytes: 110,
                kept: 1,
                kept_bytes: 100
            }
        );
        assert!(!old.exists() && !middle.exists());
        assert!(recent.exists() && other.exists());
        assert!(cache.dir().join(".key").exists());
    }
}
