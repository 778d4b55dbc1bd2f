"""Event streams served as `make run` serves them: `manage.py serve` (gunicorn with uvicorn's workers, the
ASGI app, a Celery worker) on the test database, followed over HTTP with a server-sent events reader."""

import subprocess
import sys

import pytest
import requests
from django.conf import settings

from tests.conftest import wait_until
from tests.factories import TeamFactory, slow_middle_yaml, workflow_version
from tests.integration.conftest import service_env
from tests.integration.test_serve import Serve
from workflows.services.teams import api_key_create

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.timeout(300)]

MAX_STREAMS = 10


def collect_static(tmp_path) -> str:
    """The static files as `make run` collects them, for whitenoise to serve."""
    static_root = str(tmp_path / "static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=settings.BASE_DIR, env={**service_env(tmp_path / "var"), "DJANGO_STATIC_ROOT": static_root}, check=True,
    )  # fmt: skip
    return static_root


@pytest.fixture
def streaming_service(transactional_db, tmp_path, monkeypatch):
    """`manage.py serve` with streams that poll fast and a cap of MAX_STREAMS per team: its base URL."""
    monkeypatch.setenv("EVENT_STREAM_POLL_SECONDS", "0.2")
    monkeypatch.setenv("EVENT_STREAM_MAX_PER_TEAM", str(MAX_STREAMS))
    monkeypatch.setenv("DJANGO_STATIC_ROOT", collect_static(tmp_path))
    service = Serve(tmp_path)
    try:
        wait_until(service.answers, timeout=120, message="serve to answer")
        yield f"http://127.0.0.1:{service.port}"
    finally:
        service.close()


class EventStream:
    """A server-sent events reader over requests: each event as {id, event, data} (comments as `comment`)."""

    def __init__(self, url: str, headers: dict):
        self.response = requests.get(url, headers={"Accept": "text/event-stream", **headers}, stream=True, timeout=(5, 30))
        self._lines = self.response.iter_lines(decode_unicode=True)

    def __iter__(self):
        fields: dict = {}
        for line in self._lines:
            if line == "":
                if fields:
                    yield fields
                fields = {}
            elif line.startswith(":"):
                yield {"comment": line[1:].strip()}
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")

    def close(self) -> None:
        self.response.close()


def team_with_key(name: str) -> tuple[dict, object]:
    team = TeamFactory(name=name)
    _, key = api_key_create(team=team, name="streams")
    return {"Authorization": f"Bearer {key}"}, team


def start_slow_run(base_url: str, auth: dict, team, *, latency_ms: int) -> int:
    workflow_version(team=team, source=slow_middle_yaml(latency_ms=latency_ms), name="slow")
    started = requests.post(f"{base_url}/api/v1/runs", json={"workflow": "slow", "inputs": {}}, headers=auth, timeout=10)
    assert started.status_code == 202, started.text
    return started.json()["id"]


def listed_event_ids(base_url: str, auth: dict, run_id: int) -> list[int]:
    ids, url = [], f"{base_url}/api/v1/runs/{run_id}/events?page_size=200"
    while url:
        page = requests.get(url, headers=auth, timeout=10).json()
        ids += [item["id"] for item in page["results"]]
        url = page["next"]
    return ids


def test_a_client_follows_a_run_to_its_end_and_resumes_mid_run_with_no_gap_and_no_duplicate(streaming_service):
    auth, team = team_with_key("followers")
    run_id = start_slow_run(streaming_service, auth, team, latency_ms=3000)
    url = f"{streaming_service}/api/v1/runs/{run_id}/events/stream"

    first = EventStream(url, auth)
    assert first.response.status_code == 200
    assert first.response.headers["Content-Type"] == "text/event-stream"
    assert (first.response.headers["Cache-Control"], first.response.headers["X-Accel-Buffering"]) == ("no-cache", "no")
    before_the_break = []
    for frame in first:
        if "id" in frame:
            before_the_break.append(frame)
            if frame["event"] == "agent_completed":
                break
    first.close()

    second = EventStream(url, {**auth, "Last-Event-ID": before_the_break[-1]["id"]})
    after_the_break, end = [], None
    for frame in second:
        if frame.get("event") == "end":
            end = frame
            break
        if "id" in frame:
            after_the_break.append(frame)
    second.close()

    assert end == {"event": "end", "data": '{"status": "completed"}'}
    received = [int(frame["id"]) for frame in before_the_break + after_the_break]
    assert received == listed_event_ids(streaming_service, auth, run_id)
    assert after_the_break, "the run was followed live past the reconnection"
    assert [frame["event"] for frame in after_the_break][-1] == "run_completed"


def test_open_streams_hold_no_worker_and_a_team_holds_at_most_its_cap(streaming_service):
    auth, team = team_with_key("watchers")
    run_id = start_slow_run(streaming_service, auth, team, latency_ms=20_000)
    url = f"{streaming_service}/api/v1/runs/{run_id}/events/stream"
    streams = [EventStream(url, auth) for _ in range(MAX_STREAMS)]
    try:
        assert [stream.response.status_code for stream in streams] == [200] * MAX_STREAMS

        # Two web workers, each holding five open streams that last minutes: a request is still answered,
        # where a worker per stream would leave none to answer it before the timeout.
        answered = requests.get(f"{streaming_service}/api/v1/runs/{run_id}", headers=auth, timeout=10)
        assert answered.status_code == 200

        refused = requests.get(url, headers=auth, timeout=10)
        assert refused.status_code == 429
        assert refused.headers["Content-Type"] == "application/json"
        assert refused.json()["error"]["type"] == "too_many_streams"
        other_auth, _ = team_with_key("neighbours")
        assert requests.get(f"{streaming_service}/api/v1/runs/{run_id}/events/stream", headers=other_auth, timeout=10).status_code == 404

        # A client that goes frees its slot: the server notices the disconnection.
        streams.pop().close()

        def another_stream_opens():
            stream = EventStream(url, auth)
            if stream.response.status_code == 200:
                streams.append(stream)
                return True
            stream.close()
            return False

        wait_until(another_stream_opens, timeout=20, message="the closed stream's slot to be free")
    finally:
        for stream in streams:
            stream.close()
