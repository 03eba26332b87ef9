//! What makes the dashboard live: one watcher per server polls the store's
//! change token (a cheap read that also sees other processes' commits: the
//! CLI, other instances) and bumps a counter that every Server-Sent Events
//! stream waits on. Streams then read what is new with their own filter, so
//! a slow client never holds anyone else up and nothing is buffered per
//! client.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

/// How often the store is asked whether anything changed: the latency of
/// the live views.
const POLL: Duration = Duration::from_millis(200);

/// A counter that moves whenever the store changed.
pub struct Live {
    changes: watch::Receiver<u64>,
    poller: tokio::task::JoinHandle<()>,
}

impl Live {
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, changes) = watch::channel(0u64);
        let poller = tokio::spawn(async move {
            let mut last = store.change_token().await.ok();
            loop {
                tokio::time::sleep(POLL).await;
                let token = store.change_token().await.ok();
                if token != last {
                    last = token;
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        Live { changes, poller }
    }

    /// A receiver that wakes on the next change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.changes.clone();
        rx.mark_unchanged();
        rx
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.poller.abort();
    }
}
