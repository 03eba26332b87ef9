//! The threads guest code runs on, apart from the threads of the rest of
//! the process. A run gives its thread back at every epoch tick (10 ms),
//! but a few busy guests would still keep every worker of a shared pool
//! busy, and tokio looks at its timers and sockets only between batches of
//! task polls: on a 2-core machine, two spinning tasks delayed the
//! scheduler's timers, the store's writes and the API by over half a
//! second, enough for a hello task to miss its slot. With guests on a pool
//! of their own, the scheduler, the API and the store keep their own
//! threads, and the operating system shares the cores fairly between them.
//! A run's first slice still runs on its caller's thread: most runs end
//! there, and a hop to another thread would cost more than they do.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::Poll;

use anyhow::Context as _;
use futures_util::FutureExt as _;
use tokio::task::{JoinError, JoinHandle};

/// Task polls between two looks at timers and sockets on a guest thread.
/// A guest's poll lasts up to an epoch tick, so tokio's default of 61 would
/// leave a task's socket or sleep unattended for over half a second while
/// other guests spin; a look costs a non-blocking `epoll_wait`.
const GUEST_EVENT_INTERVAL: u32 = 2;

/// A multi-threaded tokio runtime for guest code, one thread per core.
pub(crate) struct GuestPool {
    runtime: Option<tokio::runtime::Runtime>,
}

impl GuestPool {
    pub fn new() -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("cronwerk-guest")
            .event_interval(GUEST_EVENT_INTERVAL)
            .enable_all()
            .build()
            .context("starting the threads that run tasks")?;
        Ok(GuestPool {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` and waits for it: its first slice on the caller's
    /// thread, the rest, if any, on the guest threads. Most runs end in
    /// their first slice (a guest gives its thread back at the latest at
    /// the next epoch tick), and handing one to another thread and back
    /// costs more than the whole run (9 µs for `hello` inline, about 80 µs
    /// through the pool); a run that goes on past its first slice is the
    /// kind that must not hold the caller's thread. Dropping the returned
    /// future stops `work` as dropping `work` itself would; a panic in it
    /// comes back as its message.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let mut work = Box::pin(AssertUnwindSafe(work).catch_unwind());
        let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
        let finished = match first {
            Poll::Ready(finished) => finished,
            Poll::Pending => {
                let runtime = self.runtime.as_ref().expect("the pool runs until dropped");
                let mut handle = AbortOnDrop(runtime.spawn(work));
                (&mut handle.0).await.map_err(panic_text)?
            }
        };
        finished.map_err(|panic| panic_message(&*panic))
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which an async context
        // (where the last `Runtime` handle often goes) must not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a task that did not finish (a panic, or an abort) left to say.
pub(super) fn panic_text(join: JoinError) -> String {
    match join.try_into_panic() {
        Ok(panic) => panic_message(&*panic),
        Err(join) => join.to_string(),
    }
}

/// The message a panic carried.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_goes_on_past_its_first_slice_moves_to_the_guest_threads() {
        let pool = GuestPool::new().unwrap();
        let name = pool
            .run(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_ne!(
            name.as_deref(),
            Some("cronwerk-guest"),
            "a first slice runs here"
        );
        let name = pool
            .run(async {
                tokio::task::yield_now().await;
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("cronwerk-guest"));
        let err = pool.run(async { panic!("on purpose") }).await.unwrap_err();
        assert_eq!(err, "on purpose");
    }

    #[tokio::test]
    async fn dropping_the_wait_stops_the_work() {
        let pool = GuestPool::new().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiting = pool.run(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        // Started, then dropped: the work (and the sender it holds) goes.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(20), waiting).await;
        assert!(rx.await.is_err(), "the sender was dropped with the work");
    }
}
