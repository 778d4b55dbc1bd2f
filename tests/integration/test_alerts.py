"""Threshold alerts: once each per run and per team period, and delivered to a real HTTP server."""

import json

import pytest

from tests.conftest import wait_for_run, wait_until
from tests.factories import THREE_STEP_YAML, workflow_version
from tests.webhook_receiver import receiving, signatures_by
from workflows.models import EventType, ThresholdCrossing, WebhookDelivery
from workflows.services.runs import run_start
from workflows.services.teams import team_budgets_update

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STOPPED = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out")


@pytest.fixture
def receiver():
    with receiving(500, 204) as server:
        yield server


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


def test_alerts_are_posted_signed_and_retried_after_a_500(team, receiver, celery_worker, webhook_sweep_beat):
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
    # Both attempts: the delivery's id, each its own timestamp, signed as Standard Webhooks says.
    for received in receiver.received:
        assert received.headers["webhook-id"] == str(delivery.pk)
        assert signatures_by(received, team.webhook_secret) == [team.webhook_secret]
        assert received.headers["x-budgetsvc-event"] == "budget_threshold_crossed"
    alert = json.loads(receiver.received[-1].body)
    assert (alert["type"], alert["team"], alert["run"]) == ("budget_threshold_crossed", "acme", run.pk)
    assert alert["payload"] == {"scope": "run", "threshold_pct": 50, "budget_usd": "1.000000", "spent_usd": "0.600000"}
