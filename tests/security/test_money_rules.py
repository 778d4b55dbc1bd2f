"""The money rules a planted bug once slipped past (issue 9, section 7), through the services, on both
backends.

- audit `budget_exceeded` re-arms per period for a team, and afresh after a resume changes the budget;
- threshold alerts fire once per period for a team (once per run for a run), and at exactly the
  threshold (`>=`, not `>`);
- exact boundaries: a projection equal to a budget is admitted, one micro-dollar over stops; spend equal
  to the budget stops the next step; a period's last second and its next one's first instant;
- a step is charged what it cost, above or below its estimate, never the estimate.
Every scenario ends with tests/invariants.py.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from tests.factories import TeamFactory, workflow_version
from tests.invariants import assert_invariants
from workflows.errors import InvalidRunState
from workflows.models import Event, EventType, LedgerEntry, Run, RunStatus, Step, StepStatus, ThresholdCrossing
from workflows.providers import CompletionResult
from workflows.services.runs import run_resume, run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.teams import team_budgets_update

pytestmark = pytest.mark.django_db

D = Decimal

# One agent in a loop: no input price, $1000 per 1M output tokens, max_tokens 100, so the gate
# reserves exactly $0.100000 a step and each output token costs exactly $0.001.
LOOP_AT_A_TENTH = """
workflow:
  name: tenth
  entry_point: worker
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 1000}
agents:
  - name: worker
    prompt: "Work."
    routes:
      - {to: $end, when: "worker.output.done"}
      - {to: worker}
"""
ESTIMATE = D("0.100000")

JUNE = datetime(2026, 6, 10, 12, tzinfo=UTC)
# A second before midnight, not a micro-second: a step reads the clock more than once, and the last
# instant of June must stay in June between its reads.
LAST_SECOND_OF_JUNE = datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)
FIRST_INSTANT_OF_JULY = datetime(2026, 7, 1, tzinfo=UTC)


@pytest.fixture
def quiet_team(db):
    """A team with no alert thresholds in reach, so only the events a test is about are recorded."""
    return TeamFactory(name="money", alert_thresholds=[1000])


@pytest.fixture
def loop(quiet_team):
    return workflow_version(team=quiet_team, source=LOOP_AT_A_TENTH, name="tenth").workflow_id


def pending_step(run: Run) -> Step:
    return Step.objects.get(run=run, status=StepStatus.PENDING)


def run_step(run: Run, *, output_tokens: int = 100, done: bool = False):
    """Deliver the run's pending step: the gate, then (if admitted) a settlement with `output_tokens`."""
    attempt = step_begin(step_id=pending_step(run).pk, worker="w:1")
    if attempt is not None:
        result = CompletionResult(output={"done": done}, input_tokens=7, output_tokens=output_tokens)
        step_settle(attempt=attempt, result=result)
    return attempt


def exceeded(scope: str, run: Run | None = None) -> list[dict]:
    events = Event.objects.filter(type=EventType.BUDGET_EXCEEDED, payload__scope=scope)
    if run is not None:
        events = events.filter(run=run)
    return [event.payload for event in events.order_by("pk")]


def threshold_events(scope: str) -> list[dict]:
    events = Event.objects.filter(type=EventType.BUDGET_THRESHOLD_CROSSED, payload__scope=scope)
    return [event.payload for event in events.order_by("pk")]


def set_period_budget(team, usd: str, mode: str, *, period: str = "month", thresholds=None):
    team_budgets_update(
        team=team, changes={"period_budget_usd": usd, "period_mode": mode, "period": period}, actor="user:test"
    )
    if thresholds is not None:
        type(team).objects.filter(pk=team.pk).update(alert_thresholds=thresholds)


# -- audit re-arming --------------------------------------------------------------------------------


def test_a_team_audit_report_rearms_afresh_in_each_period(quiet_team, loop):
    set_period_budget(quiet_team, "0.15", "audit")
    with time_machine.travel(JUNE, tick=False) as clock:
        run = run_start(team=quiet_team, workflow=loop, limits={"max_iterations": 20})
        run_step(run)  # projected 0.10: within
        run_step(run)  # projected 0.20: reported, re-armed at 0.35
        run_step(run)  # projected 0.30: not reported again
        assert [event["projected_usd"] for event in exceeded("team")] == ["0.200000"]

        clock.move_to(FIRST_INSTANT_OF_JULY)
        run_step(run)  # July has spent nothing: projected 0.10
        run_step(run)  # projected 0.20, past July's budget: reported again, whatever June's re-arm point
        july = exceeded("team")[1:]
        assert [(event["spent_usd"], event["projected_usd"]) for event in july] == [("0.100000", "0.200000")]

    run.refresh_from_db()
    assert (run.status, run.spent_usd) == (RunStatus.RUNNING, D("0.500000"))
    assert_invariants(run)


def test_a_resume_that_changes_the_budget_reports_afresh_against_the_new_one(quiet_team, loop):
    run = run_start(
        team=quiet_team, workflow=loop, limits={"budget_usd": "0.15", "budget_mode": "audit", "max_iterations": 2}
    )
    run_step(run)
    run_step(run)  # projected 0.20 > 0.15: reported, re-armed at 0.35
    assert run_step(run) is None  # the iteration limit
    assert [event["projected_usd"] for event in exceeded("run")] == ["0.200000"]

    run_resume(run=Run.objects.get(pk=run.pk), limits={"budget_usd": "0.25", "max_iterations": 4}, reason="more")
    run_step(run)  # projected 0.30 > 0.25: reported, though under the old re-arm point 0.35

    assert [(event["budget_usd"], event["projected_usd"]) for event in exceeded("run")] == [
        ("0.150000", "0.200000"),
        ("0.250000", "0.300000"),
    ]
    assert_invariants(run)


def test_a_resume_that_keeps_the_budget_keeps_the_rearm_point(quiet_team, loop):
    run = run_start(
        team=quiet_team, workflow=loop, limits={"budget_usd": "0.15", "budget_mode": "audit", "max_iterations": 2}
    )
    run_step(run)
    run_step(run)
    run_step(run)
    run_resume(run=Run.objects.get(pk=run.pk), limits={"max_iterations": 4}, reason="more")
    run_step(run)  # projected 0.30, under the re-arm point 0.35: not reported again

    assert len(exceeded("run")) == 1
    assert_invariants(run)


def test_a_team_audit_budget_changed_by_an_operator_reports_afresh_against_the_new_one(quiet_team, loop):
    """As for a run's budget on resume: a re-arm point set under the old budget does not silence the new one."""
    set_period_budget(quiet_team, "0.15", "audit")
    run = run_start(team=quiet_team, workflow=loop, limits={"max_iterations": 20})
    run_step(run)
    run_step(run)  # projected 0.20 > 0.15: reported, re-armed at 0.35
    set_period_budget(quiet_team, "0.25", "audit")
    run_step(run)  # projected 0.30 > 0.25: reported, though under the old re-arm point

    assert [(event["budget_usd"], event["projected_usd"]) for event in exceeded("team")] == [
        ("0.150000", "0.200000"),
        ("0.250000", "0.300000"),
    ]
    assert_invariants(run)


# -- threshold alerts ---------------------------------------------------------------------------------


def test_team_threshold_alerts_fire_once_in_each_period(quiet_team, loop):
    set_period_budget(quiet_team, "1", "audit", thresholds=[50])
    with time_machine.travel(JUNE, tick=False) as clock:
        run = run_start(team=quiet_team, workflow=loop, limits={"max_iterations": 20})
        for _ in range(6):
            run_step(run)  # 0.10 each: 50% at the fifth
        clock.move_to(FIRST_INSTANT_OF_JULY)
        for _ in range(6):
            run_step(run)

    events = threshold_events("team")
    assert [(event["threshold_pct"], event["spent_usd"], event["period_start"]) for event in events] == [
        (50, "0.500000", "2026-06-01T00:00:00+00:00"),
        (50, "0.500000", "2026-07-01T00:00:00+00:00"),
    ]
    assert ThresholdCrossing.objects.filter(team=quiet_team, scope="team").count() == 2
    assert_invariants(run)


@pytest.mark.parametrize("pct", [50, 80, 100])
@pytest.mark.parametrize("scope", ["run", "team"])
def test_a_threshold_fires_when_spend_reaches_it_exactly_not_a_micro_dollar_before(quiet_team, loop, scope, pct):
    """Budget $1: the first step costs $0.001 less than the threshold (the token is $0.001; the
    estimate is $0.10, so this step costs far more than it reserved), the second $0.001 more."""
    quiet_team.alert_thresholds = [pct]
    quiet_team.save()
    if scope == "team":
        set_period_budget(quiet_team, "1", "audit")
        limits = {}
    else:
        limits = {"budget_usd": "1", "budget_mode": "audit"}
    run = run_start(team=quiet_team, workflow=loop, limits=limits)

    run_step(run, output_tokens=pct * 10 - 1)
    assert threshold_events(scope) == []
    run_step(run, output_tokens=1)

    [alert] = threshold_events(scope)
    assert (alert["threshold_pct"], alert["spent_usd"], alert["budget_usd"]) == (pct, f"{pct / 100:.6f}", "1.000000")
    assert_invariants(run)


def test_run_thresholds_fire_once_per_run_even_across_periods(quiet_team, loop):
    quiet_team.alert_thresholds = [50]
    quiet_team.save()
    with time_machine.travel(JUNE, tick=False) as clock:
        run = run_start(team=quiet_team, workflow=loop, limits={"budget_usd": "0.4", "budget_mode": "audit"})
        run_step(run)
        run_step(run)  # 0.20: 50%
        clock.move_to(FIRST_INSTANT_OF_JULY)
        run_step(run)

    assert [event["spent_usd"] for event in threshold_events("run")] == ["0.200000"]
    assert_invariants(run)


# -- exact boundaries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["run", "team"])
def test_a_projection_equal_to_an_enforce_budget_is_admitted_and_spend_equal_to_it_stops_the_next(
    quiet_team, loop, scope
):
    if scope == "team":
        set_period_budget(quiet_team, "0.2", "enforce")
        limits = {}
    else:
        limits = {"budget_usd": "0.2", "budget_mode": "enforce"}
    run = run_start(team=quiet_team, workflow=loop, limits=limits)

    assert run_step(run) is not None  # projected 0.10
    assert run_step(run) is not None  # projected 0.20 == budget: admitted
    assert run_step(run) is None  # spent 0.20 == budget: 0.30 stops

    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.error["type"]) == (
        RunStatus.BUDGET_EXCEEDED,
        D("0.200000"),
        "BudgetExceededError",
    )
    [stop] = exceeded(scope)
    assert (stop["spent_usd"], stop["projected_usd"], stop["budget_mode"]) == ("0.200000", "0.300000", "enforce")
    assert_invariants(run)


@pytest.mark.parametrize("scope", ["run", "team"])
def test_a_projection_one_micro_dollar_over_an_enforce_budget_stops(quiet_team, loop, scope):
    if scope == "team":
        set_period_budget(quiet_team, "0.199999", "enforce")
        limits = {}
    else:
        limits = {"budget_usd": "0.199999", "budget_mode": "enforce"}
    run = run_start(team=quiet_team, workflow=loop, limits=limits)

    assert run_step(run) is not None
    assert run_step(run) is None

    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.reserved_usd) == (RunStatus.BUDGET_EXCEEDED, D("0.100000"), D("0"))
    assert LedgerEntry.objects.filter(run=run).count() == 1
    assert_invariants(run)


def test_a_team_period_ends_at_its_last_second_and_the_next_starts_with_nothing_spent(quiet_team, loop):
    set_period_budget(quiet_team, "0.2", "enforce", period="month")
    with time_machine.travel(JUNE, tick=False) as clock:
        first = run_start(team=quiet_team, workflow=loop)
        run_step(first)
        run_step(first)  # June has spent its $0.20
        clock.move_to(LAST_SECOND_OF_JUNE)
        second = run_start(team=quiet_team, workflow=loop)
        assert run_step(second) is None  # still June: stopped
        with pytest.raises(InvalidRunState):
            run_resume(run=Run.objects.get(pk=second.pk), reason="still June")

        clock.move_to(FIRST_INSTANT_OF_JULY)
        run_resume(run=Run.objects.get(pk=second.pk), reason="a new month")
        assert run_step(second) is not None  # July: nothing spent yet
        entry = LedgerEntry.objects.get(run=second)
        assert FIRST_INSTANT_OF_JULY <= entry.created_at < FIRST_INSTANT_OF_JULY + timedelta(seconds=1)

    assert_invariants(first, second)


def test_a_team_enforce_budget_stops_a_run_whose_own_audit_budget_is_already_over(quiet_team, loop):
    set_period_budget(quiet_team, "0.2", "enforce")
    run = run_start(team=quiet_team, workflow=loop, limits={"budget_usd": "0.05", "budget_mode": "audit"})
    run_step(run)  # run: projected 0.10 > 0.05, reported, re-armed at 0.15; team: 0.10 within
    run_step(run)  # run: 0.20 > 0.15, reported, re-armed at 0.25; team: 0.20 == budget, admitted
    assert run_step(run) is None  # team: 0.30 > 0.20 stops, whatever the run's audit budget says

    run.refresh_from_db()
    assert (run.status, run.error["scope"], run.spent_usd) == (RunStatus.BUDGET_EXCEEDED, "team", D("0.200000"))
    assert [event["projected_usd"] for event in exceeded("run")] == ["0.100000", "0.200000"]
    assert [(event["budget_mode"], event["projected_usd"]) for event in exceeded("team")] == [("enforce", "0.300000")]
    assert_invariants(run)


# -- actual cost, not the estimate ---------------------------------------------------------------------


@pytest.mark.parametrize("output_tokens,cost", [(40, "0.040000"), (100, "0.100000"), (130, "0.130000")])
def test_a_step_is_charged_what_it_cost_above_or_below_its_estimate(quiet_team, loop, output_tokens, cost):
    set_period_budget(quiet_team, "5", "audit")
    run = run_start(team=quiet_team, workflow=loop, limits={"budget_usd": "5", "budget_mode": "enforce"})
    run_step(run, output_tokens=output_tokens, done=True)

    run.refresh_from_db()
    entry = LedgerEntry.objects.get(run=run)
    assert (run.status, run.spent_usd, run.reserved_usd) == (RunStatus.COMPLETED, D(cost), D("0"))
    assert (entry.output_tokens, entry.cost_usd) == (output_tokens, D(cost))
    assert Step.objects.get(run=run).estimate_usd == ESTIMATE
    assert_invariants(run)


def test_the_gate_projects_from_what_earlier_steps_cost_not_what_they_reserved(quiet_team, loop):
    """Steps that cost less than their estimate leave room: a charge-the-estimate bug stops this run early."""
    run = run_start(team=quiet_team, workflow=loop, limits={"budget_usd": "0.2", "budget_mode": "enforce"})
    run_step(run, output_tokens=40)
    run_step(run, output_tokens=40)  # spent 0.08: a third step projects 0.18
    assert run_step(run, output_tokens=40) is not None

    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.iterations) == (RunStatus.RUNNING, D("0.120000"), 3)
    assert run_step(run) is None  # projected 0.12 + 0.10 = 0.22 > 0.2
    run.refresh_from_db()
    assert (run.status, run.spent_usd) == (RunStatus.BUDGET_EXCEEDED, D("0.120000"))
    assert_invariants(run)


def test_a_step_is_charged_its_input_tokens_as_well_as_its_output(quiet_team):
    priced_input = LOOP_AT_A_TENTH.replace("name: tenth", "name: priced-input").replace(
        "input_per_mtok: 0", "input_per_mtok: 2000"
    )
    workflow = workflow_version(team=quiet_team, source=priced_input, name="priced-input").workflow_id
    run = run_start(team=quiet_team, workflow=workflow)
    attempt = step_begin(step_id=pending_step(run).pk, worker="w:1")
    step_settle(attempt=attempt, result=CompletionResult(output={"done": True}, input_tokens=50, output_tokens=20))

    run.refresh_from_db()
    entry = LedgerEntry.objects.get(run=run)
    # 50 input tokens at $2000 per 1M ($0.100000) and 20 output tokens at $1000 per 1M ($0.020000).
    assert (entry.input_tokens, entry.cost_usd, run.spent_usd) == (50, D("0.120000"), D("0.120000"))
    assert_invariants(run)


def test_a_step_is_estimated_its_input_tokens_as_well_as_its_output(quiet_team):
    priced_input = LOOP_AT_A_TENTH.replace("name: tenth", "name: priced-input").replace(
        "input_per_mtok: 0", "input_per_mtok: 2000"
    )
    workflow = workflow_version(team=quiet_team, source=priced_input, name="priced-input").workflow_id
    # The output cap alone ($0.100000) fits the budget exactly; with the prompt's input tokens it does not.
    run = run_start(team=quiet_team, workflow=workflow, limits={"budget_usd": str(ESTIMATE), "budget_mode": "enforce"})

    attempt = step_begin(step_id=pending_step(run).pk, worker="w:1")

    run.refresh_from_db()
    assert (attempt, run.status, run.reserved_usd) == (None, RunStatus.BUDGET_EXCEEDED, 0)
    assert_invariants(run)
