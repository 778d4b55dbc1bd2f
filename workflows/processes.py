"""Starting a command a team names on a worker (a script step's, a stdio MCP server's): no shell, an
executable found on SCRIPT_PATH only, an environment of nothing but what the team sets and the
service's PATH, HOME and TMPDIR, and limits on CPU, memory and file size.

The limits are set by a small launcher that then becomes the command (exec), rather than in the
worker between fork and exec, which is unsafe in a process with threads. They bound one process,
not a team: an operator who lets untrusted teams run commands should run those workers in a
container or VM of their own (docs/operations.md#script-steps). The caller starts the launcher in a
new session (`start_new_session=True`) and stops it with `kill_group`, which stops whatever it
started too.
"""

import os
import shutil
import signal
import sys

from django.conf import settings

# PR_SET_PDEATHSIG (Linux): the command is killed when the worker dies, even by SIGKILL, which gives
# the worker no chance to stop it. Checked against the worker's pid afterwards: a worker that died
# before the call has already handed the launcher to another parent.
_LAUNCHER = """\
import os, resource, sys
worker, cpu, memory, output = (int(value) for value in sys.argv[1:5])
if sys.platform.startswith("linux"):
    import ctypes, signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != worker:
        sys.exit(1)
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (output, output))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
os.execv(sys.argv[5], sys.argv[5:])
"""


class ProgramRefused(Exception):
    """The command is not an executable the worker may run; the message says why."""


def program(command: str) -> str:
    """The command's executable: an absolute path, or a name looked up on SCRIPT_PATH only."""
    if os.path.isabs(command):
        found = command if os.access(command, os.X_OK) and os.path.isfile(command) else None
    elif "/" in command:
        raise ProgramRefused(f"'{command}' is a relative path; give a name on SCRIPT_PATH or an absolute path.")
    else:
        found = shutil.which(command, path=settings.SCRIPT_PATH)
    if found is None:
        raise ProgramRefused(f"'{command}' is not an executable on the worker's SCRIPT_PATH ({settings.SCRIPT_PATH}).")
    return found


def launcher_arguments(executable: str, args: list[str], *, timeout: float) -> list[str]:
    """The argv that runs `executable` with `args` under the limits: CPU for the timeout and a second,
    SCRIPT_MAX_MEMORY_MB of address space, SCRIPT_MAX_OUTPUT_BYTES per file written, no core dump."""
    memory = settings.SCRIPT_MAX_MEMORY_MB * 1024 * 1024
    limits = [str(os.getpid()), str(int(timeout) + 1), str(memory), str(settings.SCRIPT_MAX_OUTPUT_BYTES)]
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, *limits, executable, *args]


def scrubbed_environment(env: dict[str, str], *, scratch: str) -> dict[str, str]:
    """The command's whole environment: what the team sets, with the service's PATH, and HOME and
    TMPDIR in the command's scratch directory; nothing of the worker's own."""
    return {"LANG": "C.UTF-8", **env, "PATH": settings.SCRIPT_PATH, "HOME": scratch, "TMPDIR": scratch}


def kill_group(pid: int) -> None:
    """SIGKILL the process group the launcher leads: the command and whatever it started."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
