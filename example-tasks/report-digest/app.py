"""Acme.ReportDigest: digests the lines appended to `*.log` files since the
previous run.

The operator grants a directory at `/reports` (read-only is enough). Each run
reads only what was appended since the last run: the byte offset already
digested is kept per file in the task's state, so the task never re-reports a
line and needs no write access to the logs.

Properties: `title` (default `Digest`) heads the result; `max-files` (default
20) caps how many files one run digests (the rest wait for the next run).
Config: `team`, when set, is named at the end of the result.

Built with componentize-py: `Task` below implements the exported `task`
interface of cronwerk's `scheduled-task` world.
"""

import os

import componentize_py_types
from wit_world import exports
from wit_world.imports import cancellation, config, log, state, types

REPORTS = "/reports"
DEFAULT_TITLE = "Digest"
DEFAULT_MAX_FILES = 20


def fail(message: str) -> componentize_py_types.Err:
    """An exception that ends the run with `message` as its err result."""
    return componentize_py_types.Err(message)


def property_of(context: types.RunContext, name: str) -> str | None:
    for key, value in context.properties:
        if key == name:
            return value
    return None


def max_files_of(context: types.RunContext) -> int:
    raw = property_of(context, "max-files")
    if raw is None or raw.strip() == "":
        return DEFAULT_MAX_FILES
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise fail(f"property 'max-files' must be a whole number, got '{raw}'")
    if value < 1:
        raise fail(f"property 'max-files' must be at least 1, got '{raw}'")
    return value


def offset_key(name: str) -> str:
    return f"offset:{name}"


def stored_count(key: str) -> int:
    """A non-negative number kept in state; 0 when absent or not a number
    (a hand-edited value restarts the count rather than failing every run)."""
    raw = state.get(key)
    try:
        return max(0, int(raw)) if raw is not None else 0
    except ValueError:
        return 0


def set_state(key: str, value: str) -> None:
    try:
        state.set(key, value)
    except componentize_py_types.Err as e:
        raise fail(f"cannot store state key '{key}': {e.value}")


def log_files() -> list[str]:
    """Names of the regular `*.log` files in /reports, sorted."""
    try:
        entries = os.listdir(REPORTS)
    except OSError:
        raise fail(
            f"no {REPORTS} directory: grant one with --grant-dir HOST:{REPORTS}:ro"
        )
    return sorted(
        name
        for name in entries
        if name.endswith(".log") and os.path.isfile(os.path.join(REPORTS, name))
    )


class FileDigest:
    def __init__(self, name: str, lines: int, errors: int, warnings: int, end: int):
        self.name = name
        self.lines = lines
        self.errors = errors
        self.warnings = warnings
        # The offset the next run starts from.
        self.end = end


def digest(name: str, start: int) -> FileDigest | None:
    """Counts the complete lines of `name` after byte `start`; None if none."""
    path = os.path.join(REPORTS, name)
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size < start:
            # Shorter than what was digested: the file was truncated or
            # replaced (log rotation), so everything in it is new.
            start = 0
        f.seek(start)
        data = f.read(size - start)
    # A line still being written has no newline yet; it is digested next run.
    complete = data.rfind(b"\n") + 1
    if complete == 0:
        return None
    lines = data[:complete].splitlines()
    errors = sum(1 for line in lines if b"ERROR" in line)
    warnings = sum(1 for line in lines if b"WARN" in line)
    return FileDigest(name, len(lines), errors, warnings, start + complete)


def forget_missing(present: list[str]) -> None:
    """Drops the offsets of files that are gone, so state does not grow."""
    names = set(present)
    for key in state.keys():
        if key.startswith("offset:") and key[len("offset:") :] not in names:
            state.remove(key)


class Task(exports.Task):
    def describe(self) -> types.TaskInfo:
        return types.TaskInfo(
            identifier="Acme.ReportDigest",
            display_name="Report digest",
            description="Summarises the lines appended to the *.log files in "
            "/reports since the previous run: counts, errors and warnings per file.",
            version="1.0.0",
            default_schedule="every 1h",
        )

    def execute(
        self, context: types.RunContext, payload: types.Payload | None
    ) -> str:
        title = property_of(context, "title") or DEFAULT_TITLE
        max_files = max_files_of(context)
        team = config.get("team")

        runs = stored_count("runs") + 1
        set_state("runs", str(runs))

        names = log_files()
        forget_missing(names)

        digests: list[FileDigest] = []
        deferred = 0
        for name in names:
            if cancellation.is_cancelled():
                # What was digested so far is stored; the rest waits.
                log.write(log.Level.WARNING, "DIGEST_CANCELLED", "stopped early on request")
                break
            found = digest(name, stored_count(offset_key(name)))
            if found is None:
                continue
            if len(digests) == max_files:
                deferred += 1
                continue
            digests.append(found)
            set_state(offset_key(name), str(found.end))
            log.write(
                log.Level.INFO,
                "DIGEST_FILE",
                f"{name}: {found.lines} new lines, {found.errors} errors, "
                f"{found.warnings} warnings",
            )

        if deferred:
            log.write(
                log.Level.INFO,
                "DIGEST_DEFERRED",
                f"{deferred} more files have new lines; max-files is {max_files}, "
                "the next run digests them",
            )
        lines = sum(d.lines for d in digests)
        errors = sum(d.errors for d in digests)
        warnings = sum(d.warnings for d in digests)
        if errors > 0:
            log.write(log.Level.WARNING, "DIGEST_ERRORS", f"{errors} new error lines")

        result = (
            f"{title}: {len(digests)} files, {lines} new lines, "
            f"{errors} errors, {warnings} warnings"
        )
        if team:
            result += f" (team {team})"
        return result
