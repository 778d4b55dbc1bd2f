"""Running a script step's command on a worker: no shell, a scratch directory of its own, an
environment of nothing but what the step sets, a timeout, and limits on CPU, memory and output.

The limits are set by a small launcher that then becomes the command (exec), rather than in the
worker between fork and exec, which is unsafe in a process with threads. They bound one script,
not a team: an operator who allows untrusted teams to run scripts should run those workers in a
container or VM of their own (docs/operations.md).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import IO

from django.conf import settings

_LAUNCHER = """\
import os, resource, sys
cpu, memory, output = (int(limit) for limit in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execv(sys.argv[4], sys.argv[4:])
"""


class ScriptFailed(Exception):
    """The command could not be run, or ran past its timeout; the message says which."""


@dataclass(frozen=True)
class ScriptResult:
    stdout: str
    stderr: str
    exit_code: int


def script_run(*, command: str, args: list[str], env: dict[str, str], stdin: str | None, timeout: float) -> ScriptResult:
    """Run `command` with `args`, as the module says; ScriptFailed if it cannot be run or times out."""
    program = _program(command)
    memory = settings.SCRIPT_MAX_MEMORY_MB * 1024 * 1024
    limits = [str(int(timeout) + 1), str(memory), str(settings.SCRIPT_MAX_OUTPUT_BYTES)]
    with (
        tempfile.TemporaryDirectory(prefix="budgetsvc-script-") as scratch,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        scrubbed = {"LANG": "C.UTF-8", **env, "PATH": settings.SCRIPT_PATH, "HOME": scratch, "TMPDIR": scratch}
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, *limits, program, *args],
            cwd=scratch,
            env=scrubbed,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: whatever it starts is stopped with it
        )
        try:
            process.communicate(input=stdin.encode() if stdin is not None else None, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ScriptFailed(f"'{command}' ran longer than its {timeout:g} seconds and was stopped.") from None
        finally:
            _stop_group(process)
        return ScriptResult(stdout=_text(stdout), stderr=_text(stderr), exit_code=process.returncode)


def _program(command: str) -> str:
    """The command's executable: an absolute path, or a name looked up on SCRIPT_PATH only."""
    if os.path.isabs(command):
        found = command if os.access(command, os.X_OK) and os.path.isfile(command) else None
    elif "/" in command:
        raise ScriptFailed(f"'{command}' is a relative path; give a name on SCRIPT_PATH or an absolute path.")
    else:
        found = shutil.which(command, path=settings.SCRIPT_PATH)
    if found is None:
        raise ScriptFailed(f"'{command}' is not an executable on the worker's SCRIPT_PATH ({settings.SCRIPT_PATH}).")
    return found


def _stop_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _text(output: IO[bytes]) -> str:
    """What the script wrote, as text that any database can store (at most SCRIPT_MAX_OUTPUT_BYTES)."""
    output.seek(0)
    return output.read(settings.SCRIPT_MAX_OUTPUT_BYTES).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
