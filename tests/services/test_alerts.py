"""Alerts through the services: which events go to the webhook, and how a broken endpoint is recorded."""

import socket
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction

from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.models import Team, ThresholdCrossing, WebhookDelivery
from workflows.providers import CompletionResult, get_provider
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.teams import team_budgets_update
from workflows.services.webhooks import webhook_attempt

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
    Team.objects.filter(pk=hooked_team.pk).update(webhook_url=garbage_endpoint)

    assert webhook_attempt(delivery_id=delivery.pk) == "failed"
    [attempt] = delivery.attempt_log.all()
    assert attempt.status_code is None
    assert "RemoteProtocolError: illegal status line" in attempt.error


@pytest.mark.parametrize("scope", ["run", "team"])
def test_a_threshold_the_last_step_crosses_is_recorded_before_the_run_completes(team, scope):
    """`run_completed` (or `run_failed`) is a run's last event, as conductor's and the README's
    event lists show: a client that reads the events up to it sees every alert its spend raised.
    The research pipeline costs $0.30 a step: its last step takes a $0.90 budget to 80% and 100%,
    the run's own or its team's period budget."""
    limits = {"budget_usd": "0.9", "budget_mode": "audit"} if scope == "run" else {}
    if scope == "team":
        team_budgets_update(team=team, changes={"period_budget_usd": "0.9", "period_mode": "audit"}, actor="tests")
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits=limits)
    for sequence in (1, 2, 3):
        attempt = step_begin(step_id=run.steps.get(sequence=sequence).pk, worker="w:1")
        step_settle(attempt=attempt, result=get_provider("fake").complete(attempt.prepared.request))

    run.refresh_from_db()
    assert run.status == "completed", run.error
    types = list(run.events.order_by("pk").values_list("type", flat=True))
    crossed = run.events.filter(type="budget_threshold_crossed")
    assert sorted(event.payload["threshold_pct"] for event in crossed) == [50, 80, 100]
    assert {event.payload["scope"] for event in crossed} == {scope}
    assert types[-1] == "run_completed", types
    # Each alert comes with the step whose spend raised it, before that step's `agent_completed`.
    assert types[-4:] == ["budget_threshold_crossed", "budget_threshold_crossed", "agent_completed", "run_completed"], types


def charge_and_hold(*, step_id: int, cost: str, seconds: float, held: threading.Event) -> None:
    """Another settlement of the team: its ledger entry written, its transaction still open."""
    from workflows.models import LedgerEntry, Step

    try:
        with transaction.atomic():
            step = Step.objects.select_related("run").get(pk=step_id)
            LedgerEntry.objects.create(
                team_id=step.run.team_id, run=step.run, step=step, attempt=1, agent=step.agent, provider="fake",
                model="sim", input_tokens=0, output_tokens=0, cost_usd=Decimal(cost),
            )  # fmt: skip
            held.set()
            time.sleep(seconds)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks that a thread holds exist on PostgreSQL only")
def test_a_threshold_two_settlements_reach_only_together_is_recorded_by_the_later(team):
    """Each settlement checks the team's thresholds before its events, with the spend committed so far
    plus its own charge; neither sees the other's there. Its entry then waits for the other's on the
    team's daily sum, and its second look, under that lock, sees both."""
    team_budgets_update(team=team, changes={"period_budget_usd": "1.00", "period_mode": "audit"}, actor="tests")
    Team.objects.filter(pk=team.pk).update(alert_thresholds=[50])
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    first, second = (run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}) for _ in range(2))
    held = threading.Event()
    other = threading.Thread(
        target=charge_and_hold, kwargs={"step_id": first.steps.get().pk, "cost": "0.30", "seconds": 1.5, "held": held}
    )
    other.start()
    assert held.wait(10)
    attempt = step_begin(step_id=second.steps.get().pk, worker="w:1")
    assert attempt.prepared.estimate_usd >= Decimal("0.30")
    step_settle(attempt=attempt, result=get_provider("fake").complete(attempt.prepared.request))  # $0.30
    other.join()

    [crossing] = ThresholdCrossing.objects.filter(team=team, scope="team")
    assert (crossing.threshold_pct, crossing.spent_usd) == (50, Decimal("0.600000"))
    assert second.events.filter(type="budget_threshold_crossed").count() == 1
