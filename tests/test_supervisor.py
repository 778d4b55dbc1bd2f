"""The supervisor of `manage.py serve` (budgetsvc/supervisor.py): a child that exits is restarted after a
delay that doubles up to a ceiling, the others are left running, and a stop ends them all."""

import logging
import signal
import subprocess
import sys
import threading

import pytest

from budgetsvc.supervisor import Backoff, Supervisor, exit_reason
from tests.conftest import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
FAILS_AT_ONCE = [sys.executable, "-c", "import sys; sys.exit(3)"]
IGNORES_SIGTERM = [
    sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)",
]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_delay_doubles_from_one_second_to_a_minute_and_stays_there():
    backoff = Backoff()
    delays = []
    started = 0.0
    for _ in range(9):
        delay = backoff.delay_after_exit(started_at=started, exited_at=started + 2)
        delays.append(delay)
        started += 2 + delay
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_the_delay_starts_again_from_one_second_after_the_child_stayed_up_a_minute():
    backoff = Backoff()
    for _ in range(5):
        backoff.delay_after_exit(started_at=0, exited_at=1)
    assert backoff.delay_after_exit(started_at=100, exited_at=159) == 32  # up 59 s: still failing
    assert backoff.delay_after_exit(started_at=200, exited_at=260) == 1  # up a minute: healthy again
    assert backoff.delay_after_exit(started_at=300, exited_at=301) == 2


def test_an_exit_is_described_by_its_code_or_its_signal():
    assert exit_reason(1) == "exited with code 1"
    assert exit_reason(-signal.SIGKILL) == "was killed by SIGKILL"


def test_an_exited_child_is_restarted_after_its_delay_and_the_others_keep_running(caplog):
    clock = FakeClock()
    supervisor = Supervisor({"sleeper": SLEEPER, "failing": FAILS_AT_ONCE}, clock=clock)
    sleeper, failing = supervisor.children
    caplog.set_level(logging.INFO, logger="budgetsvc.supervisor")
    try:
        for child in supervisor.children:
            supervisor._start(child)
        first = failing.process
        first.wait()
        clock.now = 5.0
        supervisor.check()
        assert failing.process is None
        assert f"failing (pid {first.pid}) exited with code 3 after 5 s; restarting it in 1 s." in caplog.text

        clock.now = 5.9
        supervisor.check()
        assert failing.process is None
        clock.now = 6.0
        supervisor.check()
        assert failing.process is not None and failing.restarts == 1
        failing.process.wait()
        clock.now = 6.5
        supervisor.check()
        assert "restarting it in 2 s." in caplog.text

        assert sleeper.process.poll() is None and sleeper.restarts == 0
    finally:
        for child in supervisor.children:
            if child.process:
                child.process.kill()
                child.process.wait()


def test_stop_terminates_every_child_and_kills_one_that_ignores_sigterm():
    supervisor = Supervisor({"sleeper": SLEEPER, "stubborn": IGNORES_SIGTERM}, stop_timeout=1, poll_interval=0.02)
    running = threading.Thread(target=supervisor.run)
    running.start()
    try:
        wait_until(lambda: all(child.process for child in supervisor.children), message="both children to start")
        stubborn = supervisor.children[1].process
        # Its handler is in place only once it has run its first line; before that SIGTERM would end it.
        wait_until(lambda: _ignores_sigterm(stubborn.pid), message="the stubborn child to ignore SIGTERM")
        supervisor.stop()
        running.join(timeout=10)
        assert not running.is_alive()
        sleeper = supervisor.children[0].process
        assert sleeper.returncode == -signal.SIGTERM
        assert stubborn.returncode == -signal.SIGKILL
    finally:
        supervisor.stop()
        running.join(timeout=10)


def _ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as status:
        ignored = int(next(line for line in status if line.startswith("SigIgn:")).split()[1], 16)
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


def test_a_child_that_cannot_start_is_retried_not_given_up_on():
    clock = FakeClock()
    supervisor = Supervisor({"failing": FAILS_AT_ONCE}, clock=clock)
    (failing,) = supervisor.children
    supervisor._start(failing)
    for _ in range(12):
        failing.process.wait()
        supervisor.check()  # notes the exit
        clock.now = failing.restart_at
        supervisor.check()  # starts it again
    failing.process.wait()
    assert failing.restarts == 12
    assert failing.backoff.next_delay == 60


def test_a_child_whose_process_cannot_be_created_is_tried_again_and_the_others_keep_running(monkeypatch, caplog):
    """Popen itself fails (no free pid, no memory, the executable being replaced): that child is tried
    again after its delay, and serve goes on watching the others."""
    clock = FakeClock()
    supervisor = Supervisor({"web": SLEEPER, "worker": FAILS_AT_ONCE}, clock=clock)
    web, worker = supervisor.children
    real_popen = subprocess.Popen

    def no_more_processes(argv, **kwargs):
        raise OSError(11, "Resource temporarily unavailable")

    try:
        supervisor._start(web)
        monkeypatch.setattr(subprocess, "Popen", no_more_processes)
        with caplog.at_level(logging.ERROR):
            supervisor._start(worker)
        assert worker.process is None and worker.restart_at == 1
        assert "worker could not be started ([Errno 11] Resource temporarily unavailable); trying again in 1 s." in caplog.text

        monkeypatch.setattr(subprocess, "Popen", real_popen)
        clock.now = 1
        supervisor.check()
        assert worker.process is not None and worker.restarts == 1
        assert web.process.poll() is None
    finally:
        supervisor._stop_all()


def test_whatever_ends_the_loop_stops_every_child(monkeypatch):
    supervisor = Supervisor({"web": SLEEPER}, poll_interval=0.01)

    def broken_check():
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(supervisor, "check", broken_check)
    with pytest.raises(RuntimeError):
        supervisor.run()
    (web,) = supervisor.children
    assert web.process.poll() is not None
