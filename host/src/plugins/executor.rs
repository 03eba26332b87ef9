//! What a serving instance runs: whatever the plugins folder serves for an
//! identifier at the moment a run starts. One type, so that `serve`, the
//! benches and the tests all run tasks the same way.

use std::sync::Arc;
use std::time::Duration;

use super::Plugins;
use crate::runtime::{Availability, Component, Execution, Executor, RunRequest};

/// Runs a task by identifier with the component the folder serves now.
pub struct PluginExecutor {
    plugins: Arc<Plugins>,
}

impl PluginExecutor {
    pub fn new(plugins: Arc<Plugins>) -> Self {
        PluginExecutor { plugins }
    }
}

impl PluginExecutor {
    /// The component serving `identifier`. While files found at start are
    /// still compiling, one of them may be it: wait for them, up to the
    /// run's own time limit, rather than fail the run.
    async fn served(&self, identifier: &str, within: Duration) -> Option<Component> {
        let mut changes = self.plugins.changes();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(component) = self.plugins.get(identifier) {
                return Some(component);
            }
            if !self.plugins.is_compiling() {
                return None;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.plugins.get(identifier),
            }
        }
    }
}

#[async_trait::async_trait]
impl Executor for PluginExecutor {
    fn availability(&self, implementation: &str) -> Availability {
        if self.plugins.get(implementation).is_some() {
            Availability::Serves
        } else if self.plugins.is_compiling() {
            Availability::Loading
        } else {
            Availability::Lacks
        }
    }

    async fn execute(&self, implementation: &str, request: RunRequest) -> Execution {
        // The clone taken here is what the run uses to the end, even if a
        // new version replaces it meanwhile.
        let Some(component) = self.served(implementation, request.limits.timeout).await else {
            return Execution::Missing;
        };
        let report = self.plugins.runtime.run(&component, request).await;
        Execution::Ran {
            report: Box::new(report),
            version: component.info().version.clone(),
        }
    }
}
