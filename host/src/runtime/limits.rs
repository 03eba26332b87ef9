//! Per-run resource limits, the store limiter that enforces the memory
//! limit while recording the run's peak memory, and the count of the
//! files a run holds open (enforced where `open-at` is wrapped, in `files`).

/// Most core instances, tables and memories one run may create. A component
/// that needs more is malformed or hostile.
pub const MAX_INSTANCES: usize = 64;
pub const MAX_TABLES: usize = 64;
pub const MAX_MEMORIES: usize = 16;
/// Elements one table may hold.
pub const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// Host resources (WASI and `wasi:http` handles: streams, pollables,
/// `fields`, requests, bodies, ...) one run may hold at once. Each handle can
/// own host memory outside the run's memory limit, so this bounds it; a task
/// that asks for more is stopped with `StopReason::Resources`. Handles the
/// task drops are reused and do not count. Well-behaved tasks hold dozens.
pub const MAX_RESOURCE_HANDLES: usize = 2048;

/// Files (`wasi:filesystem` descriptors from `open-at`, files and
/// directories alike) one run may hold open at once. Each is a descriptor
/// of this process, which the API, the plugins folder and every other run
/// share, so this bounds what a task with a directory grant takes from
/// them; a task that opens one more is stopped with `StopReason::Resources`
/// (as for [`MAX_RESOURCE_HANDLES`]: an operator sees the limit named,
/// rather than whatever a hostile or buggy task makes of an error code).
/// A file counts until its descriptor and every stream on it are dropped;
/// the preopened granted directories do not count. Well-behaved tasks hold
/// a few (walking a tree holds one per level); 64 for each of the default
/// 128 concurrent runs is 8192, far below the hard limit servers usually
/// get (524288 under systemd), to which the runtime raises the process's
/// soft limit at start.
pub const MAX_OPEN_FILES: usize = 64;

/// Outgoing `wasi:http` requests one run may have in flight at once, from
/// `handle` until the response is read or dropped: each holds a connection,
/// a descriptor of this process like an open file. One more fails with
/// `connection-limit-reached` (what an HTTP client expects of a busy
/// connection pool, and what it already handles) and leaves an
/// `HTTP_LIMIT` warning; the hosts are the operator's grant, so this is a
/// bound, not a sign of a hostile task. Tasks that fetch in parallel run a
/// handful of requests at once.
pub const MAX_HTTP_CONNECTIONS: usize = 32;

/// Bytes one `wasi:http` `fields` handle (headers or trailers) may hold, as
/// the in-memory size `wasmtime-wasi-http` estimates (names, values and map
/// overhead). A task that appends past it is stopped with
/// `StopReason::Resources`. With [`MAX_RESOURCE_HANDLES`] this bounds the
/// header bytes of one run at 32 MiB.
pub const MAX_HTTP_FIELDS_BYTES: usize = 16 * 1024;

/// Largest single write to an outgoing `wasi:http` body; `check-write`
/// never offers more (a write past it traps). An unsent body holds at most
/// [`HTTP_BODY_BUFFER_CHUNKS`] + 1 such writes (wasmtime's channel keeps one
/// slot more), so 32 KiB.
pub const HTTP_BODY_CHUNK_BYTES: usize = 16 * 1024;
/// Writes to an outgoing body buffered before `check-write` reports no room.
pub const HTTP_BODY_BUFFER_CHUNKS: usize = 1;

/// Outbound HTTP requests one run may send (`wasi:http`). The request past
/// it is refused like a denied one (the task sees `HTTP-request-denied`), an
/// `HTTP_LIMIT` warning names the cap once, and the run goes on: a task that
/// handles a failed request can still finish and report. Requests refused by
/// the grants do not count. The default of
/// [`HttpSettings`](super::HttpSettings).
pub const MAX_HTTP_REQUESTS_PER_RUN: u32 = 256;

/// Response body bytes one run may receive over all its `wasi:http`
/// responses together. The body whose bytes cross it ends with an error
/// (`HTTP-response-body-size`) instead of its next frame, every later body
/// of the run likewise, and an `HTTP_LIMIT` warning names the cap once. The
/// default of [`HttpSettings`](super::HttpSettings).
pub const MAX_HTTP_RESPONSE_BYTES_PER_RUN: u64 = 64 * 1024 * 1024;

/// The run tried to grow its memory past its limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "memory limit of {} exceeded: the task asked for {} in all",
    bytesize::ByteSize(*limit),
    bytesize::ByteSize(*requested)
)]
pub struct MemoryLimitExceeded {
    pub limit: u64,
    pub requested: u64,
}

/// Enforces [`RunLimits::memory_bytes`] across all memories of a run and
/// remembers the peak. Growth past the limit traps at once rather than
/// returning -1 to the guest: the outcome then names the memory limit instead
/// of whatever the guest's allocator does on failure.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: u64,
    current: u64,
    peak: u64,
}

impl MemoryLimiter {
    pub fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit,
            current: 0,
            peak: 0,
        }
    }

    /// Highest total linear memory the run held, in bytes.
    pub fn peak_bytes(&self) -> u64 {
        self.peak
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        let total = self.current.saturating_add(grow);
        if total > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                requested: total,
            }));
        }
        self.current = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The engine refused after we agreed (e.g. the pool's slot is
        // smaller); the guest sees -1, and our running total stays as it was
        // before the refused growth would have counted. We cannot know the
        // size here, so the peak may overstate by that growth; acceptable.
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The run tried to hold more than [`MAX_OPEN_FILES`] files open at once.
#[derive(Debug, thiserror::Error)]
#[error(
    "resource limit: the task tried to hold more than {MAX_OPEN_FILES} files open at once \
     (open-at without dropping the descriptor or its streams)"
)]
pub struct OpenFileLimitExceeded;

/// The files one run opened that are still open. Each entry watches the
/// host file shared by the descriptor and its streams; the file is closed
/// when the last of them is dropped, and then stops counting.
#[derive(Debug, Default)]
pub struct OpenFiles {
    files: Vec<std::sync::Weak<std::fs::File>>,
}

impl OpenFiles {
    /// How many of the files the run opened are still open.
    pub fn count(&mut self) -> usize {
        self.files.retain(|f| f.strong_count() > 0);
        self.files.len()
    }

    /// Fails when the run already holds [`MAX_OPEN_FILES`].
    pub(super) fn check_room(&mut self) -> Result<(), OpenFileLimitExceeded> {
        if self.count() >= MAX_OPEN_FILES {
            return Err(OpenFileLimitExceeded);
        }
        Ok(())
    }

    pub(super) fn opened(&mut self, file: &std::sync::Arc<std::fs::File>) {
        self.files.push(std::sync::Arc::downgrade(file));
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::ResourceLimiter;

    use super::*;

    #[test]
    fn tracks_peak_across_memories() {
        let mut l = MemoryLimiter::new(1000);
        assert!(l.memory_growing(0, 300, None).unwrap());
        assert!(l.memory_growing(0, 200, None).unwrap());
        assert!(l.memory_growing(300, 500, None).unwrap());
        assert_eq!(l.peak_bytes(), 700);
    }

    #[test]
    fn growth_past_the_limit_is_an_error_naming_the_limit() {
        let mut l = MemoryLimiter::new(1000);
        assert!(l.memory_growing(0, 1000, None).unwrap());
        let err = l.memory_growing(1000, 1001, None).unwrap_err();
        let e = err.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!((e.limit, e.requested), (1000, 1001));
        assert_eq!(l.peak_bytes(), 1000);
    }
}
