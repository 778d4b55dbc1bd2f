"""An operator's budget for a workflow: its checks, its audit trail, and the runs it gates."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, transaction

from tests.factories import THREE_STEP_YAML, UNPRICED_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.errors import UnpricedModel, ValidationFailed
from workflows.models import BudgetChange, Event, EventType, Team, Workflow
from workflows.providers import CompletionResult
from workflows.services import runs
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.workflow_budgets import workflow_budget_apply, workflow_budget_clear

pytestmark = pytest.mark.django_db

ACTOR = "user:ops"
RESULT = CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=1000)
YAML_WITH_LIMITS = THREE_STEP_YAML.replace(
    "workflow:\n", "workflow:\n  limits: {budget_usd: '9', budget_mode: audit, max_iterations: 7}\n", 1
)


@pytest.fixture
def workflow(team):
    return workflow_version(team=team, source=THREE_STEP_YAML).workflow


def start(team, workflow, **limits):
    return run_start(team=team, workflow=workflow.pk, inputs={"topic": "x"}, limits=limits or None)


def test_applying_records_who_why_and_old_to_new_in_the_trail_and_an_event(team, workflow):
    workflow_budget_apply(workflow=workflow, budget_usd="0.63", actor=ACTOR, reason="p95 x 1.25 from 40 runs")

    workflow.refresh_from_db()
    assert (workflow.budget_usd, workflow.budget_mode) == (Decimal("0.630000"), "enforce")
    trail = BudgetChange.objects.filter(workflow=workflow).order_by("field")
    assert [(c.field, c.old_value, c.new_value, c.actor, c.reason, c.team_id) for c in trail] == [
        ("budget_mode", "", "enforce", ACTOR, "p95 x 1.25 from 40 runs", team.pk),
        ("budget_usd", "", "0.630000", ACTOR, "p95 x 1.25 from 40 runs", team.pk),
    ]
    event = Event.objects.get(type=EventType.WORKFLOW_BUDGET_SET)
    assert (event.team_id, event.run_id, event.actor) == (team.pk, None, ACTOR)
    assert event.payload == {
        "workflow": {"id": workflow.pk, "name": workflow.name},
        "old": {"budget_usd": None, "budget_mode": None},
        "new": {"budget_usd": "0.630000", "budget_mode": "enforce"},
        "reason": "p95 x 1.25 from 40 runs",
    }


@pytest.mark.parametrize(
    ("budget", "mode", "reason", "paths"),
    [
        ("0", "enforce", "why", {"budget_usd"}),
        ("-1", "enforce", "why", {"budget_usd"}),
        ("NaN", "enforce", "why", {"budget_usd"}),
        ("0.1234567", "enforce", "why", {"budget_usd"}),
        ("1", "strict", "why", {"budget_mode"}),
        ("1", "enforce", "   ", {"reason"}),
        ("1", "enforce", "x" * 2001, {"reason"}),
        (None, "enforce", "", {"budget_usd", "reason"}),
    ],
)
def test_a_bad_budget_or_no_reason_is_refused_and_changes_nothing(workflow, budget, mode, reason, paths):
    with pytest.raises(ValidationFailed) as refused:
        workflow_budget_apply(workflow=workflow, budget_usd=budget, budget_mode=mode, actor=ACTOR, reason=reason)

    assert {problem["path"] for problem in refused.value.details} == paths
    workflow.refresh_from_db()
    assert workflow.budget_usd is None
    assert not BudgetChange.objects.exists() and not Event.objects.filter(type=EventType.WORKFLOW_BUDGET_SET).exists()


def test_an_enforce_budget_over_an_unpriced_model_is_refused_as_a_run_under_it_would_be(team):
    workflow = workflow_version(team=team, source=UNPRICED_YAML).workflow
    with pytest.raises(UnpricedModel, match="mystery-model"):
        workflow_budget_apply(workflow=workflow, budget_usd="1", actor=ACTOR, reason="enforce it")
    workflow_budget_apply(workflow=workflow, budget_usd="1", budget_mode="audit", actor=ACTOR, reason="audit it")
    workflow.refresh_from_db()
    assert (workflow.budget_usd, workflow.budget_mode) == (Decimal("1"), "audit")


def test_precedence_run_request_over_the_setting_over_the_definition_over_the_team(team):
    Team.objects.filter(pk=team.pk).update(default_budget_usd=Decimal("3"), default_max_iterations=5)
    team.refresh_from_db()
    workflow = workflow_version(team=team, source=YAML_WITH_LIMITS).workflow
    workflow_budget_apply(workflow=workflow, budget_usd="0.5", actor=ACTOR, reason="graduate")

    run = start(team, workflow)
    assert (run.budget_usd, run.budget_mode, run.max_iterations) == (Decimal("0.5"), "enforce", 7)
    assert run.limit_sources == {
        "budget_usd": "workflow_setting",
        "budget_mode": "workflow_setting",
        "max_iterations": "workflow",
        "timeout_seconds": "system",
    }
    requested = start(team, workflow, budget_usd="2")
    assert (requested.budget_usd, requested.budget_mode) == (Decimal("2"), "enforce")
    assert (requested.limit_sources["budget_usd"], requested.limit_sources["budget_mode"]) == ("run", "workflow_setting")
    started = Event.objects.get(run=run, type=EventType.RUN_STARTED).payload
    assert started["limit_sources"]["budget_usd"] == "workflow_setting"

    workflow_budget_clear(workflow=workflow, actor=ACTOR, reason="back to the definition")
    cleared = start(team, workflow)
    assert (cleared.budget_usd, cleared.budget_mode, cleared.limit_sources["budget_usd"]) == (
        Decimal("9"),
        "audit",
        "workflow",
    )
    assert BudgetChange.objects.filter(workflow=workflow, new_value="").count() == 2


def test_the_setting_survives_a_new_upload_and_gates_the_next_run(team, workflow):
    workflow_budget_apply(workflow=workflow, budget_usd="0.5", actor=ACTOR, reason="graduate")
    # The team uploads its own YAML again, with an audit budget in it: the operator's budget still holds.
    assert workflow_version(team=team, source=YAML_WITH_LIMITS).version == 2

    run = start(team, workflow)
    first = step_begin(step_id=run.steps.get(sequence=1).pk, worker="host:1")
    step_settle(attempt=first, result=RESULT)  # $0.30 spent; the next step's $0.30 would pass $0.50
    assert step_begin(step_id=run.steps.get(sequence=2).pk, worker="host:1") is None

    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.budget_usd, run.budget_mode) == (
        "budget_exceeded",
        Decimal("0.300000"),
        Decimal("0.500000"),
        "enforce",
    )
    assert run.error["type"] == "BudgetExceededError"
    assert_invariants(run)


def test_clearing_needs_a_reason(workflow):
    workflow_budget_apply(workflow=workflow, budget_usd="0.5", actor=ACTOR, reason="graduate")
    with pytest.raises(ValidationFailed):
        workflow_budget_clear(workflow=workflow, actor=ACTOR, reason="")
    workflow.refresh_from_db()
    assert workflow.budget_usd == Decimal("0.5")


def test_a_run_request_with_only_a_mode_keeps_the_operators_enforced_budget(team, workflow):
    workflow_budget_apply(workflow=workflow, budget_usd="0.40", actor=ACTOR, reason="graduate")

    run = start(team, workflow, budget_mode="audit")

    assert (run.budget_usd, run.budget_mode) == (Decimal("0.4"), "enforce")
    assert (run.limit_sources["budget_usd"], run.limit_sources["budget_mode"]) == ("workflow_setting", "workflow_setting")


def test_a_run_started_while_a_budget_is_applied_gets_it_if_created_after_the_change(team, workflow, monkeypatch):
    """The setting read before the run's transaction is stale when the change commits in between."""
    checked = runs.check_step_kinds_allowed

    def apply_meanwhile(**kwargs):
        workflow_budget_apply(workflow=workflow, budget_usd="0.40", actor=ACTOR, reason="applied meanwhile")
        return checked(**kwargs)

    monkeypatch.setattr(runs, "check_step_kinds_allowed", apply_meanwhile)
    run = start(team, workflow)

    assert (run.budget_usd, run.budget_mode) == (Decimal("0.4"), "enforce")
    assert run.limit_sources["budget_usd"] == "workflow_setting"
    assert run.events.get(type=EventType.RUN_STARTED).payload["limits"]["budget_usd"] == "0.400000"


def test_a_budget_applied_meanwhile_over_an_unpriced_model_refuses_the_run(team, monkeypatch):
    """The setting read again inside the run's transaction is checked as the first one was."""
    workflow = workflow_version(team=team, source=UNPRICED_YAML).workflow

    def apply_meanwhile(**kwargs):
        Workflow.objects.filter(pk=workflow.pk).update(budget_usd=Decimal("1"), budget_mode="enforce")

    monkeypatch.setattr(runs, "check_step_kinds_allowed", apply_meanwhile)
    with pytest.raises(UnpricedModel):
        start(team, workflow)
    assert not workflow.versions.get().runs.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks that a thread holds exist on PostgreSQL only")
def test_a_run_start_waits_for_a_budget_change_in_progress_and_gets_it(team, workflow):
    """A change holding the workflow's row lock commits first; the run created after it has its budget."""
    started = {}

    def start_run():
        try:
            started["run"] = start(team, workflow)
        finally:
            connection.close()

    with transaction.atomic():
        Workflow.objects.select_for_update().get(pk=workflow.pk)
        starting = threading.Thread(target=start_run)
        starting.start()
        time.sleep(1.0)
        assert starting.is_alive(), "the run start did not wait for the workflow's row lock"
        Workflow.objects.filter(pk=workflow.pk).update(budget_usd=Decimal("0.4"), budget_mode="enforce")
    starting.join(10)

    assert (started["run"].budget_usd, started["run"].budget_mode) == (Decimal("0.4"), "enforce")
