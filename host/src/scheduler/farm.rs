//! The web farm: which instances sharing a store are alive (a recent
//! heartbeat), and broadcasts — one run of a component on every live
//! instance, with a payload. Creating a broadcast records a delivery per
//! live instance; each instance's dispatcher runs its own. An instance that
//! joins later gets none of the earlier ones (a broadcast is about the
//! processes running now, e.g. their caches), unless it asks to catch up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::model::{
    BROADCAST_BYTES_PER_RUN, BROADCAST_MAX_DATA_BYTES, BROADCAST_MAX_TARGET_BYTES,
    BROADCAST_MAX_TEXT_BYTES, BROADCASTS_PER_RUN, BroadcastPayload, BroadcastRecord,
    BroadcastSender, InstanceRow,
};
use crate::runtime::Farm;
use crate::store::{NewBroadcast, Store, StoreError};

/// An instance whose heartbeat is older than this is considered gone: its
/// queued deliveries are recorded abandoned and new broadcasts skip it.
pub const LIVENESS: Duration = Duration::from_secs(15);
/// How often a serving instance writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Whether an instance counts as live at `now`: a heartbeat within [`LIVENESS`].
pub fn is_live(instance: &InstanceRow, now: DateTime<Utc>) -> bool {
    instance.heartbeat_at >= now - chrono::TimeDelta::from_std(LIVENESS).expect("small")
}

/// Instances whose heartbeat is recent, by the store's clock.
pub async fn live_instances(store: &dyn Store) -> Result<Vec<InstanceRow>, StoreError> {
    let now = store.clock().now();
    Ok(store
        .list_instances()
        .await?
        .into_iter()
        .filter(|i| is_live(i, now))
        .collect())
}

/// What a live instance's plugins folder serves for one identifier.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Served {
    pub version: String,
    pub sha256: String,
}

/// One identifier across the fleet: what each live instance serves for it
/// (in the order of [`FleetMatrix::instances`]; `None`: it has none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetRow {
    pub identifier: String,
    pub served: Vec<Option<Served>>,
    /// Not every live instance serves the same build (or one lacks it): a
    /// deploy under way, or one that stopped half way.
    pub skew: bool,
}

/// Identifier × live instance → version: a rolling deploy seen whole.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FleetMatrix {
    pub instances: Vec<String>,
    pub identifiers: Vec<FleetRow>,
}

/// The fleet matrix from the live instances and their plugin rows.
pub async fn fleet_matrix(store: &dyn Store) -> Result<FleetMatrix, StoreError> {
    let mut instances: Vec<String> = live_instances(store)
        .await?
        .into_iter()
        .map(|i| i.name)
        .collect();
    instances.sort();
    let mut by_identifier: std::collections::BTreeMap<String, Vec<Option<Served>>> =
        std::collections::BTreeMap::new();
    for row in store.list_plugins().await? {
        let Some(sha256) = row.served_sha256().map(str::to_owned) else {
            continue;
        };
        let (Some(identifier), Some(column)) = (
            row.identifier,
            instances.iter().position(|i| *i == row.instance),
        ) else {
            continue;
        };
        let cells = by_identifier
            .entry(identifier)
            .or_insert_with(|| vec![None; instances.len()]);
        cells[column] = Some(Served {
            version: row.version.unwrap_or_default(),
            sha256,
        });
    }
    let identifiers = by_identifier
        .into_iter()
        .map(|(identifier, served)| {
            let first = served.first().cloned().flatten();
            let skew = served
                .iter()
                .any(|s| s.as_ref().map(|s| &s.sha256) != first.as_ref().map(|f| &f.sha256))
                || first.is_none();
            FleetRow {
                identifier,
                served,
                skew,
            }
        })
        .collect();
    Ok(FleetMatrix {
        instances,
        identifiers,
    })
}

/// A part of a broadcast request. The CLI and the API name it their way
/// (a flag, a JSON field); a task is told it in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BroadcastField {
    Identifier,
    Target,
    Text,
    Data,
}

impl BroadcastField {
    /// The part in words: "the payload's target".
    pub fn describe(self) -> &'static str {
        match self {
            BroadcastField::Identifier => "the identifier",
            BroadcastField::Target => "the payload's target",
            BroadcastField::Text => "the payload's text",
            BroadcastField::Data => "the payload's data",
        }
    }
}

/// Why a broadcast was not made.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("{} {message}", field.describe())]
    Invalid {
        field: BroadcastField,
        message: String,
    },
    #[error(
        "no live instance to deliver to (a broadcast goes to the instances running when it is \
         made)"
    )]
    NoLiveInstance,
    #[error(
        "no live instance has the roles {} (a run's broadcast runs only where the run could)",
        .0.join(", ")
    )]
    NoInstanceWithRoles(Vec<String>),
    #[error("no live instance it would go to has loaded '{0}'")]
    NotLoaded(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to broadcast, and on whose behalf.
#[derive(Debug, Clone)]
pub struct BroadcastRequest {
    /// The identifier of the component every instance runs.
    pub identifier: String,
    pub payload: BroadcastPayload,
    /// Who asks, for the record.
    pub created_by: String,
    /// An instance to leave out (the one asking, when told to).
    pub exclude: Option<String>,
    /// The run that asks, if one does: its deliveries get at most its
    /// limits and go only to live instances with its roles.
    pub sender: Option<BroadcastSender>,
}

fn check(request: &BroadcastRequest) -> Result<(), BroadcastError> {
    let invalid = |field, message: String| BroadcastError::Invalid { field, message };
    crate::model::validate_identifier(&request.identifier).map_err(|m| {
        invalid(
            BroadcastField::Identifier,
            format!("'{}' is not an identifier: {m}", request.identifier),
        )
    })?;
    let p = &request.payload;
    for (field, len, max) in [
        (
            BroadcastField::Target,
            p.target.len(),
            BROADCAST_MAX_TARGET_BYTES,
        ),
        (BroadcastField::Text, p.text.len(), BROADCAST_MAX_TEXT_BYTES),
        (BroadcastField::Data, p.data.len(), BROADCAST_MAX_DATA_BYTES),
    ] {
        if len > max {
            return Err(invalid(
                field,
                format!(
                    "is {} long; a broadcast carries at most {} here (share bigger data \
                     through a granted directory or a URL and broadcast its name)",
                    bytesize::ByteSize(len as u64),
                    bytesize::ByteSize(max as u64)
                ),
            ));
        }
    }
    Ok(())
}

/// Records a broadcast for every live instance (but `exclude`, and, for a
/// run's broadcast, those lacking the run's roles); returns it with its
/// queued deliveries.
pub async fn broadcast(
    store: &dyn Store,
    request: BroadcastRequest,
    now: DateTime<Utc>,
) -> Result<BroadcastRecord, BroadcastError> {
    check(&request)?;
    let live: Vec<InstanceRow> = live_instances(store)
        .await?
        .into_iter()
        .filter(|i| Some(&i.name) != request.exclude.as_ref())
        .collect();
    if live.is_empty() {
        return Err(BroadcastError::NoLiveInstance);
    }
    let instances: Vec<String> = live
        .into_iter()
        .filter(|i| {
            request
                .sender
                .as_ref()
                .is_none_or(|s| s.missing_roles(&i.roles).is_empty())
        })
        .map(|i| i.name)
        .collect();
    if instances.is_empty() {
        let roles = request.sender.map(|s| s.roles).unwrap_or_default();
        return Err(BroadcastError::NoInstanceWithRoles(roles));
    }
    // A run names only an identifier some instance it reaches serves, so a
    // task cannot fill the store (and the metrics) with made-up names.
    if request.sender.is_some() {
        let loaded = store.list_plugins().await?.into_iter().any(|p| {
            p.served_sha256().is_some()
                && p.identifier.as_deref() == Some(request.identifier.as_str())
                && instances.contains(&p.instance)
        });
        if !loaded {
            return Err(BroadcastError::NotLoaded(request.identifier));
        }
    }
    let id = uuid::Uuid::now_v7().to_string();
    store
        .create_broadcast(&NewBroadcast {
            id: id.clone(),
            identifier: request.identifier,
            payload: request.payload,
            created_at: now,
            created_by: request.created_by,
            instances,
            sender: request.sender,
        })
        .await?;
    Ok(store.get_broadcast(&id).await?)
}

/// The `farm` import of one run on a serving instance.
pub struct RunFarm {
    pub(super) store: Arc<dyn Store>,
    /// Wakes this instance's dispatcher, which runs its own delivery.
    pub(super) wake: Arc<Notify>,
    pub(super) created_by: String,
    /// Runs that are themselves broadcasts may not broadcast: one task
    /// broadcasting itself would echo around the farm for ever.
    pub(super) from_broadcast: bool,
    /// The run's limits and roles, carried by each of its broadcasts.
    pub(super) sender: BroadcastSender,
    /// What the run has broadcast so far: how many, how many payload bytes.
    pub(super) spent: Mutex<(u32, u64)>,
}

impl RunFarm {
    /// Counts one more broadcast of `bytes` against the run's allowance, or
    /// says why it is over.
    fn charge(&self, bytes: u64) -> Result<(), String> {
        let mut spent = self.spent.lock().expect("not poisoned");
        let (count, total) = *spent;
        if count >= BROADCASTS_PER_RUN {
            return Err(format!(
                "a run may make at most {BROADCASTS_PER_RUN} broadcasts and this one has made \
                 them all"
            ));
        }
        if total.saturating_add(bytes) > BROADCAST_BYTES_PER_RUN {
            return Err(format!(
                "a run's broadcasts may carry at most {} of payload together; this one has \
                 sent {} and this payload is {}",
                bytesize::ByteSize(BROADCAST_BYTES_PER_RUN),
                bytesize::ByteSize(total),
                bytesize::ByteSize(bytes)
            ));
        }
        *spent = (count + 1, total + bytes);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Farm for RunFarm {
    async fn broadcast(
        &self,
        identifier: &str,
        payload: BroadcastPayload,
    ) -> Result<String, String> {
        if self.from_broadcast {
            return Err(format!(
                "cannot broadcast '{identifier}' from a broadcast run: it could echo around \
                 the farm; broadcast from a scheduled or manual run"
            ));
        }
        let bytes = (payload.target.len() + payload.text.len() + payload.data.len()) as u64;
        // Charged before the checks, so refused attempts count as well.
        self.charge(bytes)
            .map_err(|m| format!("cannot broadcast '{identifier}': {m}"))?;
        let now = self.store.clock().now();
        let request = BroadcastRequest {
            identifier: identifier.to_owned(),
            payload,
            created_by: self.created_by.clone(),
            exclude: None,
            sender: Some(self.sender.clone()),
        };
        match broadcast(&*self.store, request, now).await {
            Ok(record) => {
                // This instance's own delivery starts now, not at the next poll.
                self.wake.notify_one();
                Ok(record.id)
            }
            Err(e @ BroadcastError::Invalid { .. }) => Err(format!("cannot broadcast: {e}")),
            Err(e @ (BroadcastError::NoInstanceWithRoles(_) | BroadcastError::NotLoaded(_))) => {
                Err(format!("cannot broadcast '{identifier}': {e}"))
            }
            Err(e) => {
                tracing::error!("a task's broadcast of '{identifier}' failed: {e}");
                Err(format!("cannot broadcast '{identifier}': {e}"))
            }
        }
    }
}
