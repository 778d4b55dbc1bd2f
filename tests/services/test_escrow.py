"""Escrow (workflows/services/escrow.py): runs hold slices of their team's enforced period budget, so
that most steps are admitted under the run's lock alone, and never more than the budget has room for."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import LOOP_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import Run, Team
from workflows.providers import CompletionResult
from workflows.services.escrow import team_figures
from workflows.services.periods import period_window
from workflows.services.runs import run_cancel, run_start
from workflows.services.steps import step_begin, step_fail, step_settle
from workflows.services.teams import team_budgets_update

pytestmark = pytest.mark.django_db

STEP = Decimal("0.010000")  # the loop's estimate: 100 output tokens at $100 per million
AS_ESTIMATED = CompletionResult(output={"done": False}, input_tokens=0, output_tokens=100)


@pytest.fixture
def loop(team):
    return workflow_version(team=team, source=LOOP_YAML).workflow_id


def enforce(team, budget: str):
    return team_budgets_update(
        team=team, changes={"period_budget_usd": budget, "period_mode": "enforce"}, actor="tests"
    )


def next_step(run: Run):
    return run.steps.filter(status="pending").get()


def one_step(run: Run) -> list[str]:
    """Gate and settle the run's pending step; the statements of its gate that lock a team row."""
    with CaptureQueriesContext(connection) as queries:
        attempt = step_begin(step_id=next_step(run).pk, worker="host:1")
    step_settle(attempt=attempt, result=AS_ESTIMATED)
    return [q["sql"] for q in queries.captured_queries if 'FROM "workflows_team"' in q["sql"] and "FOR" in q["sql"]]


def held(run: Run) -> Decimal:
    return Run.objects.values_list("held_usd", flat=True).get(pk=run.pk)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite takes no row locks")
def test_a_run_draws_a_slice_under_the_teams_lock_then_gates_its_next_steps_without_it(team, loop, settings):
    settings.TEAM_SLICE_STEPS = 4
    enforce(team, "100")
    run = run_start(team=team, workflow=loop, limits={"max_iterations": 10})

    locks = [len(one_step(run)) for _ in range(9)]

    assert locks == [1, 0, 0, 0, 1, 0, 0, 0, 1]  # a draw covers the step and the next three
    assert_invariants(run)


def test_a_slice_covers_the_steps_setting_says_and_shrinks_to_the_estimate_near_the_limit(team, loop, settings):
    settings.TEAM_SLICE_STEPS = 4
    enforce(team, "100")
    roomy = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    step_begin(step_id=next_step(roomy).pk, worker="host:1")
    assert held(roomy) == 4 * STEP

    enforce(team, str(4 * STEP + STEP))  # the recall leaves the roomy run its step in flight
    tight = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    step_begin(step_id=next_step(tight).pk, worker="host:2")
    # $0.05 - $0.01 in flight - $0.01 for this step leaves $0.03; a slice takes at most half of it.
    assert held(tight) == STEP + Decimal("0.015")

    enforce(team, str(3 * STEP))  # room for one more step, and nothing beyond
    tightest = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    step_begin(step_id=next_step(tightest).pk, worker="host:3")
    assert held(tightest) == STEP


def test_another_runs_idle_slice_is_recalled_rather_than_stop_a_step_the_budget_has_room_for(team, loop, settings):
    settings.TEAM_SLICE_STEPS = 1000
    enforce(team, "0.05")
    first = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    one_step(first)  # draws half of what is left, and spends $0.01 of it
    assert held(first) == Decimal("0.020000")
    second = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    one_step(second)
    third = run_start(team=team, workflow=loop, limits={"max_iterations": 10})

    # Spent $0.02; the first two runs hold $0.02 and $0.005 they are not using: room is $0.03.
    attempt = step_begin(step_id=next_step(third).pk, worker="host:3")

    assert attempt is not None
    assert held(first) == held(second) == 0
    assert held(third) >= STEP
    assert_invariants(first, second, third)


def test_a_run_that_stops_gives_its_slice_back(team, loop):
    enforce(team, "100")
    run = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    one_step(run)
    assert held(run) > 0

    run_cancel(run=run)

    assert held(run) == 0
    assert_invariants(run)


def test_a_budget_change_recalls_every_slice(team, loop):
    enforce(team, "100")
    run = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    one_step(run)
    attempt = step_begin(step_id=next_step(run).pk, worker="host:1")

    enforce(team, "50")

    run.refresh_from_db()
    assert held(run) == 0  # the step in flight counts by its reservation alone
    assert run.reserved_usd == attempt.prepared.estimate_usd


def test_a_step_in_flight_at_a_budget_cut_does_not_leave_a_slice_of_the_old_budget(team, loop, settings):
    """The cut recalls each run's slice down to its reservation; a step in flight then spends less
    than its estimate. What it did not spend was drawn from the old budget: it must go back to the
    team, not stay as a slice that admits the run's next step past the new budget."""
    settings.TEAM_SLICE_STEPS = 4
    enforce(team, "100")
    run = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    other = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    attempt = step_begin(step_id=next_step(run).pk, worker="host:1")
    step_begin(step_id=next_step(other).pk, worker="host:2")  # in flight throughout

    enforce(team, str(STEP + STEP / 2))  # the other run's step in flight leaves room for half a step
    step_settle(attempt=attempt, result=CompletionResult(output={"done": False}, input_tokens=0, output_tokens=0))

    # The pure gate: spent $0 + $0.01 in flight + $0.01 > $0.015.
    assert step_begin(step_id=next_step(run).pk, worker="host:1") is None
    run.refresh_from_db()
    assert run.status == "budget_exceeded" and run.reserved_usd == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks that a thread holds exist on PostgreSQL only")
def test_a_switch_to_enforce_waits_for_a_step_being_admitted_under_the_audit_budget(team, loop, monkeypatch):
    """A step of an audit team is admitted under its run's lock alone. If the team switches to
    enforce meanwhile and another run draws before that admission commits, the draw does not see
    its reservation: both steps are admitted, $0.02 in flight against an enforced $0.015."""
    from workflows.services.steps import execute

    team_budgets_update(team=team, changes={"period_budget_usd": "0.015", "period_mode": "audit"}, actor="tests")
    first = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    second = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    first_step, second_step = next_step(first).pk, next_step(second).pk
    deciding, admitted = threading.Event(), {}
    reserve = execute.reserve

    def reserve_slowly(**kwargs):
        if threading.current_thread().name == "audit-admission":
            deciding.set()
            time.sleep(1.0)  # decided under the audit budget, not yet committed
        reserve(**kwargs)

    def admit_first():
        try:
            admitted["first"] = step_begin(step_id=first_step, worker="host:1") is not None
        finally:
            connection.close()

    monkeypatch.setattr(execute, "reserve", reserve_slowly)
    thread = threading.Thread(target=admit_first, name="audit-admission")
    thread.start()
    assert deciding.wait(10)
    enforce(Team.objects.get(pk=team.pk), "0.015")
    admitted["second"] = step_begin(step_id=second_step, worker="host:2") is not None
    thread.join()

    assert list(admitted.values()).count(True) == 1, admitted
    assert_invariants(first, second)


def test_a_slice_admits_nothing_the_pure_gate_would_stop_after_a_call_cost_more_than_its_estimate(
    team, loop, settings
):
    settings.TEAM_SLICE_STEPS = 1000
    enforce(team, "0.05")
    first = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    one_step(first)  # spends $0.01 and keeps a $0.02 slice
    second = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    attempt = step_begin(step_id=next_step(second).pk, worker="host:2")
    step_settle(attempt=attempt, result=CompletionResult(output={"done": False}, input_tokens=0, output_tokens=350))
    # Spent $0.045: the first run's next $0.01 would take the team to $0.055.

    assert step_begin(step_id=next_step(first).pk, worker="host:1") is None
    first.refresh_from_db()
    assert (first.status, first.error["scope"]) == ("budget_exceeded", "team")
    assert_invariants(first, second)


def test_a_slice_is_spent_down_to_nothing_before_the_run_draws_again(team, loop, settings):
    settings.TEAM_SLICE_STEPS = 4
    enforce(team, "100")
    run = run_start(team=team, workflow=loop, limits={"max_iterations": 10})

    holds = []
    for _ in range(5):
        one_step(run)
        holds.append(held(run))

    # A draw holds four steps; the fourth runs on the last of it, exactly its estimate, and the fifth draws.
    assert holds == [3 * STEP, 2 * STEP, STEP, 0, 3 * STEP]
    assert_invariants(run)


def test_a_step_of_a_cancelled_run_gives_back_its_share_of_the_hold_when_it_fails(team, loop):
    enforce(team, "100")
    run = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    attempt = step_begin(step_id=next_step(run).pk, worker="host:1")
    run_cancel(run=run)
    assert held(run) == STEP  # the step in flight keeps its reservation

    step_fail(attempt=attempt, error={"type": "ProviderError", "message": "boom"})

    assert held(run) == 0
    assert_invariants(run)


def test_the_teams_figures_are_read_in_one_statement(team, loop):
    """A settlement moves its cost from a hold to the spend in one transaction; read in two statements,
    the figures could see it in neither, and a draw admit a step the budget has no room for. Without
    concurrency both readings agree, so the statements are counted."""
    enforce(team, "100")
    run = run_start(team=team, workflow=loop, limits={"max_iterations": 10})
    one_step(run)

    with CaptureQueriesContext(connection) as queries:
        figures = team_figures(team, period_window(team.period))

    assert len(queries.captured_queries) == 1
    assert (figures.spent_usd, figures.reserved_usd, figures.held_usd) == (STEP, 0, held(run))
