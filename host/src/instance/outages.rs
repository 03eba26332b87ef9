//! The event log's record of the store's outages. While the store is
//! unavailable nothing can be written to it, so its watcher reports an
//! outage on stderr as it happens and this writes one warning event for it
//! once the store takes writes again: the dashboard and `cronwerk events`
//! then show when the instance could not record anything, and why.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::model::{Level, NewEvent};
use crate::store::{Store, StoreHealth};

/// Appends a `STORE_UNAVAILABLE` event for every outage that ends.
pub(super) fn record(store: Arc<dyn Store>, health: Arc<StoreHealth>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            health.recovered().await;
            let events: Vec<NewEvent> = health
                .take_outages()
                .iter()
                .map(|o| NewEvent {
                    at: o.ended,
                    ..NewEvent::host(Level::Warning, "STORE_UNAVAILABLE", o.describe())
                })
                .collect();
            // Failing here means the store went away again; its watcher
            // says so, and the next outage is recorded when it ends.
            let _ = store.append_events(&events).await;
        }
    })
}
