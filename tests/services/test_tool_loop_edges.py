"""Edges of an agent's tool loop that the state machine (test_state_machine.py) found, each driven
step by step against a real MCP server on 127.0.0.1, as tests/services/test_tool_loop.py does."""

import pytest

from tests.invariants import assert_invariants
from tests.services.test_tool_loop import LOOKUP, drive, source, start, tools  # noqa: F401 (a fixture)
from workflows.models import Event, EventType, LedgerEntry, RunStatus, StepStatus
from workflows.services.runs import run_cancel
from workflows.services.steps import step_begin, step_settle
from workflows.services.steps.kinds import kind_named

pytestmark = pytest.mark.django_db


def _run_admitted(run):
    """The run's pending step, admitted by the gate and its work done, as a worker would, but not settled."""
    attempt = step_begin(step_id=run.steps.get(status=StepStatus.PENDING).pk, worker="host:1")
    return attempt, kind_named(attempt.prepared.kind).run(attempt)


@pytest.mark.parametrize("settled_before", [0, 1, 2], ids=["listing", "model call", "tool call"])
def test_a_loop_step_that_finishes_after_its_run_was_cancelled_settles_charged(team, tools, settled_before):
    """Found by the state machine: a cancelled run keeps its agent's output when a step of the agent
    finishes after the cancel; a loop step that asks for more has no output to keep, and its settlement
    crashed (AttributeError), leaving the step running, its reservation held and a model call unpaid."""
    run = start(team, source(tools.url, tool_calls=[[LOOKUP]]))
    for _ in range(settled_before):
        attempt, result = _run_admitted(run)
        step_settle(attempt=attempt, result=result)
    attempt, result = _run_admitted(run)

    run_cancel(run=run, reason="enough")
    step_settle(attempt=attempt, result=result)

    run.refresh_from_db()
    step = run.steps.get(pk=attempt.step_id)
    assert (run.status, run.reserved_usd) == (RunStatus.CANCELLED, 0)
    assert step.status == StepStatus.SUCCEEDED
    assert not run.steps.filter(status=StepStatus.PENDING).exists()  # nothing follows in a cancelled run
    assert LedgerEntry.objects.filter(run=run).count() == min(settled_before, 1)  # the one model call
    assert_invariants(run)


def test_a_duplicate_settlement_of_a_step_that_charges_nothing_records_nothing(team, tools):
    """Found by the state machine: a settlement delivered twice is recognised by its ledger entry; a
    listing or tool call has none, so the duplicate was taken for a superseded attempt finishing late
    and recorded the threshold alerts due at that moment, which belong to the next settlement."""
    run = start(team, source(tools.url, tool_calls=[[LOOKUP]]), budget_usd="10", budget_mode="audit")
    attempt, result = _run_admitted(run)
    step_settle(attempt=attempt, result=result)
    # The run's spend is now at 100% of a budget lowered to it: the next settlement alerts.
    attempt_2, result_2 = _run_admitted(run)
    step_settle(attempt=attempt_2, result=result_2)
    run.refresh_from_db()
    run.budget_usd = run.spent_usd
    run.save(update_fields=["budget_usd"])
    events = Event.objects.filter(run=run).count()

    step_settle(attempt=attempt, result=result)  # the listing's settlement, delivered again

    assert Event.objects.filter(run=run).count() == events
    assert drive(run).status == "completed"
    assert Event.objects.filter(run=run, type=EventType.BUDGET_THRESHOLD_CROSSED).exists()
    assert_invariants(run)
