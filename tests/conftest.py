import time

import pytest
from rest_framework.test import APIClient

from tests.factories import TeamFactory
from workflows.models import Run
from workflows.services.teams import api_key_create


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


def wait_for_run(run_id: int, *statuses: str, timeout: float = 30) -> Run:
    """Poll until the run reaches one of `statuses`; the worker runs on its own thread or process."""
    deadline = time.monotonic() + timeout
    while True:
        run = Run.objects.get(pk=run_id)
        if run.status in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} is '{run.status}' after {timeout}s, not one of {statuses}")
        time.sleep(0.05)
