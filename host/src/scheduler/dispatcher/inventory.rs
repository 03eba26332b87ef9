//! Which components the other live instances serve, so that an instance
//! whose plugins folder lacks a configuration's component leaves its runs
//! to one that has it (in a web farm a deploy rolls: for minutes one
//! instance has a task and another has not). Read from the store's plugin
//! rows and heartbeats only when this instance lacks a component, and kept
//! for a second, so a pass with everything loaded reads nothing more.

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Dispatcher;
use crate::model::{PluginState, TaskRecord, missing_roles};
use crate::runtime::Availability;
use crate::store::StoreResult;

/// How long a read of the fleet's inventory is used (by the dispatcher's
/// clock).
const FRESH_FOR: TimeDelta = TimeDelta::seconds(1);

/// The live instances, by name, with their roles and the identifiers
/// their folders serve.
#[derive(Debug, Default)]
pub(super) struct Fleet {
    instances: HashMap<String, (Vec<String>, Vec<String>)>,
}

impl Fleet {
    /// The other live instances that could run `task`: they serve its
    /// identifier and have its roles.
    pub(super) fn able(&self, task: &TaskRecord, me: &str) -> Vec<&str> {
        let mut able: Vec<&str> = self
            .instances
            .iter()
            .filter(|(name, (roles, served))| {
                name.as_str() != me
                    && served.contains(&task.config.implementation)
                    && missing_roles(&task.config.roles, roles).is_empty()
            })
            .map(|(name, _)| name.as_str())
            .collect();
        able.sort();
        able
    }

    /// The live instances (this one too) that lack `identifier`.
    pub(super) fn lacking(&self, identifier: &str) -> Vec<&str> {
        let mut lacking: Vec<&str> = self
            .instances
            .iter()
            .filter(|(_, (_, served))| !served.iter().any(|s| s == identifier))
            .map(|(name, _)| name.as_str())
            .collect();
        lacking.sort();
        lacking
    }
}

/// The latest read of the fleet, and when it was made.
#[derive(Default)]
pub(super) struct Inventory {
    read: Mutex<Option<(DateTime<Utc>, Arc<Fleet>)>>,
}

impl Dispatcher {
    /// Whether this instance should leave `task`'s runs to another: its
    /// folder lacks the component (not merely still compiling it) and
    /// another live instance with the roles serves it. When none does, it
    /// runs here, and fails saying which instances lack it.
    pub(super) async fn leave_to_others(&self, task: &TaskRecord) -> StoreResult<bool> {
        if self.executor.availability(&task.config.implementation) != Availability::Lacks {
            return Ok(false);
        }
        let fleet = self.fleet().await?;
        Ok(!fleet.able(task, &self.config.instance.name).is_empty())
    }

    /// The fleet's inventory, read at most once per [`FRESH_FOR`].
    pub(super) async fn fleet(&self) -> StoreResult<Arc<Fleet>> {
        let now = self.clock.now();
        if let Some(fleet) = self.inventory.fresh(now) {
            return Ok(fleet);
        }
        let live = crate::scheduler::farm::live_instances(&*self.store).await?;
        let mut instances: HashMap<String, (Vec<String>, Vec<String>)> = live
            .into_iter()
            .map(|i| (i.name, (i.roles, Vec::new())))
            .collect();
        for row in self.store.list_plugins().await? {
            if let (PluginState::Ok, Some(identifier), Some((_, served))) =
                (row.status, row.identifier, instances.get_mut(&row.instance))
            {
                served.push(identifier);
            }
        }
        let fleet = Arc::new(Fleet { instances });
        self.inventory.keep(now, fleet.clone());
        Ok(fleet)
    }
}

impl Inventory {
    /// The latest read, if it is younger than [`FRESH_FOR`] at `now`.
    fn fresh(&self, now: DateTime<Utc>) -> Option<Arc<Fleet>> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        match &*read {
            Some((at, fleet)) if *at <= now && now - *at < FRESH_FOR => Some(fleet.clone()),
            _ => None,
        }
    }

    fn keep(&self, at: DateTime<Utc>, fleet: Arc<Fleet>) {
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, fleet));
    }
}
