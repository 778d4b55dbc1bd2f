"""What tests that drive a run's steps one by one share: the step a run goes on from, and a provider
that fails as told."""

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
