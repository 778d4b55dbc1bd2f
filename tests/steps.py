"""What tests that drive a run's steps share: the step a run goes on from, a provider that fails as
told, and a worker killed in the middle of a call."""

import os
import signal

from tests.conftest import wait_until
from workflows.models import Step


def next_step(run) -> Step:
    """The run's latest step: the one it goes on from."""
    return run.steps.order_by("-sequence").first()


class BrokenProvider:
    """A stand-in for the fake provider whose every call raises `error`."""

    name = "fake"
    needs_credentials = False

    def __init__(self, error: Exception):
        self.error = error

    def complete(self, request, *, credentials=None):
        raise self.error


def kill_worker_during(run, *, role: str) -> Step:
    """SIGKILL the worker process running the run's step of `role` once it has started the step's call."""
    step = wait_until(
        lambda: Step.objects.filter(run=run, role=role, status="running").exclude(worker="").first(),
        message=f"the {role} step's call to start",
    )
    os.kill(int(step.worker.rsplit(":", 1)[1]), signal.SIGKILL)
    return step
