from datetime import UTC, datetime

import pytest
import time_machine

from tests.api.contract import assert_conforms
from tests.factories import THREE_STEP_YAML, workflow_version
from tests.reports.ledger import charge, start_run
from workflows import selectors
from workflows.models import LedgerEntry
from workflows.providers import CompletionResult
from workflows.reports.forecast import FORECAST_METHOD
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.teams import team_budgets_update

pytestmark = pytest.mark.django_db


@time_machine.travel(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
def test_the_team_endpoint_shows_defaults_period_budget_spend_and_reset_time(api, team):
    team_budgets_update(
        team=team,
        changes={"period_budget_usd": "10", "period": "week", "period_mode": "enforce", "default_budget_usd": "2"},
        actor="user:test",
    )
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"})
    attempt = step_begin(step_id=run.steps.get().pk, worker="w:1")
    step_settle(attempt=attempt, result=CompletionResult(output={"findings": "f"}, input_tokens=1, output_tokens=1000))
    step_begin(step_id=run.steps.get(sequence=2).pk, worker="w:1")  # in flight: reserved

    body = api.get("/api/v1/team").json()

    assert body["name"] == "acme"
    assert body["defaults"] == {"budget_usd": "2.000000", "budget_mode": None, "max_iterations": None, "timeout_seconds": None}
    assert body["period_budget"] == {
        "budget_usd": "10.000000",
        "period": "week",
        "mode": "enforce",
        "spent_usd": "0.300000",
        "reserved_usd": "0.300000",
        "starts_at": "2026-11-23T00:00:00Z",
        "resets_at": "2026-11-30T00:00:00Z",
        "forecast": {
            "daily_rate_usd": "0.000000",  # nothing spent in the 7 days before today
            "projected_usd": "0.300000",
            "runs_out_on": None,
            "over_budget": False,
            "method": FORECAST_METHOD,
        },
    }
    assert body["lifetime_spent_usd"] == "0.300000"
    assert body["alert_thresholds"] == [50, 80, 100]


@time_machine.travel(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))  # a Saturday: the week ends tomorrow night
def test_the_team_endpoint_forecasts_the_day_the_period_budget_runs_out_at_the_last_7_days_rate(api, team):
    team_budgets_update(team=team, changes={"period_budget_usd": "5.5", "period": "week"}, actor="user:test")
    run = start_run(team=team, version=workflow_version(team=team))
    for day in range(21, 28):  # $1 a day from last Saturday to yesterday; Monday to Friday are this week's
        charge(run=run, cost_usd="1.000000", at=datetime(2026, 11, day, 9, tzinfo=UTC))

    body = api.get("/api/v1/team").json()

    assert body["period_budget"]["spent_usd"] == "5.000000"
    assert body["period_budget"]["forecast"] == {
        "daily_rate_usd": "1.000000",
        "projected_usd": "6.000000",  # and Sunday's dollar
        "runs_out_on": "2026-11-29",  # Sunday ends at $6, above $5.50
        "over_budget": False,
        "method": FORECAST_METHOD,
    }
    team_budgets_update(team=team, changes={"period_budget_usd": "4"}, actor="user:test")
    forecast = api.get("/api/v1/team").json()["period_budget"]["forecast"]
    assert (forecast["over_budget"], forecast["runs_out_on"]) == (True, "2026-11-27")  # Thursday ended at $4, Friday above it
    team_budgets_update(team=team, changes={"period_budget_usd": None}, actor="user:test")
    assert api.get("/api/v1/team").json()["period_budget"]["forecast"] is None


def test_lifetime_spend_outlives_the_period(api, team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"})
    with time_machine.travel(datetime(2025, 1, 15, tzinfo=UTC)):
        attempt = step_begin(step_id=run.steps.get().pk, worker="w:1")
        step_settle(attempt=attempt, result=CompletionResult(output={}, input_tokens=1, output_tokens=1000))
    assert LedgerEntry.objects.count() == 1

    body = api.get("/api/v1/team").json()
    assert (body["period_budget"]["spent_usd"], body["lifetime_spent_usd"]) == ("0.000000", "0.300000")


def test_the_team_endpoint_keeps_to_its_schema_for_a_team_with_no_webhook(api, team):
    # The schema once called webhook_url a URI, which the empty string of a team with no webhook is not.
    response = api.get("/api/v1/team")

    assert response.json()["webhook_url"] == ""
    assert_conforms(response, method="GET", path="/api/v1/team/")


def test_the_team_endpoint_reads_spend_and_forecast_at_one_moment_across_a_periods_end(api, team, monkeypatch):
    team_budgets_update(team=team, changes={"period_budget_usd": "10", "period": "week"}, actor="user:test")
    run = start_run(team=team, version=workflow_version(team=team))
    charge(run=run, cost_usd="1.000000", at=datetime(2026, 11, 29, 12, tzinfo=UTC))  # Sunday, the week's last day
    read_status = selectors.team_budget_status

    with time_machine.travel(datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC)) as clock:

        def status_then_midnight_passes(**kwargs):
            status = read_status(**kwargs)
            clock.move_to(datetime(2026, 11, 30, 0, 0, 1, tzinfo=UTC))
            return status

        monkeypatch.setattr(selectors, "team_budget_status", status_then_midnight_passes)
        period = api.get("/api/v1/team").json()["period_budget"]

    assert (period["starts_at"], period["spent_usd"]) == ("2026-11-23T00:00:00Z", "1.000000")
    assert period["forecast"]["projected_usd"] == "1.000000"  # this week's spend, nothing after its last day
