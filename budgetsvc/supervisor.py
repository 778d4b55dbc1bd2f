"""The process supervisor of `manage.py serve`: it starts the web server, the workers and beat, restarts
whichever of them exits, and stops them all on SIGINT or SIGTERM.

Why a loop of our own rather than a well-kept supervisor: honcho (and foreman) stop every process when
one exits, which is the outage this module exists to prevent; supervisord restarts, but marks a process
FATAL and leaves it down after `startretries` quick failures, so a worker that fails for a minute while
the database restarts stays down for good, and it would be a second daemon with a configuration file of
its own. What `serve` needs is small: start a few commands, notice an exit, wait, start it again. The
policy (how long to wait) is `Backoff`, a pure class tested with a fake clock in tests/test_supervisor.py;
the loop is tested with real processes there and, as `manage.py serve`, in
tests/integration/test_serve.py.

Children stay in serve's process group, so Ctrl-C in a terminal and a signal to the group reach them
too. Each cleans up its own processes when it dies: Celery's pool processes have PR_SET_PDEATHSIG, and
gunicorn's workers exit when their parent changes.
"""

import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from signal import Signals

logger = logging.getLogger(__name__)


@dataclass
class Backoff:
    """How long to wait before restarting a child that exited: `first_delay`, doubling after each exit up
    to `max_delay`, and back to `first_delay` once the child had stayed up `healthy_after` seconds. A
    child that cannot start (a port in use, a database down) is tried again every `max_delay` seconds,
    never given up on: an operator fixing the cause sees the service come back by itself."""

    first_delay: float = 1.0
    max_delay: float = 60.0
    healthy_after: float = 60.0
    next_delay: float = field(init=False)

    def __post_init__(self):
        self.next_delay = self.first_delay

    def delay_after_exit(self, *, started_at: float, exited_at: float) -> float:
        if exited_at - started_at >= self.healthy_after:
            self.next_delay = self.first_delay
        delay = self.next_delay
        self.next_delay = min(delay * 2, self.max_delay)
        return delay


def exit_reason(returncode: int) -> str:
    """What a Popen return code says: an exit code, or the signal that killed the process."""
    if returncode < 0:
        try:
            return f"was killed by {Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Child:
    name: str
    argv: list[str]
    backoff: Backoff
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0


class Supervisor:
    """Runs `commands` (name to argv) until `stop()`; `run()` returns once every child has stopped.

    A child that exits is logged at ERROR with its exit code or signal (its own last words are on the
    same stderr just above) and started again after its `Backoff` delay; the others are left alone.
    On stop, every child gets SIGTERM, and whatever is still running `stop_timeout` seconds later gets
    SIGKILL."""

    def __init__(
        self,
        commands: Mapping[str, list[str]],
        *,
        env: Mapping[str, str] | None = None,
        backoff: Callable[[], Backoff] = Backoff,
        stop_timeout: float = 20.0,
        poll_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.children = [Child(name=name, argv=argv, backoff=backoff()) for name, argv in commands.items()]
        self.env = env
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.clock = clock
        self.stopping = False

    def stop(self, *_signal_args) -> None:
        """Ask `run()` to stop every child and return; safe to call from a signal handler."""
        self.stopping = True

    def run(self) -> None:
        try:
            for child in self.children:
                self._start(child)
            while not self.stopping:
                self.check()
                time.sleep(self.poll_interval)
        finally:
            # Whatever ends the loop, no child is left running unwatched.
            self._stop_all()

    def check(self) -> None:
        """One pass: note the children that exited and start those whose delay is over."""
        now = self.clock()
        for child in self.children:
            if child.process is None:
                if now >= child.restart_at:
                    child.restarts += 1
                    self._start(child)
                continue
            returncode = child.process.poll()
            if returncode is None:
                continue
            delay = child.backoff.delay_after_exit(started_at=child.started_at, exited_at=now)
            logger.error(
                "%s (pid %d) %s after %.0f s; restarting it in %g s.",
                child.name, child.process.pid, exit_reason(returncode), now - child.started_at, delay,
            )
            child.process = None
            child.restart_at = now + delay

    def _start(self, child: Child) -> None:
        try:
            child.process = subprocess.Popen(child.argv, env=self.env)
        except OSError as exc:  # no memory, no free pid, the executable being replaced: try again later
            now = self.clock()
            delay = child.backoff.delay_after_exit(started_at=now, exited_at=now)
            logger.error("%s could not be started (%s); trying again in %g s.", child.name, exc, delay)
            child.restart_at = now + delay
            return
        child.started_at = self.clock()
        logger.info("Started %s (pid %d).", child.name, child.process.pid)

    def _stop_all(self) -> None:
        running = [child.process for child in self.children if child.process and child.process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + self.stop_timeout
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logger.info("Stopped %s.", ", ".join(child.name for child in self.children))
