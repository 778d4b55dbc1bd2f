"""What the services record in the metrics, read from the process's registry (no
PROMETHEUS_MULTIPROC_DIR in tests): counted when the transaction commits, never when it rolls back."""

from decimal import Decimal

import pytest
from django.utils import timezone
from prometheus_client import REGISTRY

from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.models import WebhookDelivery
from workflows.providers import CompletionResult
from workflows.services.webhooks import webhook_attempt
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle

RESULT = CompletionResult(output={"findings": "f"}, input_tokens=1, output_tokens=1000)
ENFORCED = {"budget_usd": "0.5", "budget_mode": "enforce"}


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0


@pytest.mark.django_db(transaction=True)
def test_a_gate_decision_counts_once_though_its_first_transaction_rolled_back(team):
    """An audit report against the team's budget needs the team's lock: the first transaction, under
    the run's alone, decides and rolls back, and the step is decided again under both."""
    team.period_budget_usd = Decimal("0.1")
    team.period_mode = "audit"
    team.save()
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"})
    before = sample("budgetsvc_gate_decisions_total", outcome="audit_over_budget", scope="team")

    assert step_begin(step_id=run.steps.get().pk, worker="w:1") is not None

    assert run.events.filter(type="budget_exceeded").count() == 1
    assert sample("budgetsvc_gate_decisions_total", outcome="audit_over_budget", scope="team") == before + 1


@pytest.mark.django_db
def test_webhook_attempts_count_by_outcome(team, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    team.webhook_url = "http://127.0.0.1:9/closed"
    team.alert_thresholds = [1000]
    team.save()
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits=ENFORCED)
    step_settle(attempt=step_begin(step_id=run.steps.get().pk, worker="w:1"), result=RESULT)
    step_begin(step_id=run.steps.get(sequence=2).pk, worker="w:1")  # stopped: budget_exceeded, sent to the webhook
    delivery = WebhookDelivery.objects.get()
    before = {outcome: sample("budgetsvc_webhook_attempts_total", outcome=outcome) for outcome in ("retrying", "dead")}

    assert webhook_attempt(delivery_id=delivery.pk) == "failed"
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())  # its retry is due
    assert webhook_attempt(delivery_id=delivery.pk) == "dead"

    after = {outcome: sample("budgetsvc_webhook_attempts_total", outcome=outcome) for outcome in before}
    assert {outcome: after[outcome] - before[outcome] for outcome in before} == {"retrying": 1, "dead": 1}
