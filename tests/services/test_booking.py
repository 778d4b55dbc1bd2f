"""Corrections and adjustments of an entry of an earlier period are booked on that entry's day, on
SQLite and PostgreSQL, as the invariants' own sum says."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from tests.api.test_staff import basic, staff_user
from tests.factories import workflow_version
from tests.invariants import assert_daily_spend_matches_ledger, assert_invariants
from tests.reports.ledger import answer, start_run, taken_over
from workflows.models import Run, Team, TeamDailySpend
from workflows.services.periods import period_window, team_period_spent
from workflows.services.steps import step_settle

pytestmark = pytest.mark.django_db

JAN = datetime(2027, 1, 31, 23, 59, 30, tzinfo=UTC)
FEB = datetime(2027, 2, 1, 0, 0, 30, tzinfo=UTC)
MAR = datetime(2027, 3, 2, 9, tzinfo=UTC)


def test_a_late_correction_and_an_api_adjustment_of_januarys_estimate_count_in_january(team):
    with time_machine.travel(JAN, tick=False):
        run = start_run(team=team, version=workflow_version(team=team), limits={"budget_usd": "5"})
        late, owner = taken_over(run, sequence=1)
        step_settle(attempt=owner, result=answer({"findings": "f"}))  # $0.30, Jan 31
    estimate = run.ledger_entries.get(basis="estimated")
    with time_machine.travel(FEB, tick=False):
        step_settle(attempt=late, result=answer({"findings": "late"}, output_tokens=600))  # $0.18: correction -0.12
    staff_user("ops", team)
    with time_machine.travel(MAR, tick=False):
        response = basic("ops").post(
            f"/api/v1/ledger/{estimate.pk}/adjustments", {"amount_usd": "-0.18", "reason": "refund"}, format="json"
        )
    assert response.status_code == 201, response.content

    assert dict(TeamDailySpend.objects.filter(team=team).values_list("day", "spent_usd")) == {
        JAN.date(): Decimal("0.300000"),
    }
    for moment, spent in ((JAN, Decimal("0.3")), (FEB, Decimal("0")), (MAR, Decimal("0"))):
        assert team_period_spent(team=Team.objects.get(pk=team.pk), window=period_window("month", moment)) == spent
    assert_daily_spend_matches_ledger(team)
    assert_invariants(Run.objects.get(pk=run.pk))
