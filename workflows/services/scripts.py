"""Running a script step's command on a worker: no shell, a scratch directory of its own, an
environment of nothing but what the step sets, a timeout, and limits on CPU, memory and output
(workflows/processes.py starts it)."""

import subprocess
import tempfile
from dataclasses import dataclass
from typing import IO

from django.conf import settings

from workflows import processes


class ScriptFailed(Exception):
    """The command could not be run, or ran past its timeout; the message says which."""


@dataclass(frozen=True)
class ScriptResult:
    stdout: str
    stderr: str
    exit_code: int


def script_run(*, command: str, args: list[str], env: dict[str, str], stdin: str | None, timeout: float) -> ScriptResult:
    """Run `command` with `args`, as the module says; ScriptFailed if it cannot be run or times out."""
    try:
        executable = processes.program(command)
    except processes.ProgramRefused as exc:
        raise ScriptFailed(str(exc)) from None
    with (
        tempfile.TemporaryDirectory(prefix="budgetsvc-script-") as scratch,
        tempfile.TemporaryFile() as stdout,
        tempfile.TemporaryFile() as stderr,
    ):
        process = subprocess.Popen(
            processes.launcher_arguments(executable, args, timeout=timeout),
            cwd=scratch,
            env=processes.scrubbed_environment(env, scratch=scratch),
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
            processes.kill_group(process.pid)
            process.wait()
        return ScriptResult(stdout=_text(stdout), stderr=_text(stderr), exit_code=process.returncode)


def _text(output: IO[bytes]) -> str:
    """What the script wrote, as text that any database can store (at most SCRIPT_MAX_OUTPUT_BYTES)."""
    output.seek(0)
    return output.read(settings.SCRIPT_MAX_OUTPUT_BYTES).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
