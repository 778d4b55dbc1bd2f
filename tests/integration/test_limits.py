"""Iteration limits, timeouts and team defaults, on a real worker."""

from decimal import Decimal

import pytest

from tests.conftest import wait_for_run
from tests.factories import LOOP_YAML, SLOW_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import Run
from workflows.services.runs import run_resume, run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STOPPED = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out")


def test_a_loop_stops_at_max_iterations_and_resumes_with_more(team, celery_worker):
    version = workflow_version(team=team, source=LOOP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, limits={"max_iterations": 3})

    run = wait_for_run(run.pk, *STOPPED)
    assert run.status == "iteration_limit"
    assert run.iterations == 3
    assert run.error["type"] == "MaxIterationsError"
    assert run.steps.filter(status="succeeded").count() == 3

    run_resume(run=run, limits={"max_iterations": 5}, reason="one more try")
    run = wait_for_run(run.pk, *STOPPED)
    assert run.status == "iteration_limit"
    assert run.iterations == 5
    assert run.ledger_entries.count() == 5
    assert str(run.spent_usd) == "0.050000"
    assert_invariants(run)


def test_a_timeout_stops_the_run_before_the_next_step(team, celery_worker):
    version = workflow_version(team=team, source=SLOW_YAML)
    run = run_start(team=team, workflow=version.workflow_id, limits={"timeout_seconds": 2})

    run = wait_for_run(run.pk, *STOPPED)
    assert run.status == "timed_out"
    assert run.iterations == 1
    assert run.current_agent == "second"
    assert run.error["type"] == "TimeoutError"
    assert_invariants(run)


def test_team_defaults_apply_when_neither_run_nor_workflow_sets_a_limit(team, celery_worker):
    team.default_budget_usd = Decimal("0.50")
    team.default_budget_mode = "enforce"
    team.default_max_iterations = 7
    team.save()
    version = workflow_version(team=team)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "defaults"})

    assert run.limit_sources == {
        "budget_usd": "team",
        "budget_mode": "team",
        "max_iterations": "team",
        "timeout_seconds": "system",
    }
    run = wait_for_run(run.pk, *STOPPED)
    assert run.status == "budget_exceeded"
    assert str(run.spent_usd) == "0.300000"
    assert run.max_iterations == 7
    assert_invariants(Run.objects.get(pk=run.pk))
