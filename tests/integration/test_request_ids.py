"""Request ids across processes: a run's events and a worker's log lines carry the X-Request-ID of the
request that started or resumed the run, on a real worker process and a real gunicorn."""

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from django.conf import settings

from tests.conftest import client_for, wait_for_run, wait_until
from tests.factories import THREE_STEP_YAML, workflow_version
from tests.integration.conftest import service_env, wait_for_ready
from workflows.models import Step

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STOPPED = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out")
STARTED_BY = "client-7f3a.start"
RESUMED_BY = "0b7e6c5e-9a21-4f4e-8d1b-3c2f6a0e9d44"


def json_lines(text: str) -> list[dict]:
    """Every line of a process's output that is a log record; each must be a whole JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_the_request_id_of_a_start_and_a_resume_is_on_every_event_and_worker_log_line_that_followed(team, celery_process):
    worker = celery_process("worker", "--pool", "prefork", "--concurrency", "1", "--without-gossip", "--without-mingle")
    wait_for_ready(worker)
    api = client_for(team)
    workflow_version(team=team, source=THREE_STEP_YAML)
    # The worker (the product's settings) refuses to send to loopback: only the delivery task's log lines matter.
    team.webhook_url = "http://127.0.0.1:9/hooks/budget"
    team.save(update_fields=["webhook_url"])

    started = api.post(
        "/api/v1/runs",
        {"workflow": "research-pipeline", "inputs": {"topic": "x"}, "limits": {"budget_usd": "0.5", "budget_mode": "enforce"}},
        format="json",
        headers={"X-Request-ID": STARTED_BY},
    )
    assert started.status_code == 202, started.json()
    assert started["X-Request-ID"] == STARTED_BY
    run_id = started.json()["id"]
    wait_for_run(run_id, *STOPPED)
    resumed = api.post(f"/api/v1/runs/{run_id}/resume", {"budget_usd": "10"}, format="json", headers={"X-Request-ID": RESUMED_BY})
    assert resumed.status_code == 202, resumed.json()
    assert resumed["X-Request-ID"] == RESUMED_BY
    assert wait_for_run(run_id, *STOPPED).status == "completed"

    events = [(e["type"], e["request_id"]) for e in api.get(f"/api/v1/runs/{run_id}/events").json()["results"]]
    resumed_at = events.index(("run_resumed", RESUMED_BY))
    before, after = dict(events[:resumed_at]), dict(events[resumed_at:])
    # The worker recorded the first step and the budget's stop, then the rest of the steps after the resume.
    assert {"run_started", "agent_completed", "budget_exceeded"} <= set(before)
    assert {"agent_completed", "run_completed"} <= set(after)
    assert set(before.values()) == {STARTED_BY}
    assert set(after.values()) == {RESUMED_BY}

    step_ids = set(Step.objects.filter(run_id=run_id).values_list("pk", flat=True))
    finished = wait_until(
        lambda: [r for r in json_lines(worker.log_path.read_text()) if r["logger"] == "celery.app.trace"],
        message="the worker's task log lines",
    )
    steps = [r for r in finished if r["task_name"] == "workflows.execute_step"]
    assert {(r["run_id"], r["request_id"]) for r in steps} == {(run_id, STARTED_BY), (run_id, RESUMED_BY)}
    assert {r["step_id"] for r in steps} <= step_ids
    # The budget's alerts, sent by the steps, go out under the id of the request whose steps crossed them.
    deliveries = wait_until(
        lambda: [r for r in json_lines(worker.log_path.read_text()) if r.get("task_name") == "workflows.deliver_webhook"],
        message="the webhook delivery task's log lines",
    )
    assert {r["request_id"] for r in deliveries} <= {STARTED_BY, RESUMED_BY}
    assert all(r["level"] == "INFO" and r["timestamp"].endswith("+00:00") and r["task_id"] for r in finished)


def test_plain_log_lines_show_the_request_id_in_brackets(team, celery_process):
    worker = celery_process("worker", "--pool", "solo", "--without-gossip", "--without-mingle", env={"LOG_FORMAT": "plain"})
    wait_for_ready(worker)
    workflow_version(team=team, source=THREE_STEP_YAML)

    response = client_for(team).post(
        "/api/v1/runs", {"workflow": "research-pipeline", "inputs": {"topic": "x"}}, format="json", headers={"X-Request-ID": STARTED_BY}
    )
    wait_for_run(response.json()["id"], *STOPPED)

    lines = wait_until(
        lambda: [line for line in worker.log_path.read_text().splitlines() if "succeeded in" in line],
        message="the worker's task log lines",
    )
    assert all(f"INFO celery.app.trace [{STARTED_BY}] Task workflows.execute_step[" in line for line in lines), lines
    assert not json_lines(worker.log_path.read_text())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn(tmp_path):
    """gunicorn serving the test database, its access log and errors on one stream, as `manage.py serve` starts it."""
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "budgetsvc.asgi", "--config", "python:budgetsvc.gunicorn",
             "--bind", f"127.0.0.1:{port}", "--workers", "1", "--access-logfile", "-"],  # fmt: skip
            cwd=settings.BASE_DIR,
            env=service_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(lambda: process.poll() is not None or "Booting worker" in log_path.read_text(), message="gunicorn")
            assert process.poll() is None, log_path.read_text()
            yield f"http://127.0.0.1:{port}", log_path
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_gunicorns_access_log_is_json_with_the_request_id_the_response_returned(gunicorn):
    base_url, log_path = gunicorn
    hostile = urllib.request.Request(f"{base_url}/api/v1/team", headers={"X-Request-ID": "x" * 65})
    with pytest.raises(urllib.error.HTTPError) as refused:
        wait_until(lambda: _reachable(hostile), timeout=60, message="gunicorn to answer")
    given = refused.value.headers["X-Request-ID"]
    assert refused.value.code == 401 and len(given) == 32

    [access] = wait_until(
        lambda: [r for r in json_lines(log_path.read_text()) if r["logger"] == "gunicorn.access"], message="the access log line"
    )
    assert (access["request_id"], access["http_method"], access["path"], access["status"]) == (given, "GET", "/api/v1/team", 401)
    assert isinstance(access["duration_ms"], int)
    assert "x" * 65 not in log_path.read_text()


def _reachable(request: urllib.request.Request) -> bool:
    try:
        urllib.request.urlopen(request, timeout=60)
    except urllib.error.URLError as exc:
        if isinstance(exc, urllib.error.HTTPError):
            raise
        return False
    return True
