"""A correction brings an estimated attempt to what it really cost, whatever operators adjusted
meanwhile, and counts in the period of the entry it corrects."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine

from tests.factories import THREE_STEP_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import Team
from workflows.providers import CompletionResult
from workflows.services.adjustments import check_adjustment, ledger_adjust
from workflows.services.periods import period_window, team_period_spent
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.teams import team_budgets_update

pytestmark = pytest.mark.django_db

ESTIMATE = Decimal("0.300000")  # THREE_STEP_YAML's first step: 1,000 output tokens at $300 per 1M
# What the provider really billed each call: 400 output tokens.
BILLED = CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=400)
BILLED_USD = Decimal("0.120000")


def a_run(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    return run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "5"})


def first_step(run):
    return run.steps.get(sequence=1)


def test_an_operators_adjustment_of_an_open_estimate_is_not_counted_twice_by_the_late_correction(team):
    """The operator reads the estimated attempt's usage off the provider's console ($0.12) and
    adjusts the $0.30 estimate to it; then the cut-off worker comes back with that usage. Its
    correction brings the attempt, adjustment included, to $0.12: it is not taken off twice."""
    run = a_run(team)
    cut_off = step_begin(step_id=first_step(run).pk, worker="host:1")
    takeover = step_begin(step_id=first_step(run).pk, worker="host:2")  # crash-end: attempt 1 estimated
    estimate = run.ledger_entries.get(basis="estimated")
    ledger_adjust(
        entry=estimate,
        adjustment=check_adjustment(amount_usd="-0.18", reason="Provider console: billed $0.12"),
        actor="ops",
    )
    step_settle(attempt=takeover, result=BILLED)  # the takeover's own call, $0.12

    step_settle(attempt=cut_off, result=BILLED)  # the cut-off worker is back

    run.refresh_from_db()
    # Two calls, each billed $0.12.
    assert run.spent_usd == 2 * BILLED_USD, list(run.ledger_entries.values_list("attempt", "basis", "cost_usd"))
    assert_invariants(run)


def test_a_late_correction_after_an_adjustment_does_not_fail_on_the_runs_spend_check(team):
    """The same, with the late worker back before the takeover settled: were the adjustment taken
    off twice, the run's spend would go below zero and its CHECK would refuse the settlement, and
    the late usage would never be recorded."""
    run = a_run(team)
    cut_off = step_begin(step_id=first_step(run).pk, worker="host:1")
    step_begin(step_id=first_step(run).pk, worker="host:2")
    estimate = run.ledger_entries.get(basis="estimated")
    ledger_adjust(entry=estimate, adjustment=check_adjustment(amount_usd="-0.18", reason="console"), actor="ops")

    step_settle(attempt=cut_off, result=BILLED)  # raises IntegrityError on main

    assert run.ledger_entries.filter(basis="correction").exists()
    assert_invariants(run)


def test_a_correction_that_lands_in_the_next_period_does_not_make_that_periods_spend_negative(team):
    """An estimate charged on Jan 31 and corrected on Feb 1: the correction counts in January, the
    period of the entry it corrects. Counted in February, it would start that month at -$0.18, and
    an enforced February budget would admit $0.18 more than it is."""
    team_budgets_update(
        team=team, changes={"period_budget_usd": "100", "period_mode": "enforce", "period": "month"}, actor="tests"
    )
    team = Team.objects.get(pk=team.pk)
    with time_machine.travel(datetime(2027, 1, 31, 23, 59, tzinfo=UTC), tick=False):
        run = a_run(team)
        cut_off = step_begin(step_id=first_step(run).pk, worker="host:1")
        takeover = step_begin(step_id=first_step(run).pk, worker="host:2")
        step_settle(attempt=takeover, result=BILLED)
    feb = datetime(2027, 2, 1, 0, 1, tzinfo=UTC)
    with time_machine.travel(feb, tick=False):
        step_settle(attempt=cut_off, result=BILLED)

    january = team_period_spent(team=team, window=period_window("month", datetime(2027, 1, 15, tzinfo=UTC)))
    february = team_period_spent(team=team, window=period_window("month", feb))
    # Both calls were made, and billed, in January; nothing was spent in February.
    assert (january, february) == (2 * BILLED_USD, Decimal("0")), (january, february)
