"""Threshold alerts: once each per run and per team period, and delivered to a real HTTP server."""

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import wait_for_run, wait_until
from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.models import EventType, ThresholdCrossing, WebhookDelivery
from workflows.services.runs import run_start
from workflows.services.teams import team_budgets_update

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STOPPED = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out")


class Receiver(ThreadingHTTPServer):
    """A webhook endpoint on 127.0.0.1 that fails the first `failures` requests with a 500."""

    def __init__(self, failures: int):
        self.failures = failures
        self.received: list[tuple[dict, bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/budget"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        failing = len(self.server.received) <= self.server.failures
        self.send_response(500 if failing else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = Receiver(failures=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def crossed(run_or_team_events):
    return [(e.payload["scope"], e.payload["threshold_pct"]) for e in run_or_team_events]


def test_run_and_team_thresholds_fire_exactly_once_each(team, celery_worker):
    team_budgets_update(team=team, changes={"period_budget_usd": "1.00", "period": "month"}, actor="user:test")
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    first = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "1"})
    wait_for_run(first.pk, *STOPPED)
    second = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "y"})
    wait_for_run(second.pk, *STOPPED)

    # Run 1 spends 0.30, 0.60, 0.90 of its $1: 50% and 80%. The team's month: 0.90, then 1.20, 1.50, 1.80.
    assert crossed(first.events.filter(type=EventType.BUDGET_THRESHOLD_CROSSED)) == [
        ("run", 50),
        ("team", 50),
        ("run", 80),
        ("team", 80),
    ]
    assert crossed(second.events.filter(type=EventType.BUDGET_THRESHOLD_CROSSED)) == [("team", 100)]
    assert ThresholdCrossing.objects.filter(team=team).count() == 5


def test_alerts_are_posted_signed_and_retried_after_a_500(team, receiver, celery_worker):
    team_budgets_update(team=team, changes={"alert_thresholds": [50]}, actor="user:test")
    team.webhook_url = receiver.url
    team.save(update_fields=["webhook_url"])
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "1"})
    wait_for_run(run.pk, *STOPPED)

    delivery = wait_until(
        lambda: WebhookDelivery.objects.filter(team=team, status="delivered").first(), message="the webhook delivery"
    )
    assert delivery.attempts == 2
    assert list(delivery.attempt_log.values_list("number", "status_code")) == [(1, 500), (2, 204)]
    assert len(receiver.received) == 2
    headers, body = receiver.received[-1]
    expected = "sha256=" + hmac.new(team.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Budgetsvc-Signature"] == expected
    alert = json.loads(body)
    assert (alert["type"], alert["team"], alert["run"]) == ("budget_threshold_crossed", "acme", run.pk)
    assert alert["payload"] == {"scope": "run", "threshold_pct": 50, "budget_usd": "1.000000", "spent_usd": "0.600000"}
