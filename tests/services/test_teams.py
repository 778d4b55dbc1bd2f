from decimal import Decimal

import pytest

from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.errors import ValidationFailed
from workflows.models import BudgetChange
from workflows.services.runs import run_resume, run_start
from workflows.services.steps import step_begin, step_settle
from workflows.providers import CompletionResult
from workflows.services.teams import team_budgets_update

pytestmark = pytest.mark.django_db


def test_every_budget_change_is_recorded_with_who_why_and_old_to_new(team):
    team_budgets_update(
        team=team,
        changes={"period_budget_usd": "25", "period": "week", "period_mode": "enforce", "default_max_iterations": 20},
        actor="user:finance",
        reason="Q4 plan",
    )
    team.refresh_from_db()
    assert (team.period_budget_usd, team.period, team.period_mode) == (Decimal("25"), "week", "enforce")
    trail = {(c.field, c.old_value, c.new_value, c.actor, c.reason) for c in BudgetChange.objects.filter(team=team)}
    assert trail == {
        ("period_budget_usd", "", "25.000000", "user:finance", "Q4 plan"),
        ("period", "month", "week", "user:finance", "Q4 plan"),
        ("period_mode", "audit", "enforce", "user:finance", "Q4 plan"),
        ("default_max_iterations", "", "20", "user:finance", "Q4 plan"),
    }


def test_an_unchanged_value_leaves_no_trail(team):
    team_budgets_update(team=team, changes={"period": "month"}, actor="user:x")
    assert not BudgetChange.objects.exists()


@pytest.mark.parametrize(
    "changes,path",
    [
        ({"period_budget_usd": "0"}, "period_budget_usd"),
        ({"period": "fortnight"}, "period"),
        ({"period_mode": "strict"}, "period_mode"),
        ({"alert_thresholds": [50, "lots"]}, "alert_thresholds"),
        ({"default_budget_usd": "-1"}, "defaults.budget_usd"),
        ({"name": "other"}, "name"),
    ],
)
def test_bad_budget_changes_are_refused_naming_the_field(team, changes, path):
    with pytest.raises(ValidationFailed) as refused:
        team_budgets_update(team=team, changes=changes, actor="user:x")
    assert path in [problem["path"] for problem in refused.value.details]


def test_a_budget_raise_on_resume_is_in_the_audit_trail(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(
        team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "0.5", "budget_mode": "enforce"}
    )
    attempt = step_begin(step_id=run.steps.get().pk, worker="w:1")
    step_settle(attempt=attempt, result=CompletionResult(output={"findings": "f"}, input_tokens=1, output_tokens=1000))
    assert step_begin(step_id=run.steps.get(sequence=2).pk, worker="w:1") is None  # stopped by the budget

    run_resume(run=run, limits={"budget_usd": "1"}, reason="approved")
    [change] = BudgetChange.objects.filter(run=run)
    assert (change.field, change.old_value, change.new_value, change.reason) == (
        "budget_usd",
        "0.500000",
        "1.000000",
        "approved",
    )
