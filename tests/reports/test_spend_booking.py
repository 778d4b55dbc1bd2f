"""Reports date a correction or an adjustment as the entry it corrects (booked_at): in a date window,
neither the settled nor the estimated part of the spend is ever negative."""

from datetime import UTC, date, datetime

import pytest
import time_machine
from django.urls import reverse

from tests.admin.test_adjustments import text_of
from tests.factories import workflow_version
from tests.reports.ledger import answer, start_run, taken_over
from workflows.reports.spend import spend_by
from workflows.services.adjustments import check_adjustment, ledger_adjust
from workflows.services.steps import step_settle

pytestmark = pytest.mark.django_db

DAY_1 = datetime(2027, 3, 1, 12, tzinfo=UTC)
DAY_2 = datetime(2027, 3, 2, 12, tzinfo=UTC)


def adjust(entry, amount: str):
    return ledger_adjust(entry=entry, adjustment=check_adjustment(amount_usd=amount, reason="console"), actor="user:ops")


def test_a_days_report_never_says_a_negative_amount_is_estimated_awaiting_usage(team, admin_client):
    """Day 1: an attempt is taken over, its $0.30 estimate awaits usage. Day 2: an operator refunds
    $0.28 of it. The report of day 2 alone: spent -$0.28, of which "estimated, awaiting usage" -$0.28,
    and the admin's Spend page says "$0.00 settled, -$0.28 estimated, awaiting usage". Nothing awaits
    usage on day 2: the adjustment is dated by when it was written (reports), the estimate it rests on
    lies outside the window. The daily sums (period budgets) book it on day 1."""
    with time_machine.travel(DAY_1, tick=False):
        run = start_run(team=team, version=workflow_version(team=team))
        taken_over(run, sequence=1)
    with time_machine.travel(DAY_2, tick=False):
        adjust(run.ledger_entries.get(basis="estimated"), "-0.28")

    report = spend_by(team=team, group_by="workflow", since=date(2027, 3, 2), until=date(2027, 3, 2))
    page = text_of(admin_client.get(reverse("admin:workflows_ledgerentry_spend"), {"since": "2027-03-02", "until": "2027-03-02"}))

    assert "-$0.28 estimated" not in page
    assert report.estimated_usd >= 0, (report.total_usd, report.estimated_usd)


def test_a_days_report_never_shows_a_negative_settled_spend(team, admin_client):
    """Day 1: a call reported $0.30 (run A). Day 2: another run's attempt is taken over ($0.30
    estimated, awaiting), and an operator refunds run A's $0.30 call in full. The admin's Spend page
    for day 2: "-$0.30 settled, $0.30 estimated, awaiting usage"; the API's spend report: total_usd
    0.000000 of which estimated_usd 0.300000."""
    with time_machine.travel(DAY_1, tick=False):
        version = workflow_version(team=team)
        first = start_run(team=team, version=version)
        _, owner = taken_over(first, sequence=1)
        step_settle(attempt=owner, result=answer({"findings": "f"}))
        reported = first.ledger_entries.get(basis="reported")
    with time_machine.travel(DAY_2, tick=False):
        taken_over(start_run(team=team, version=version), sequence=1)
        adjust(reported, "-0.30")

    report = spend_by(team=team, group_by="workflow", since=date(2027, 3, 2), until=date(2027, 3, 2))
    page = text_of(admin_client.get(reverse("admin:workflows_ledgerentry_spend"), {"since": "2027-03-02", "until": "2027-03-02"}))

    assert "-$0.30 settled" not in page
    assert report.total_usd - report.estimated_usd >= 0, (report.total_usd, report.estimated_usd)
