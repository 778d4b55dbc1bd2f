"""The launcher a team's command starts under (workflows/processes.py): its command dies with the
worker, even when the worker is SIGKILLed and can stop nothing itself."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.services.test_scripts import running

ROOT = Path(__file__).resolve().parent.parent
# A stand-in worker: starts `sleep` through the launcher, says its pid, and waits to be killed.
_WORKER = """\
import subprocess, sys, time
import django
django.setup()
from workflows import processes
child = subprocess.Popen(processes.launcher_arguments("/bin/sleep", ["60"], timeout=60), start_new_session=True)
print(child.pid, flush=True)
time.sleep(60)
"""


def started_sleeping(pid: int) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/bin/sleep"):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_command_dies_with_a_sigkilled_worker():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True)
    try:
        command = int(worker.stdout.readline())
        assert started_sleeping(command)  # past the launcher: the command itself
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert not running(command)
    finally:
        worker.kill()
        worker.wait()
