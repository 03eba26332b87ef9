"""Makes the task importable under pytest, with cronwerk's host stood in for.

componentize-py writes the `wit_world` bindings only into the component it
builds. Here they are generated from wit/task.wit into a temporary folder
for this test session (it takes milliseconds), and `cronwerk_testing`
answers their host functions. Run `pytest` from the project folder.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
BINDINGS = Path(tempfile.mkdtemp(prefix="cronwerk-bindings-"))


def _generate_bindings() -> None:
    # componentize-py's own entry point, from the environment pytest runs in
    # (requirements.txt installs both).
    generate = (
        "import sys; from componentize_py import script; "
        "sys.argv = ['componentize-py'] + sys.argv[1:]; sys.exit(script())"
    )
    done = subprocess.run(
        [sys.executable, "-c", generate, "-d", str(PROJECT / "wit"), "-w", "scheduled-task",
         "bindings", str(BINDINGS)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(
            "generating the wit_world bindings from wit/task.wit failed "
            f"(is componentize-py installed? pip install -r requirements.txt):\n{done.stderr}"
        )


_generate_bindings()
sys.path[:0] = [str(BINDINGS), str(PROJECT)]

import cronwerk_testing  # noqa: E402  (needs the bindings on the path)

cronwerk_testing.install()


def pytest_unconfigure(config):
    shutil.rmtree(BINDINGS, ignore_errors=True)
