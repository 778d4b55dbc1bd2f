"""GET /api/v1/runs/<id>/events/stream: framing, resume, the end, the errors and the per-team cap
(workflows/api/streams.py). A stream served live, with a worker, is tested in tests/integration/test_streams.py."""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.conftest import client_for
from tests.factories import THREE_STEP_YAML, TeamFactory, workflow_version
from workflows.api.streams import run_event_stream
from workflows.models import Event, EventType, Run, RunStatus
from workflows.services.events import event_record

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def free_slots():
    """Slots are cache keys; each test starts with none taken (an unread stream keeps its slot until closed)."""
    cache.delete_many([f"event-stream:team-{team_id}:slot-{slot}" for team_id in range(1, 50) for slot in range(20)])


@pytest.fixture
def run(api, team) -> Run:
    workflow_version(team=team, source=THREE_STEP_YAML)
    run_id = api.post("/api/v1/runs", {"workflow": "research-pipeline", "inputs": {"topic": "x"}}, format="json").json()["id"]
    return Run.objects.get(pk=run_id)


def stopped(run: Run, status: str = RunStatus.COMPLETED) -> Run:
    """The run as a worker leaves it: some events, then a status that needs a person."""
    event_record(run=run, type=EventType.RUN_STARTED)
    event_record(run=run, type=EventType.AGENT_COMPLETED, payload={"agent": "researcher", "spent_usd": "0.012000"})
    Run.objects.filter(pk=run.pk).update(status=status)
    return run


def body_of(response) -> str:
    return b"".join(async_to_sync(_collect)(response.streaming_content)).decode()


async def _collect(chunks) -> list[bytes]:
    return [chunk async for chunk in chunks]


def frames(body: str) -> list[dict]:
    """The events of a body as an EventSource reads them: {id, event, data} per blank-line-ended block."""
    parsed = []
    for block in body.split("\n\n")[:-1]:
        fields = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        parsed.append(fields)
    return parsed


def test_a_stopped_runs_stream_sends_every_event_as_the_list_shows_it_then_end(api, run):
    stopped(run)
    listed = api.get(f"/api/v1/runs/{run.pk}/events").json()["results"]

    response = api.get(f"/api/v1/runs/{run.pk}/events/stream", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    body = body_of(response)
    assert body.startswith("retry: 2000\n\n")
    sent = frames(body)[1:]
    assert [(frame["id"], frame["event"]) for frame in sent[:-1]] == [(str(item["id"]), item["type"]) for item in listed]
    assert [json.loads(frame["data"]) for frame in sent[:-1]] == listed
    assert all(": " not in frame["data"] for frame in sent[:-1]), "compact JSON"
    assert sent[-1] == {"event": "end", "data": '{"status": "completed"}'}
    assert body.endswith('event: end\ndata: {"status": "completed"}\n\n')


def test_last_event_id_and_after_resume_after_that_event_and_last_event_id_wins(api, run):
    stopped(run, RunStatus.BUDGET_EXCEEDED)
    ids = [item["id"] for item in api.get(f"/api/v1/runs/{run.pk}/events").json()["results"]]

    for path, headers in [
        (f"/api/v1/runs/{run.pk}/events/stream?after={ids[0]}", {}),
        (f"/api/v1/runs/{run.pk}/events/stream?after=0", {"HTTP_LAST_EVENT_ID": str(ids[0])}),
    ]:
        sent = frames(body_of(api.get(path, **headers)))[1:]

        assert [int(frame["id"]) for frame in sent[:-1]] == ids[1:]
        assert sent[-1]["data"] == '{"status": "budget_exceeded"}'


def test_a_run_waiting_for_a_person_ends_its_stream_with_that_status(api, run):
    stopped(run, RunStatus.WAITING_FOR_INPUT)

    assert frames(body_of(api.get(f"/api/v1/runs/{run.pk}/events/stream")))[-1] == {
        "event": "end", "data": '{"status": "waiting_for_input"}'
    }  # fmt: skip


def test_a_running_run_streams_new_events_as_they_are_written_and_keeps_alive_in_silence(api, run, settings):
    settings.EVENT_STREAM_POLL_SECONDS = 0.05
    settings.EVENT_STREAM_KEEP_ALIVE_SECONDS = 1
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)

    async def follow() -> list[bytes]:
        stream = run_event_stream(run_id=run.pk, after=0)
        received = [await anext(stream)]
        while b"keep-alive" not in received[-1]:
            received.append(await asyncio.wait_for(anext(stream), timeout=5))
        await _write(run, EventType.AGENT_COMPLETED)
        received.append(await asyncio.wait_for(anext(stream), timeout=5))
        await _write(run, EventType.RUN_COMPLETED, status=RunStatus.COMPLETED)
        received += [chunk async for chunk in stream]
        return received

    sent = frames(b"".join(async_to_sync(follow)()).decode())

    assert [frame.get("event") for frame in sent] == [None, "run_started", None, "agent_completed", "run_completed", "end"]
    assert sent[2] == {"": "keep-alive"}
    assert sent[-1]["data"] == '{"status": "completed"}'


async def _write(run: Run, type_: str, status: str | None = None) -> None:
    def write():
        event_record(run=run, type=type_)
        if status:
            Run.objects.filter(pk=run.pk).update(status=status)

    await sync_to_async(write)()


def test_the_server_closes_a_stream_after_its_longest_time_without_an_end(run, settings):
    settings.EVENT_STREAM_POLL_SECONDS = 0.05
    settings.EVENT_STREAM_MAX_SECONDS = 1
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)

    body = b"".join(async_to_sync(_collect)(run_event_stream(run_id=run.pk, after=0))).decode()

    assert "event: end" not in body
    assert body.startswith("retry: ")


def test_another_teams_run_is_a_404_in_the_error_shape(run):
    other = client_for(TeamFactory(name="other"))

    response = other.get(f"/api/v1/runs/{run.pk}/events/stream", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("query", "headers", "path"),
    [
        ("?after=x", {}, "after"),
        ("?cursor=abc", {}, "cursor"),
        ("", {"HTTP_LAST_EVENT_ID": "-1"}, "Last-Event-ID"),
        ("", {"HTTP_LAST_EVENT_ID": "99999999999999999999"}, "Last-Event-ID"),
    ],
)
def test_a_bad_start_is_a_400_in_the_error_shape(api, run, query, headers, path):
    response = api.get(f"/api/v1/runs/{run.pk}/events/stream{query}", HTTP_ACCEPT="text/event-stream", **headers)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["details"][0]["path"] == path


def test_without_a_key_it_is_a_401_in_the_error_shape(run):
    response = APIClient().get(f"/api/v1/runs/{run.pk}/events/stream", HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "not_authenticated"


def test_a_team_holds_at_most_its_cap_of_streams_and_a_closed_one_frees_its_slot(api, run, team, settings):
    settings.EVENT_STREAM_MAX_PER_TEAM = 2
    stopped(run)
    path = f"/api/v1/runs/{run.pk}/events/stream"
    held = [api.get(path), api.get(path)]

    refused = api.get(path)

    assert [response.status_code for response in held] == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "type": "too_many_streams",
        "message": "The team has 2 event streams open, as many as it may; close one, or retry later.",
        "details": {"max_streams": 2},
    }
    body_of(held[0])  # read to its end, which closes it
    assert api.get(path).status_code == 200


def test_a_cap_of_0_turns_streams_off(api, run, settings):
    settings.EVENT_STREAM_MAX_PER_TEAM = 0

    response = api.get(f"/api/v1/runs/{run.pk}/events/stream")

    assert response.status_code == 429
    assert response.json()["error"]["details"] == {"max_streams": 0}


def test_an_event_that_commits_after_a_larger_id_is_still_sent_once(run, settings):
    # On PostgreSQL two writers of one run's events may commit out of id order: here, 1_000_001 late.
    settings.EVENT_STREAM_POLL_SECONDS = 0.05
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING)
    first = run.events.order_by("id").last().pk

    async def follow() -> list[bytes]:
        stream = run_event_stream(run_id=run.pk, after=first)
        received = [await anext(stream)]
        await sync_to_async(_event_with_id)(run, 1_000_000)
        await sync_to_async(_event_with_id)(run, 1_000_002)
        while len(received) < 3:
            received.append(await asyncio.wait_for(anext(stream), timeout=5))
        await sync_to_async(_event_with_id)(run, 1_000_001)
        received.append(await asyncio.wait_for(anext(stream), timeout=5))
        await sync_to_async(Run.objects.filter(pk=run.pk).update)(status=RunStatus.COMPLETED)
        received += [chunk async for chunk in stream]
        return received

    sent = frames(b"".join(async_to_sync(follow)()).decode())

    assert [frame.get("id") for frame in sent[1:-1]] == ["1000000", "1000002", "1000001"]
    assert sent[-1]["event"] == "end"


def _event_with_id(run: Run, event_id: int) -> None:
    Event.objects.create(id=event_id, team_id=run.team_id, run=run, type=EventType.AGENT_COMPLETED)
