"""Alerts through the services: which events go to the webhook, and how a broken endpoint is recorded."""

import socket
import threading

import pytest

from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.models import WebhookDelivery
from workflows.providers import CompletionResult, get_provider
from workflows.services.alerts import webhook_attempt
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle

pytestmark = pytest.mark.django_db

RESULT = CompletionResult(output={"findings": "f"}, input_tokens=1, output_tokens=1000)


@pytest.fixture
def hooked_team(team):
    team.webhook_url = "http://127.0.0.1:9/unused"
    team.alert_thresholds = [1000]  # out of reach: only budget_exceeded events in these tests
    team.save()
    return team


def test_an_enforce_stop_is_sent_to_the_webhook(hooked_team):
    version = workflow_version(team=hooked_team, source=THREE_STEP_YAML)
    run = run_start(
        team=hooked_team,
        workflow=version.workflow_id,
        inputs={"topic": "x"},
        limits={"budget_usd": "0.5", "budget_mode": "enforce"},
    )
    step_settle(attempt=step_begin(step_id=run.steps.get().pk, worker="w:1"), result=RESULT)
    assert step_begin(step_id=run.steps.get(sequence=2).pk, worker="w:1") is None

    [delivery] = WebhookDelivery.objects.all()
    assert (delivery.event.type, delivery.event.payload["scope"]) == ("budget_exceeded", "run")
    assert delivery.status == "pending"


@pytest.fixture
def garbage_endpoint():
    """An endpoint that answers with something that is not HTTP at all."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer():
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(b"HELLO THERE\r\n\r\n")
        connection.close()

    threading.Thread(target=answer, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    server.close()


def test_an_endpoint_that_does_not_speak_http_is_a_failed_attempt_to_retry(hooked_team, garbage_endpoint):
    version = workflow_version(team=hooked_team, source=THREE_STEP_YAML)
    run = run_start(
        team=hooked_team,
        workflow=version.workflow_id,
        inputs={"topic": "x"},
        limits={"budget_usd": "0.5", "budget_mode": "enforce"},
    )
    step_settle(attempt=step_begin(step_id=run.steps.get().pk, worker="w:1"), result=RESULT)
    step_begin(step_id=run.steps.get(sequence=2).pk, worker="w:1")
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(url=garbage_endpoint)

    assert webhook_attempt(delivery_id=delivery.pk) is False
    [attempt] = delivery.attempt_log.all()
    assert attempt.status_code is None
    assert "RemoteProtocolError: illegal status line" in attempt.error


def test_a_threshold_the_last_step_crosses_is_recorded_before_the_run_completes(team):
    """`run_completed` (or `run_failed`) is a run's last event, as conductor's and the README's
    event lists show: a client that reads the events up to it sees every alert its spend raised.
    The research pipeline costs $0.30 a step: its last step takes a $0.90 budget to 80% and 100%."""
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(
        team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "0.9", "budget_mode": "audit"}
    )
    for sequence in (1, 2, 3):
        attempt = step_begin(step_id=run.steps.get(sequence=sequence).pk, worker="w:1")
        step_settle(attempt=attempt, result=get_provider("fake").complete(attempt.prepared.request))

    run.refresh_from_db()
    assert run.status == "completed", run.error
    types = list(run.events.order_by("pk").values_list("type", flat=True))
    crossed = [event.payload["threshold_pct"] for event in run.events.filter(type="budget_threshold_crossed")]
    assert sorted(crossed) == [50, 80, 100]
    assert types[-1] == "run_completed", types
    # Each alert comes with the step whose spend raised it, before that step's `agent_completed`.
    assert types[-4:] == ["budget_threshold_crossed", "budget_threshold_crossed", "agent_completed", "run_completed"], types
