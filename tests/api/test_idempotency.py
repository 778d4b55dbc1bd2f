"""The Idempotency-Key header on POST /runs and POST /runs/{id}/resume, as a client sees it."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from tests.conftest import client_for
from tests.factories import THREE_STEP_YAML, TeamFactory, workflow_version
from workflows.models import EventType, Run
from workflows.providers import CompletionResult
from workflows.services.steps import step_begin, step_settle

pytestmark = pytest.mark.django_db

BODY = {"workflow": "research-pipeline", "inputs": {"topic": "tides"}}
RESULT = CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=1000)


@pytest.fixture
def workflow(team):
    return workflow_version(team=team, source=THREE_STEP_YAML).workflow


def assert_error_shape(response, status: int, type_: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    if type_:
        assert error["type"] == type_
    return error


def start(api, key: str | None, body: dict = BODY, path: str = "/api/v1/runs"):
    headers = {} if key is None else {"Idempotency-Key": key}
    return api.post(path, body, format="json", headers=headers)


def resume(api, run_id: int, key: str, body: dict):
    return api.post(f"/api/v1/runs/{run_id}/resume", body, format="json", headers={"Idempotency-Key": key})


def stopped_run_id(api) -> int:
    """A run its enforce budget stopped before its second step: $0.30 spent of $0.50."""
    run_id = start(api, None, {**BODY, "limits": {"budget_usd": "0.5", "budget_mode": "enforce"}}).json()["id"]
    run = Run.objects.get(pk=run_id)
    step_settle(attempt=step_begin(step_id=run.steps.get(sequence=1).pk, worker="test:1"), result=RESULT)
    assert step_begin(step_id=run.steps.get(sequence=2).pk, worker="test:1") is None
    assert Run.objects.get(pk=run_id).status == "budget_exceeded"
    return run_id


def test_a_retried_start_replays_the_first_response_and_starts_no_second_run(api, workflow):
    first = start(api, "start-1")
    retry = start(api, "start-1", {"inputs": {"topic": "tides"}, "workflow": "research-pipeline"}, "/api/v1/runs/")

    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert list(Run.objects.values_list("id", flat=True)) == [first.json()["id"]]


def test_the_replay_is_the_first_response_not_the_run_as_it_is_now(api, workflow):
    first = start(api, "start-1").json()
    api.post(f"/api/v1/runs/{first['id']}/cancel", {}, format="json")

    replay = start(api, "start-1").json()
    assert replay == first
    assert replay["status"] == "queued"
    assert api.get(f"/api/v1/runs/{first['id']}").json()["status"] == "cancelled"


def test_a_key_reused_for_another_request_is_a_422_naming_the_key(api, workflow):
    run_id = start(api, "start-1").json()["id"]

    other_body = assert_error_shape(start(api, "start-1", {**BODY, "inputs": {"topic": "moons"}}), 422)
    other_path = assert_error_shape(resume(api, run_id, "start-1", BODY), 422)

    for error in (other_body, other_path):
        assert error["type"] == "idempotency_key_reused"
        assert "'start-1'" in error["message"]
        assert error["details"] == {"key": "start-1"}
    assert Run.objects.count() == 1


def test_keys_belong_to_the_team_that_used_them(api, workflow):
    mine = start(api, "shared-key").json()
    other_team = TeamFactory(name="globex")
    workflow_version(team=other_team, source=THREE_STEP_YAML)

    theirs = start(client_for(other_team), "shared-key")
    assert theirs.status_code == 202
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != mine["id"]


def test_a_key_expires_after_24_hours(api, workflow):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = start(api, "start-1").json()
        clock.shift(timedelta(hours=23, minutes=59))
        assert start(api, "start-1").json()["id"] == first["id"]

        clock.shift(timedelta(minutes=1))
        later = start(api, "start-1")
    assert later.status_code == 202
    assert "Idempotent-Replayed" not in later.headers
    assert later.json()["id"] != first["id"]
    assert Run.objects.count() == 2


def test_a_refused_request_does_not_use_up_its_key(api, workflow):
    refused = start(api, "start-1", {**BODY, "inputs": {}})
    assert_error_shape(refused, 400, "validation_error")

    corrected = start(api, "start-1")
    assert corrected.status_code == 202
    assert "Idempotent-Replayed" not in corrected.headers


def test_a_server_error_is_not_replayed(api, workflow, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    with monkeypatch.context() as patched:
        patched.setattr("workflows.api.views.run_start", broken)
        assert_error_shape(start(api, "start-1"), 500, "server_error")

    assert start(api, "start-1").status_code == 202
    assert Run.objects.count() == 1


@pytest.mark.parametrize("key", ["", "k" * 201, "ключ", "tab\there"])
def test_a_malformed_key_is_a_400_and_starts_nothing(api, workflow, key):
    error = assert_error_shape(api.post("/api/v1/runs", BODY, format="json", HTTP_IDEMPOTENCY_KEY=key), 400)
    assert error["type"] == "validation_error"
    assert error["details"] == [{"path": "Idempotency-Key", "message": "must be 1 to 200 printable ASCII characters"}]
    assert not Run.objects.exists()


def test_a_retried_resume_replays_its_202_instead_of_refusing_the_now_queued_run(api, workflow):
    run_id = stopped_run_id(api)
    body = {"budget_usd": "1", "reason": "approved by finance"}

    first = resume(api, run_id, "resume-1", body)
    retry = resume(api, run_id, "resume-1", body)
    another_resume = resume(api, run_id, "resume-2", body)

    assert (first.status_code, retry.status_code) == (202, 202)
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert_error_shape(another_resume, 409, "invalid_run_state")
    assert Run.objects.get(pk=run_id).events.filter(type=EventType.RUN_RESUMED).count() == 1


def test_requests_without_a_key_are_not_deduplicated(api, workflow):
    assert start(api, None).json()["id"] != start(api, None).json()["id"]
