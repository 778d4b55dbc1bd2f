import time

import pytest
from rest_framework.test import APIClient

from budgetsvc.logs import log_context_clear
from tests.factories import TeamFactory
from tests.resolver import Resolver
from workflows.models import Run
from workflows.services.teams import api_key_create


@pytest.fixture(autouse=True)
def resolver(monkeypatch) -> Resolver:
    """DNS for the service's outbound checks, answered by the test (see tests/resolver.py)."""
    fake = Resolver()
    monkeypatch.setattr("workflows.outbound.resolve", fake)
    return fake


@pytest.fixture(autouse=True)
def log_context():
    """Tests call the step services outside any task: each forgets the run and step its log lines
    were bound to, as a worker does after each task (budgetsvc/celery.py)."""
    yield
    log_context_clear()


@pytest.fixture
def team(db):
    return TeamFactory(name="acme")


def client_for(team) -> APIClient:
    _, raw_key = api_key_create(team=team, name="tests")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.fixture
def api(team) -> APIClient:
    """An API client authenticated with a key of `team`."""
    return client_for(team)


def wait_until(condition, *, timeout: float = 30, message: str = "condition"):
    """Poll `condition` until it returns something truthy; the worker runs on its own thread or process."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(0.05)


def wait_for_run(run_id: int, *statuses: str, timeout: float = 30) -> Run:
    return wait_until(
        lambda: Run.objects.filter(pk=run_id, status__in=statuses).first(),
        timeout=timeout,
        message=f"run {run_id} to reach one of {statuses}",
    )
