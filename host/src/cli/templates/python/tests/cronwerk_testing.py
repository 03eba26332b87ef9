"""Running a cronwerk task's `execute` under pytest, with an in-memory host.

Inside cronwerk, the functions of `wit_world.imports` (log, state, config,
cancellation, farm, instance) reach the host. Under plain Python they do
not exist: this module stands in for the host with what a test sets up
(properties, settings, state, cancellation, instance, farm) and records
what the task did (its events, broadcasts and the state it leaves).

    host = TestHost(configuration="nightly", properties={"greeting": "Hi"})
    run = host.run(Task())
    assert run.ok and run.message == "greeted nightly, run 1"
    assert host.state == {"runs": "1"}

The state keeps the host's limits (keys 1 to 256 bytes, values up to
64 KiB, 1 MiB in all) and answers as the host does when one is crossed.
Not reproduced: the sandbox (files, network, clocks and randomness are the
test process's own), fuel, memory and time limits, stdout/stderr capture.
For those, test the built component itself: `cronwerk test FILE --cases
cases.toml`.

`conftest.py` generates the `wit_world` bindings and calls `install()`
before any test imports the task. This file is yours to extend; `cronwerk
new` wrote it and nothing updates it.
"""

from __future__ import annotations

import datetime as _dt
import importlib
from dataclasses import dataclass, field
from typing import Callable

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 64 * 1024
MAX_TOTAL_BYTES = 1024 * 1024

# The host running a task right now, if any (tests run one at a time).
_current: "TestHost | None" = None


@dataclass
class Event:
    """An event the task logged. `level` is trace, debug, info, warning or error."""

    level: str
    code: str
    message: str


@dataclass
class Broadcast:
    """A broadcast the task asked the farm for."""

    identifier: str
    target: str
    text: str
    data: bytes


@dataclass
class Run:
    """How one run went: `ok` and `message` as cronwerk would record them."""

    ok: bool
    message: str
    events: list[Event] = field(default_factory=list)
    broadcasts: list[Broadcast] = field(default_factory=list)


def _datetime(at: _dt.datetime) -> object:
    types = importlib.import_module("wit_world.imports.types")
    micros = round(at.timestamp() * 1_000_000)
    return types.Datetime(seconds=micros // 1_000_000, nanoseconds=(micros % 1_000_000) * 1000)


class TestHost:
    """An in-memory host for a task's tests.

    Give it what the run is told, call `run(task)`, then read the outcome
    and `state`. The state carries over from one `run` to the next, as
    between runs of a configuration. Defaults: a manual run (attempt 1) of
    configuration `test` of `Test.Task`, on instance `test`, with a farm and
    no properties, settings or state.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(
        self,
        *,
        configuration: str = "test",
        identifier: str = "Test.Task",
        trigger: str = "manual",
        attempt: int = 1,
        properties: dict[str, str] | None = None,
        settings: dict[str, str] | None = None,
        state: dict[str, str] | None = None,
        instance: str = "test",
        roles: list[str] | None = None,
        cancelled: bool = False,
        farm: bool = True,
        payload: tuple[str, str, bytes] | None = None,
        scheduled_for: _dt.datetime | None = None,
        time_left: _dt.timedelta | None = None,
        run_count: int = 0,
    ) -> None:
        self.configuration = configuration
        self.identifier = identifier
        # A payload makes a broadcast run, a slot a scheduled one, unless
        # the test says otherwise.
        if trigger == "manual" and payload is not None:
            trigger = "broadcast"
        elif trigger == "manual" and scheduled_for is not None:
            trigger = "schedule"
        self.trigger = trigger
        self.attempt = attempt
        self.properties = dict(properties or {})
        self.settings = dict(settings or {})
        self.state = dict(state or {})
        self.instance = instance
        self.roles = list(roles or [])
        self.cancelled = cancelled
        self.farm = farm
        self.payload = payload
        self.scheduled_for = scheduled_for
        self.time_left = time_left
        self.run_count = run_count
        self._run: Run | None = None

    def context(self) -> object:
        """The `types.RunContext` the task's `execute` is given."""
        types = importlib.import_module("wit_world.imports.types")
        try:
            trigger = types.Trigger[self.trigger.upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(t.name.lower().replace("_", "-") for t in types.Trigger)
            raise ValueError(f"trigger {self.trigger!r} is not one of {names}") from None
        now = _dt.datetime.now(_dt.timezone.utc)
        return types.RunContext(
            configuration_name=self.configuration,
            identifier=self.identifier,
            run_id="00000000-0000-7000-8000-000000000000",
            trigger=trigger,
            attempt=self.attempt,
            deadline=None if self.time_left is None else _datetime(now + self.time_left),
            scheduled_for=None if self.scheduled_for is None else _datetime(self.scheduled_for),
            last_run=None,
            next_run=None,
            run_count=self.run_count,
            instance_name=self.instance,
            properties=list(self.properties.items()),
        )

    def run(self, task: object) -> Run:
        """Runs `task.execute` once against this host.

        A returned string is success; `componentize_py_types.Err(message)`
        is failure. Any other exception is the test's: inside cronwerk it
        would end the run as a trap.
        """
        global _current
        types = importlib.import_module("wit_world.imports.types")
        errors = importlib.import_module("componentize_py_types")
        payload = None
        if self.payload is not None:
            target, text, data = self.payload
            payload = types.Payload(target=target, text=text, data=bytes(data))
        context = self.context()
        self._run = Run(ok=True, message="")
        _current = self
        try:
            message = task.execute(context, payload)
            if not isinstance(message, str):
                raise TypeError(
                    f"execute returned {type(message).__name__}; cronwerk records a str "
                    "(or a raised componentize_py_types.Err)"
                )
            self._run.message = message
        except errors.Err as failure:
            self._run.ok = False
            self._run.message = str(failure.value)
        finally:
            _current = None
        self.run_count += 1
        return self._run

    # What the host's interfaces answer while a run is on.

    def _write(self, level: object, code: str, message: str) -> None:
        assert self._run is not None
        self._run.events.append(Event(level.name.lower(), code, message))

    def _set_state(self, key: str, value: str) -> None:
        errors = importlib.import_module("componentize_py_types")
        key_bytes, value_bytes = len(key.encode()), len(value.encode())
        if key_bytes == 0 or key_bytes > MAX_KEY_BYTES:
            raise errors.Err(f"state key must be 1 to {MAX_KEY_BYTES} bytes, got {key_bytes}")
        if value_bytes > MAX_VALUE_BYTES:
            raise errors.Err(
                f"state value for '{key}' is {value_bytes} bytes; the limit is {MAX_VALUE_BYTES}"
            )
        total = sum(len(k.encode()) + len(v.encode()) for k, v in self.state.items() if k != key)
        total += key_bytes + value_bytes
        if total > MAX_TOTAL_BYTES:
            raise errors.Err(
                f"state would hold {total} bytes; the limit is {MAX_TOTAL_BYTES} per configuration"
            )
        self.state[key] = value

    def _remove_state(self, key: str) -> None:
        self.state.pop(key, None)

    def _broadcast(self, identifier: str, payload: object) -> str:
        errors = importlib.import_module("componentize_py_types")
        if not self.farm:
            raise errors.Err("no farm: this run was started without one (cronwerk exec)")
        assert self._run is not None
        self._run.broadcasts.append(
            Broadcast(identifier, payload.target, payload.text, bytes(payload.data))
        )
        return f"test-broadcast-{len(self._run.broadcasts)}"


def _host(call: str) -> TestHost:
    if _current is None:
        raise RuntimeError(
            f"{call} reached for cronwerk's host, which only a component running in "
            "cronwerk has; in a test, run the task with cronwerk_testing.TestHost().run(task)"
        )
    return _current


# Every import of wit/task.wit's world, answered by the running TestHost.
_IMPORTS: dict[str, dict[str, Callable[..., object]]] = {
    "log": {
        "write": lambda level, code, message: _host("log.write")._write(level, code, message),
    },
    "cancellation": {
        "is_cancelled": lambda: _host("cancellation.is_cancelled").cancelled,
    },
    "config": {
        "get": lambda key: _host("config.get").settings.get(key),
        "get_all": lambda: sorted(_host("config.get_all").settings.items()),
    },
    "state": {
        "get": lambda key: _host("state.get").state.get(key),
        "set": lambda key, value: _host("state.set")._set_state(key, value),
        "remove": lambda key: _host("state.remove")._remove_state(key),
        "keys": lambda: sorted(_host("state.keys").state),
    },
    "farm": {
        "broadcast": lambda identifier, payload: _host("farm.broadcast")._broadcast(
            identifier, payload
        ),
    },
    "instance": {
        "name": lambda: _host("instance.name").instance,
        "roles": lambda: list(_host("instance.roles").roles),
    },
}


def install() -> None:
    """Puts the test host behind every function of `wit_world.imports`.

    Call it before the task is imported, so that even a task that imported
    a function by name (`from wit_world.imports.state import get`) reaches
    the test host.
    """
    for interface, functions in _IMPORTS.items():
        module = importlib.import_module(f"wit_world.imports.{interface}")
        for name, function in functions.items():
            if not hasattr(module, name):
                raise RuntimeError(
                    f"wit_world.imports.{interface} has no {name}: wit/task.wit and "
                    "cronwerk_testing.py disagree (was the contract replaced?)"
                )
            setattr(module, name, function)
