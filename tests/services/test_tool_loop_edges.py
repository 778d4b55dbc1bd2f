"""Edges of an agent's tool loop that the state machine (test_state_machine.py) found, each driven
step by step against a real MCP server on 127.0.0.1, as tests/services/test_tool_loop.py does."""

import pytest

from tests.invariants import assert_invariants
from tests.services.test_tool_loop import LOOKUP, drive, source, start, tools  # noqa: F401 (a fixture)
from workflows.models import LedgerEntry, RunStatus, StepStatus
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

