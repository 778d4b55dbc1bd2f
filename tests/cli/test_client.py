"""The typed client on its own, in the test process, against the live service and a real worker."""

import pytest

from budgetsvc_client.client import ApiError, BudgetsvcClient, Event, Run
from tests.cli.conftest import EXAMPLE
from workflows.models import Run as RunRow
from workflows.models import WorkflowVersion
from workflows.services.teams import api_key_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]


@pytest.fixture
def client(live_server, celery_worker, team):
    _, key = api_key_create(team=team, name="client")
    with BudgetsvcClient(live_server.url, key, timeout=10) as client:
        yield client


def test_a_start_retried_with_its_idempotency_key_starts_one_run(client):
    version = client.upload_workflow(EXAMPLE.read_text())
    first = client.start_run(version.id, inputs={"topic": "tides"}, idempotency_key="start-tides-1")
    again = client.start_run(version.id, inputs={"topic": "tides"}, idempotency_key="start-tides-1")
    assert again.id == first.id
    assert RunRow.objects.count() == 1
    with pytest.raises(ApiError) as reused:
        client.start_run(version.id, inputs={"topic": "other"}, idempotency_key="start-tides-1")
    assert (reused.value.status_code, reused.value.type) == (422, "idempotency_key_reused")


def test_follow_yields_the_events_once_and_ends_with_the_run_at_rest(client):
    version = client.upload_workflow(EXAMPLE.read_text())
    run = client.start_run(version.id, inputs={"topic": "tides"}, budget_usd="0.50", budget_mode="enforce")
    items = list(client.follow(run.id, interval=0.1))
    events = [item for item in items if isinstance(item, Event)]
    assert len({event.id for event in events}) == len(events)
    assert [e.payload["agent"] for e in events if e.type == "agent_completed"] == ["researcher"]
    last = items[-1]
    assert isinstance(last, Run) and last.status == "budget_exceeded" and str(last.spent_usd) == "0.300000"
    assert [e.id for e in client.events(run.id)] == [e.id for e in events]


def test_an_upload_is_a_new_version_only_when_the_source_changed(client):
    source = EXAMPLE.read_text()
    first = client.upload_workflow(source)
    assert (first.name, first.version, first.created) == ("research-pipeline", 1, True)
    unchanged = client.upload_workflow(source)
    assert (unchanged.id, unchanged.version, unchanged.created) == (first.id, 1, False)
    changed = client.upload_workflow(source.replace("draft a note", "draft a short note"))
    assert (changed.id, changed.version, changed.created) == (first.id, 2, True)
    assert WorkflowVersion.objects.count() == 2
