"""Team period budgets at the gate, with a real worker: shared across runs, audit or enforce, reset per period."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from tests.conftest import wait_for_run
from tests.factories import workflow_version
from tests.invariants import assert_invariants
from workflows.errors import InvalidRunState
from workflows.models import EventType
from workflows.selectors import team_budget_status
from workflows.services.runs import run_resume, run_start
from workflows.services.teams import team_budgets_update

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STOPPED = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out")

ONE_STEP_YAML = """
workflow:
  name: one-step
  entry_point: only
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 300}
agents:
  - name: only
    prompt: "Do the thing."
    mock: {output_tokens: 1000}
"""


@pytest.fixture
def one_step(team):
    return workflow_version(team=team, source=ONE_STEP_YAML).workflow_id


def set_period_budget(team, usd: str, mode: str, period: str = "day"):
    team_budgets_update(
        team=team, changes={"period_budget_usd": usd, "period_mode": mode, "period": period}, actor="user:test"
    )


def test_two_runs_share_an_enforce_period_budget_and_the_second_stops_with_team_scope(team, one_step, celery_worker):
    set_period_budget(team, "0.50", "enforce")
    first = wait_for_run(run_start(team=team, workflow=one_step).pk, *STOPPED)
    second = wait_for_run(run_start(team=team, workflow=one_step).pk, *STOPPED)

    assert (first.status, first.spent_usd) == ("completed", Decimal("0.300000"))
    assert (second.status, second.spent_usd) == ("budget_exceeded", Decimal("0"))
    assert second.budget_usd is None  # no run budget: the team's stopped it
    assert second.error["scope"] == "team"
    assert "team 'acme' this day" in second.error["message"]
    [event] = second.events.filter(type=EventType.BUDGET_EXCEEDED)
    assert event.payload == {
        "scope": "team",
        "budget_usd": "0.500000",
        "spent_usd": "0.300000",
        "projected_usd": "0.600000",
        "budget_mode": "enforce",
        "current_agent": "only",
    }
    team.refresh_from_db()
    assert team_budget_status(team=team).reserved_usd == 0
    assert_invariants(first, second)


def test_audit_mode_at_team_scope_reports_and_goes_on(team, one_step, celery_worker):
    set_period_budget(team, "0.50", "audit")
    wait_for_run(run_start(team=team, workflow=one_step).pk, *STOPPED)
    second = wait_for_run(run_start(team=team, workflow=one_step).pk, *STOPPED)
    third = wait_for_run(run_start(team=team, workflow=one_step).pk, *STOPPED)

    assert (second.status, third.status) == ("completed", "completed")
    reports = [e.payload for e in second.events.filter(type=EventType.BUDGET_EXCEEDED)]
    assert [(p["scope"], p["budget_mode"], p["projected_usd"]) for p in reports] == [("team", "audit", "0.600000")]
    assert not third.events.filter(type=EventType.BUDGET_EXCEEDED).exists()  # 0.90 is within a budget of the report
    assert_invariants(second, third)


def test_the_period_resets_and_a_run_stopped_by_it_can_be_resumed(team, one_step, celery_worker):
    set_period_budget(team, "0.50", "enforce")
    with time_machine.travel(datetime(2026, 3, 10, 23, 59, 0, tzinfo=UTC), tick=True) as clock:
        wait_for_run(run_start(team=team, workflow=one_step).pk, *STOPPED)
        stopped = wait_for_run(run_start(team=team, workflow=one_step).pk, *STOPPED)
        assert stopped.status == "budget_exceeded"
        with pytest.raises(InvalidRunState) as refused:
            run_resume(run=stopped, reason="too soon")
        assert refused.value.details["scope"] == "team"

        clock.shift(timedelta(minutes=2))  # past midnight UTC: a new day, a new period
        resumed = run_resume(run=stopped, reason="new day")
        done = wait_for_run(resumed.pk, *STOPPED)

    assert (done.status, done.spent_usd) == ("completed", Decimal("0.300000"))
    days = sorted({entry.created_at.date().isoformat() for entry in done.team.ledger_entries.all()})
    assert days == ["2026-03-10", "2026-03-11"]
    assert_invariants(done)
