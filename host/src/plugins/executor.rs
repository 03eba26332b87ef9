//! What a serving instance runs: whatever the plugins folder serves for an
//! identifier at the moment a run starts. One type, so that `serve`, the
//! benches and the tests all run tasks the same way.

use std::sync::Arc;

use super::Plugins;
use crate::runtime::{Execution, Executor, RunRequest};

/// Runs a task by identifier with the component the folder serves now.
pub struct PluginExecutor {
    plugins: Arc<Plugins>,
}

impl PluginExecutor {
    pub fn new(plugins: Arc<Plugins>) -> Self {
        PluginExecutor { plugins }
    }
}

#[async_trait::async_trait]
impl Executor for PluginExecutor {
    async fn execute(&self, implementation: &str, request: RunRequest) -> Execution {
        // The clone taken here is what the run uses to the end, even if a
        // new version replaces it meanwhile.
        let Some(component) = self.plugins.get(implementation) else {
            return Execution::Missing;
        };
        let report = self.plugins.runtime.run(&component, request).await;
        Execution::Ran {
            report: Box::new(report),
            version: component.info().version.clone(),
        }
    }
}
