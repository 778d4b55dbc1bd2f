"""The period spend the gate reads: the ledger summed per UTC day by a trigger, equal to the ledger's own sums."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.db.models import Sum

from tests.factories import THREE_STEP_YAML, TeamFactory
from tests.invariants import assert_daily_spend_matches_ledger
from workflows.models import LedgerEntry, Run, Step, TeamDailySpend, WorkflowVersion
from workflows.services.periods import period_window, team_period_spent
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db


def charge(*, run: Run, at: str, cost: str | None, attempt: int) -> LedgerEntry:
    with time_machine.travel(datetime.fromisoformat(at).replace(tzinfo=UTC), tick=False):
        step = Step.objects.create(run=run, sequence=attempt, agent="a", iteration=attempt)
        return LedgerEntry.objects.create(
            team_id=run.team_id, run=run, step=step, attempt=1, agent="a", provider="fake", model="m",
            input_tokens=1, output_tokens=1, cost_usd=None if cost is None else Decimal(cost),
        )  # fmt: skip


def a_run(team) -> Run:
    version = WorkflowVersion.objects.get(workflow_id=workflow_create(team=team, definition=THREE_STEP_YAML).workflow_id)
    return Run.objects.create(team=team, workflow_version=version)


def test_each_ledger_entry_is_added_to_its_teams_utc_day_and_period_spend_equals_the_ledger_sum():
    team, other = TeamFactory(), TeamFactory()
    run, other_run = a_run(team), a_run(other)
    entries = [
        ("2026-11-29T23:59:59.999999", "0.300000"),  # the last microsecond of Sunday
        ("2026-11-30T00:00:00", "0.600000"),  # Monday: a new day and a new week
        ("2026-11-30T12:00:00", None),  # unpriced: no dollars, and never a null sum
        ("2026-11-30T13:00:00", "0.000001"),
        ("2026-12-01T00:00:00", "1.000000"),  # a new month
    ]
    for attempt, (at, cost) in enumerate(entries, start=1):
        charge(run=run, at=at, cost=cost, attempt=attempt)
    charge(run=other_run, at="2026-11-30T01:00:00", cost="5.000000", attempt=1)

    assert dict(TeamDailySpend.objects.filter(team=team).values_list("day", "spent_usd")) == {
        datetime(2026, 11, 29).date(): Decimal("0.300000"),
        datetime(2026, 11, 30).date(): Decimal("0.600001"),
        datetime(2026, 12, 1).date(): Decimal("1.000000"),
    }
    for team_ in (team, other):
        assert_daily_spend_matches_ledger(team_)
    for period in ("day", "week", "month"):
        for now in ("2026-11-29T12:00:00", "2026-11-30T12:00:00", "2026-12-01T12:00:00"):
            window = period_window(period, datetime.fromisoformat(now).replace(tzinfo=UTC))
            in_window = LedgerEntry.objects.filter(team=team, created_at__gte=window.start, created_at__lt=window.end)
            expected = in_window.aggregate(total=Sum("cost_usd"))["total"] or Decimal("0")
            assert team_period_spent(team=team, window=window) == expected, (period, now)


def test_the_database_refuses_to_change_a_ledger_entry():
    # The daily sums stay equal to the ledger only while entries are never changed.
    team = TeamFactory()
    entry = charge(run=a_run(team), at="2026-11-30T12:00:00", cost="0.500000", attempt=1)
    table = LedgerEntry._meta.db_table
    with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET cost_usd = 0 WHERE id = %s", [entry.pk])
    if connection.vendor == "postgresql":  # SQLite keeps DELETE for the test database's flush
        with pytest.raises(Exception, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE id = %s", [entry.pk])
    assert_daily_spend_matches_ledger(team)
