//! Which version of the task contract a component speaks, and calling its
//! `describe` and `execute` through that version's bindings. The rest of the
//! runtime deals in the host's own types; only this module and the import
//! implementations (`host_state`) know that versions differ.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use super::bindings::{v0_1, v0_2};
use super::context::RunContext;
use super::host_state::RunState;
use super::task_info::TaskInfo;
use crate::model::BroadcastPayload;

/// A version of `cronwerk:task` this host implements. Ordered oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Contract {
    V0_1,
    V0_2,
}

impl Contract {
    /// Every version the host links, oldest first.
    pub const ALL: [Contract; 2] = [Contract::V0_1, Contract::V0_2];
    /// The version new tasks are built against (`cronwerk new`, the SDK).
    pub const CURRENT: Contract = Contract::V0_2;

    /// The package version, e.g. `0.2.0`.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// The interface a task of this version exports.
    pub fn task_export(self) -> &'static str {
        match self {
            Contract::V0_1 => "cronwerk:task/task@0.1.0",
            Contract::V0_2 => "cronwerk:task/task@0.2.0",
        }
    }

    /// The version whose task interface is among `exports` (the newest, if
    /// a component somehow exports several).
    pub fn of_exports(exports: &[String]) -> Option<Contract> {
        Contract::ALL
            .into_iter()
            .rev()
            .find(|c| exports.iter().any(|e| e == c.task_export()))
    }

    /// The versions, as a list for messages: `0.1.0, 0.2.0`.
    pub fn all_versions() -> String {
        Contract::ALL.map(Contract::version).join(", ")
    }
}

/// Adds every version's host interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    v0_1::ScheduledTask::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    v0_2::ScheduledTask::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// A linked component, ready to instantiate, through its version's bindings.
#[derive(Clone)]
pub(crate) enum TaskPre {
    V0_1(v0_1::ScheduledTaskPre<RunState>),
    V0_2(v0_2::ScheduledTaskPre<RunState>),
}

impl TaskPre {
    /// Checks that the component's task export has `contract`'s shape.
    pub(crate) fn new(contract: Contract, pre: InstancePre<RunState>) -> wasmtime::Result<Self> {
        Ok(match contract {
            Contract::V0_1 => TaskPre::V0_1(v0_1::ScheduledTaskPre::new(pre)?),
            Contract::V0_2 => TaskPre::V0_2(v0_2::ScheduledTaskPre::new(pre)?),
        })
    }

    pub(crate) fn contract(&self) -> Contract {
        match self {
            TaskPre::V0_1(_) => Contract::V0_1,
            TaskPre::V0_2(_) => Contract::V0_2,
        }
    }

    /// Instantiates the component in `store` and asks it to describe itself.
    pub(crate) async fn describe(&self, store: &mut Store<RunState>) -> wasmtime::Result<TaskInfo> {
        // The versions' `task-info` records are alike, but distinct types.
        macro_rules! describe {
            ($pre:expr) => {{
                let task = $pre.instantiate_async(&mut *store).await?;
                let i = task.cronwerk_task_task().call_describe(&mut *store).await?;
                TaskInfo {
                    identifier: i.identifier,
                    display_name: i.display_name,
                    description: i.description,
                    version: i.version,
                    default_schedule: i.default_schedule,
                }
            }};
        }
        Ok(match self {
            TaskPre::V0_1(pre) => describe!(pre),
            TaskPre::V0_2(pre) => describe!(pre),
        })
    }

    /// Instantiates the component in `store` and runs `execute` once;
    /// `instantiated` is set when the instance is ready (traces show the
    /// two apart).
    pub(crate) async fn execute(
        &self,
        store: &mut Store<RunState>,
        run: &RunFacts<'_>,
        instantiated: &mut Option<std::time::SystemTime>,
    ) -> wasmtime::Result<Result<String, String>> {
        // The versions' payloads are alike, but distinct types.
        macro_rules! execute {
            ($pre:expr, $v:ident, $context:expr) => {{
                let payload = run.payload.map(|p| $v::cronwerk::task::types::Payload {
                    target: p.target.clone(),
                    text: p.text.clone(),
                    data: p.data.clone(),
                });
                let task = $pre.instantiate_async(&mut *store).await?;
                *instantiated = Some(std::time::SystemTime::now());
                task.cronwerk_task_task()
                    .call_execute(&mut *store, &$context, payload.as_ref())
                    .await
            }};
        }
        let (identifier, instance) = (run.identifier, run.instance_name);
        match self {
            TaskPre::V0_1(pre) => {
                execute!(pre, v0_1, run.context.to_v0_1(identifier, instance))
            }
            TaskPre::V0_2(pre) => execute!(
                pre,
                v0_2,
                run.context.to_v0_2(identifier, instance, run.deadline)
            ),
        }
    }
}

/// What `execute` is told, in the host's types.
pub(crate) struct RunFacts<'a> {
    pub context: &'a RunContext,
    pub identifier: &'a str,
    pub instance_name: &'a str,
    pub payload: Option<&'a BroadcastPayload>,
    /// When the wall-time limit stops the run.
    pub deadline: Option<std::time::SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_task_export() {
        let exports = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Contract::of_exports(&exports(&["cronwerk:task/task@0.1.0"])),
            Some(Contract::V0_1)
        );
        assert_eq!(
            Contract::of_exports(&exports(&["wasi:http/x@0.2.6", "cronwerk:task/task@0.2.0"])),
            Some(Contract::V0_2)
        );
        assert_eq!(
            Contract::of_exports(&exports(&["cronwerk:task/task@0.3.0"])),
            None
        );
        assert_eq!(Contract::all_versions(), "0.1.0, 0.2.0");
        assert_eq!(Contract::CURRENT, *Contract::ALL.last().unwrap());
    }
}
