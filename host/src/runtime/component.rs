//! Turning bytes into a ready-to-run task component: validation with errors
//! that say what is wrong and how to fix it, compilation, linking, and asking
//! the component to describe itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component as WasmComponent;

use super::contract::{Contract, TaskPre};
pub use super::task_info::TaskInfo;

/// Why a file could not be loaded as a task. Every message names the file,
/// what is wrong, and what would fix it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{origin} is not a WebAssembly file (it does not start with the `\\0asm` magic bytes): \
         point cronwerk at the .wasm your build produced"
    )]
    NotWasm { origin: String },
    #[error(
        "{origin} is a core WebAssembly module, not a component: build it for wasm32-wasip2 \
         (`cargo build --target wasm32-wasip2`) or wrap it with `wasm-tools component new`"
    )]
    CoreModule { origin: String },
    #[error("{origin} is not a valid WebAssembly component: {message}")]
    Invalid { origin: String, message: String },
    #[error(
        "{origin} does not export cronwerk's task interface (`cronwerk:task/task@VERSION`, \
         VERSION one of {versions}; its exports: {found}): implement the task interface of \
         cronwerk's WIT package, e.g. with `cronwerk_guest::export_task!`{hint}",
        versions = Contract::all_versions()
    )]
    MissingExport {
        origin: String,
        found: String,
        hint: String,
    },
    #[error(
        "{origin} exports `{export}` with a shape this host does not expect ({message}): \
         rebuild it against cronwerk's WIT package (`wit/` holds every version)"
    )]
    WrongShape {
        origin: String,
        export: &'static str,
        message: String,
    },
    #[error(
        "{origin} imports something cronwerk does not provide ({message}); cronwerk offers \
         `cronwerk:task/*@VERSION` (VERSION one of {versions}) and WASI 0.2: remove that \
         dependency from the task",
        versions = Contract::all_versions()
    )]
    UnsupportedImport { origin: String, message: String },
    #[error("{origin} failed when asked to describe itself: {message}")]
    Describe { origin: String, message: String },
    #[error("{origin} describes itself with an invalid identifier: {message}")]
    BadIdentifier { origin: String, message: String },
    #[error(
        "{origin} is {}, over the {} a component may have here; it is not read",
        bytesize::ByteSize(*size),
        bytesize::ByteSize(*limit)
    )]
    TooLarge {
        origin: String,
        size: u64,
        limit: u64,
    },
    #[error(
        "{origin} took longer than {} to compile and is left unloaded",
        humantime::format_duration(*limit)
    )]
    CompileTimeout {
        origin: String,
        limit: std::time::Duration,
    },
    #[error(
        "{origin} describes itself with a {field} of {size} bytes; at most {limit} are allowed: \
         shorten it in the task's `describe`"
    )]
    OversizedInfo {
        origin: String,
        field: &'static str,
        size: usize,
        limit: usize,
    },
}

/// What loading a component may cost the host before it runs at all: a
/// file read whole into memory and a compilation on a worker thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest component file read (the Python and JavaScript examples are
    /// 12-18 MB).
    pub max_file_bytes: u64,
    /// Longest a compilation may take before the file is given up on (a
    /// Python component takes 10-20 s on a small machine).
    pub compile_timeout: std::time::Duration,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_file_bytes: 64 << 20,
            compile_timeout: std::time::Duration::from_secs(300),
        }
    }
}

impl TaskInfo {
    /// Refuses a description with a field over its limit, naming the field
    /// as the contract does.
    pub fn check_sizes(&self, origin: &str) -> Result<(), LoadError> {
        match self.oversized() {
            None => Ok(()),
            Some((field, size, limit)) => Err(LoadError::OversizedInfo {
                origin: origin.to_owned(),
                field,
                size,
                limit,
            }),
        }
    }
}

/// A validated, compiled and linked task component, ready for any number of
/// runs. Cheap to clone.
#[derive(Clone)]
pub struct Component {
    inner: Arc<Inner>,
}

struct Inner {
    sha256: String,
    size_bytes: usize,
    origin: String,
    info: TaskInfo,
    imports: Vec<String>,
    exports: Vec<String>,
    pre: TaskPre,
}

impl Component {
    pub(crate) fn new(
        sha256: String,
        size_bytes: usize,
        origin: String,
        info: TaskInfo,
        imports: Vec<String>,
        exports: Vec<String>,
        pre: TaskPre,
    ) -> Self {
        Component {
            inner: Arc::new(Inner {
                sha256,
                size_bytes,
                origin,
                info,
                imports,
                exports,
                pre,
            }),
        }
    }

    /// Hex sha256 of the component's bytes: its identity.
    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    pub fn size_bytes(&self) -> usize {
        self.inner.size_bytes
    }

    /// Where it was loaded from (a path, or a caller-given name).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    pub fn info(&self) -> &TaskInfo {
        &self.inner.info
    }

    /// Names of the interfaces the component imports.
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }

    /// Names of the interfaces the component exports.
    pub fn exports(&self) -> &[String] {
        &self.inner.exports
    }

    pub(crate) fn pre(&self) -> &TaskPre {
        &self.inner.pre
    }

    /// The version of the task contract it was built against.
    pub fn contract(&self) -> Contract {
        self.inner.pre.contract()
    }
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads a component file whole, refusing one over `max_bytes` before
/// reading it (and one that grows past it while being read).
pub fn read_component_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>, LoadError> {
    use std::io::Read as _;
    let unreadable = |source| LoadError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let too_large = |size| LoadError::TooLarge {
        origin: path.display().to_string(),
        size,
        limit: max_bytes,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let size = file.metadata().map_err(unreadable)?.len();
    if size > max_bytes {
        return Err(too_large(size));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Checks the 8-byte header: a component, a core module, or not wasm. Text
/// (`.wat`) is accepted when the origin says so.
pub(crate) fn check_header(bytes: &[u8], origin: &str) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: &[u8] = &[1, 0, 0, 0];
    if bytes.starts_with(MAGIC) {
        if bytes.get(4..8) == Some(CORE_VERSION) {
            return Err(LoadError::CoreModule {
                origin: origin.to_owned(),
            });
        }
        return Ok(());
    }
    if origin.ends_with(".wat") {
        return Ok(());
    }
    Err(LoadError::NotWasm {
        origin: origin.to_owned(),
    })
}

/// Names of a compiled component's imports and exports.
pub(crate) fn interface_names(
    component: &WasmComponent,
    engine: &wasmtime::Engine,
) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(n, _)| n.to_owned()).collect();
    let exports = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
    (imports, exports)
}

/// The error for a component whose exports lack the task interface; points
/// at a version mismatch when there is one.
pub(crate) fn missing_export(origin: &str, exports: &[String]) -> LoadError {
    let found = if exports.is_empty() {
        "none".to_owned()
    } else {
        exports.join(", ")
    };
    let other_version = exports
        .iter()
        .find(|e| e.starts_with("cronwerk:task/task@"));
    let hint = match other_version {
        Some(v) => format!(
            "; it was built against `{v}`, this host implements {}",
            Contract::all_versions()
        ),
        None => String::new(),
    };
    LoadError::MissingExport {
        origin: origin.to_owned(),
        found,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::super::task_info::{
        MAX_DEFAULT_SCHEDULE_BYTES, MAX_DESCRIPTION_BYTES, MAX_DISPLAY_NAME_BYTES,
        MAX_VERSION_BYTES,
    };
    use super::*;

    #[test]
    fn header_tells_components_modules_and_other_files_apart() {
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        let module = [0, b'a', b's', b'm', 1, 0, 0, 0];
        assert!(check_header(&component, "x.wasm").is_ok());
        assert!(matches!(
            check_header(&module, "x.wasm"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(matches!(
            check_header(b"hello", "x.wasm"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(check_header(b"(component)", "x.wat").is_ok());
    }

    #[test]
    fn describe_fields_are_bounded_and_the_first_too_long_is_named() {
        let info = TaskInfo {
            identifier: "Acme.Task".into(),
            display_name: "n".repeat(MAX_DISPLAY_NAME_BYTES),
            description: "d".repeat(MAX_DESCRIPTION_BYTES),
            version: "v".repeat(MAX_VERSION_BYTES),
            default_schedule: Some("s".repeat(MAX_DEFAULT_SCHEDULE_BYTES)),
        };
        assert!(info.check_sizes("t.wasm").is_ok());
        let too_long = TaskInfo {
            default_schedule: Some("s".repeat(MAX_DEFAULT_SCHEDULE_BYTES + 1)),
            ..info.clone()
        };
        let text = too_long.check_sizes("t.wasm").unwrap_err().to_string();
        assert!(
            text.starts_with("t.wasm describes itself with a default-schedule of 257 bytes"),
            "{text}"
        );
        let too_long = TaskInfo {
            display_name: "n".repeat(MAX_DISPLAY_NAME_BYTES + 1),
            ..info
        };
        let text = too_long.check_sizes("t.wasm").unwrap_err().to_string();
        assert!(text.contains("display-name of 257 bytes"), "{text}");
    }

    #[test]
    fn missing_export_points_at_a_version_mismatch() {
        let e = missing_export("t.wasm", &["cronwerk:task/task@0.9.0".into()]);
        let text = e.to_string();
        assert!(
            text.contains(
                "built against `cronwerk:task/task@0.9.0`, this host implements 0.1.0, 0.2.0"
            ),
            "{text}"
        );
        let e = missing_export("t.wasm", &[]);
        assert!(e.to_string().contains("its exports: none"));
    }
}
