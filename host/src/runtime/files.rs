//! Files a run holds open, and the process's own limit on open files.
//!
//! A directory grant lets a task open files through `wasi:filesystem`
//! `open-at`, and each open file is a descriptor of this process, shared
//! with the API's sockets, the plugins folder and every other run. The
//! linker's `open-at` is wrapped so a run holds at most
//! [`MAX_OPEN_FILES`] at once; the run that asks for more is stopped with
//! `StopReason::Resources`. A file counts for as long as anything of the
//! run keeps it open: its descriptor handle, or a stream read from or
//! written to it after the handle is dropped. Preopened directories (one
//! per grant, opened by the host) do not count. Sockets need no such count:
//! `wasi:sockets` is linked but every use is denied (the WASI context
//! allows no TCP, UDP or name lookup), so creating one fails before a
//! descriptor exists; the connections of `wasi:http` requests are capped in
//! `http.rs`. At start the runtime raises the process's soft limit on open
//! files to its hard limit, so that the runs' files and connections
//! together stay well below it.

use std::future::Future;
use std::sync::Arc;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use super::host_state::RunState;
use super::limits::{MAX_HTTP_CONNECTIONS, MAX_OPEN_FILES};

/// The `wasi:filesystem/types` instance `wasmtime_wasi::p2` links (the
/// WIT version it implements; guests importing an older 0.2 version are
/// served by it too). If wasmtime moves on, [`cap_open_at`], and with it
/// `Runtime::new`, fails until this follows.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

const OPEN_AT: &str = "[method]descriptor.open-at";

/// Replaces `[method]descriptor.open-at` in `linker` (which must already
/// hold `wasmtime_wasi::p2`'s) with [`open_at`]. Fails when there is no
/// such function to replace: guests would then be served wasmtime's own,
/// uncapped.
pub(crate) fn cap_open_at(linker: &mut Linker<RunState>) -> anyhow::Result<()> {
    let unshadowed = linker
        .instance(FILESYSTEM_TYPES)
        .and_then(|mut types| types.func_wrap_async(OPEN_AT, open_at));
    if unshadowed.is_ok() {
        anyhow::bail!("the WASI linker has no {FILESYSTEM_TYPES} {OPEN_AT} to cap");
    }
    linker.allow_shadowing(true);
    let shadowed = linker
        .instance(FILESYSTEM_TYPES)
        .and_then(|mut types| types.func_wrap_async(OPEN_AT, open_at));
    linker.allow_shadowing(false);
    shadowed.map_err(anyhow::Error::from)
}

type OpenAtParams = (
    Resource<Descriptor>,
    PathFlags,
    String,
    OpenFlags,
    DescriptorFlags,
);
type OpenAtResult = (Result<Resource<Descriptor>, ErrorCode>,);

/// `open-at` that stops the run instead of opening one file more than
/// [`MAX_OPEN_FILES`], and otherwise does what wasmtime's does.
fn open_at(
    mut store: StoreContextMut<'_, RunState>,
    (dir, path_flags, path, open_flags, flags): OpenAtParams,
) -> Box<dyn Future<Output = wasmtime::Result<OpenAtResult>> + Send + '_> {
    Box::new(async move {
        let state = store.data_mut();
        state
            .open_files
            .check_room()
            .map_err(wasmtime::Error::new)?;
        let opened = HostDescriptor::open_at(
            &mut state.filesystem(),
            dir,
            path_flags,
            path,
            open_flags,
            flags,
        )
        .await;
        let fd = match opened {
            Ok(fd) => fd,
            // An error code goes to the guest; anything else traps, as in
            // wasmtime's own binding.
            Err(e) => return Ok((Err(e.downcast()?),)),
        };
        let file = match state.table.get(&fd)? {
            Descriptor::File(f) => Arc::clone(&f.file),
            Descriptor::Dir(d) => Arc::clone(&d.dir),
        };
        state.open_files.opened(&file);
        Ok((Ok(fd),))
    })
}

/// Descriptors the process keeps for itself besides the runs' files: the
/// API's listener and connections, the database, the plugins folder and its
/// watcher, compiled-code cache files, preopened directories.
const PROCESS_RESERVE: u64 = 1024;

/// Descriptors one run may hold: its open files and its HTTP connections.
const PER_RUN: u64 = (MAX_OPEN_FILES + MAX_HTTP_CONNECTIONS) as u64;

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to its
/// hard limit, as servers commonly do: the soft limit is often 1024, which
/// the files and connections of `max_concurrent_runs` runs could fill.
/// Logs the raise, and warns when even the raised limit leaves less than
/// [`PROCESS_RESERVE`] besides what the runs may hold. Never fails: a limit
/// that cannot be read or raised is a warning.
pub(crate) fn raise_open_file_limit(max_concurrent_runs: u32) {
    let (before, now) = match raise_nofile() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!("cannot raise the limit on open files (RLIMIT_NOFILE): {e}");
            return;
        }
    };
    if now > before {
        tracing::info!("raised the limit on open files (RLIMIT_NOFILE) from {before} to {now}");
    }
    let runs = u64::from(max_concurrent_runs) * PER_RUN;
    if runs.saturating_add(PROCESS_RESERVE) > now {
        tracing::warn!(
            "the limit on open files (RLIMIT_NOFILE) is {now}; {max_concurrent_runs} runs \
             of {MAX_OPEN_FILES} open files and {MAX_HTTP_CONNECTIONS} HTTP connections \
             each could leave the server too few (raise the hard limit, e.g. \
             LimitNOFILE= in systemd, or allow fewer concurrent runs)"
        );
    }
}

/// The soft limit before and after raising it to the hard limit.
fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `setrlimit` only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::super::limits::OpenFiles;
    use super::*;

    #[test]
    fn files_count_while_anything_holds_them() {
        let mut files = OpenFiles::default();
        let a = Arc::new(tempfile_handle());
        let b = Arc::new(tempfile_handle());
        let stream_of_b = Arc::clone(&b);
        files.opened(&a);
        files.opened(&b);
        assert_eq!(files.count(), 2);
        drop(a);
        drop(b);
        assert_eq!(files.count(), 1, "a stream keeps b open");
        drop(stream_of_b);
        assert_eq!(files.count(), 0);
    }

    #[test]
    fn the_cap_refuses_one_more() {
        let mut files = OpenFiles::default();
        let held: Vec<_> = (0..MAX_OPEN_FILES)
            .map(|_| Arc::new(tempfile_handle()))
            .collect();
        for f in &held {
            files.check_room().unwrap();
            files.opened(f);
        }
        let err = files.check_room().unwrap_err();
        assert!(err.to_string().contains(&MAX_OPEN_FILES.to_string()));
        drop(held);
        files.check_room().unwrap();
    }

    #[test]
    fn capping_needs_wasmtimes_open_at_to_replace() {
        let engine = wasmtime::Engine::default();
        let mut bare = Linker::<RunState>::new(&engine);
        let err = cap_open_at(&mut bare).unwrap_err();
        assert!(err.to_string().contains(FILESYSTEM_TYPES), "{err}");
        let mut wasi = Linker::<RunState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut wasi).unwrap();
        cap_open_at(&mut wasi).unwrap();
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let (_, now) = raise_nofile().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `getrlimit` writes into the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(now, limit.rlim_cur);
    }

    fn tempfile_handle() -> std::fs::File {
        std::fs::File::open("/dev/null").unwrap()
    }
}
