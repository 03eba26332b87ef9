"""__IDENTIFIER__: a cronwerk scheduled task.

`Task.describe` tells the host who this task is; `Task.execute` does one run.
componentize-py generates the `wit_world` package from wit/task.wit when it
builds the component: `wit_world.imports` holds the host's interfaces (log,
state, config, cancellation, farm, instance) and `types` the records.
"""

import componentize_py_types
from wit_world import exports
from wit_world.imports import log, state, types


def property_of(context: types.RunContext, key: str) -> str | None:
    """The value of the configuration's property `key`, if set."""
    for name, value in context.properties:
        if name == key:
            return value
    return None


class Task(exports.Task):
    def describe(self) -> types.TaskInfo:
        # Called once when the host loads the component. Configurations refer
        # to the task by `identifier`; keep it stable across versions.
        return types.TaskInfo(
            identifier="__IDENTIFIER__",
            display_name="__DISPLAY_NAME__",
            description="Greets the configuration it runs for and counts its runs.",
            version="0.1.0",
            default_schedule="every 1m",
        )

    def execute(self, context: types.RunContext, payload: types.Payload | None) -> str:
        # One run. A returned string is success (empty: nothing to report);
        # raising componentize_py_types.Err(message) is failure. Either
        # message is the run's result.

        # Properties are set per configuration (`--property greeting=Hi`).
        greeting = property_of(context, "greeting")
        if greeting is None:
            greeting = "Hello"
        if greeting.strip() == "":
            raise componentize_py_types.Err(
                "property 'greeting' is empty: set a word such as Hi, or leave it out"
            )

        # State is kept per configuration from one run to the next.
        try:
            runs = int(state.get("runs") or "0") + 1
        except ValueError:
            runs = 1  # not a number (edited by hand?): count again from 1
        try:
            state.set("runs", str(runs))
        except componentize_py_types.Err as e:
            raise componentize_py_types.Err(f"cannot store the run count: {e.value}")

        # Events land in the host's event log, tagged with this run's id.
        name = context.configuration_name
        log.write(log.Level.INFO, "GREETING", f"{greeting}, {name}!")

        return f"greeted {name}, run {runs}"
