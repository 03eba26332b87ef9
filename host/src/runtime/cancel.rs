//! Cooperative cancellation of a run: a flag the guest can poll, and the
//! moment it was raised, from which the grace period runs.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::Notify;

/// Shared by whoever may stop a run (shutdown, an operator) and the run
/// itself. Cloning shares the token.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requested_at: OnceLock<Instant>,
    notify: Notify,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop. Idempotent: the first request starts the grace
    /// period.
    pub fn cancel(&self) {
        if self.inner.requested_at.set(Instant::now()).is_ok() {
            self.inner.notify.notify_waiters();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.requested_at.get().is_some()
    }

    /// When the first request to stop came.
    pub fn requested_at(&self) -> Option<Instant> {
        self.inner.requested_at.get().copied()
    }

    /// Resolves once [`cancel`](Self::cancel) has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_waiters_and_keeps_the_first_request_time() {
        let token = CancelToken::new();
        let waiter = tokio::spawn({
            let token = token.clone();
            async move { token.cancelled().await }
        });
        assert!(!token.is_cancelled());
        token.cancel();
        let first = token.requested_at().unwrap();
        token.cancel();
        assert_eq!(token.requested_at(), Some(first));
        waiter.await.unwrap();
    }
}
