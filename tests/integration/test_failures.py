"""How runs fail, and what never happens when they do, on a real worker."""

import pytest

from tests.conftest import wait_for_run, wait_until
from tests.factories import workflow_version
from tests.invariants import assert_invariants
from workflows.services.runs import run_cancel, run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

STOPPED = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

HEADER = """
workflow:
  name: {name}
  entry_point: a
  runtime: {{provider: fake, default_model: {model}, max_tokens: 100}}
  cost:
    pricing:
      priced-model: {{input_per_mtok: 0, output_per_mtok: 100}}
agents:
"""


def definition(name: str, agents: str, model: str = "priced-model") -> str:
    return HEADER.format(name=name, model=model) + agents


def test_a_template_reaching_for_python_internals_fails_the_run_without_running_them(team, celery_worker):
    source = definition("escape", "  - name: a\n    prompt: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n")
    run = run_start(team=team, workflow=workflow_version(team=team, source=source).workflow_id)

    run = wait_for_run(run.pk, *STOPPED)
    assert run.status == "failed"
    assert run.error["type"] == "TemplateError"
    assert "__class__" in run.error["message"] or "unsafe" in run.error["message"]
    assert run.ledger_entries.count() == 0
    assert_invariants(run)


def test_when_no_route_matches_the_run_fails_saying_so(team, celery_worker):
    source = definition(
        "dead-end",
        "  - name: a\n    prompt: hi\n    mock: {output: {ok: false}}\n    routes: [{to: $end, when: a.output.ok}]\n",
    )
    run = run_start(team=team, workflow=workflow_version(team=team, source=source).workflow_id)

    run = wait_for_run(run.pk, *STOPPED)
    assert run.status == "failed"
    assert run.error == {"type": "RouteError", "message": "no route of agent 'a' matched"}
    assert run.ledger_entries.count() == 1  # the step ran and is charged
    assert_invariants(run)


def test_an_unpriced_model_in_audit_mode_is_recorded_with_no_cost_and_reported(team, celery_worker):
    source = definition("unpriced", "  - name: a\n    prompt: hi\n", model="mystery-model")
    run = run_start(
        team=team, workflow=workflow_version(team=team, source=source).workflow_id, limits={"budget_usd": "1"}
    )

    run = wait_for_run(run.pk, *STOPPED)
    assert run.status == "completed"
    assert run.unpriced_steps == 1
    [entry] = run.ledger_entries.all()
    assert (entry.model, entry.cost_usd, entry.price_source) == ("mystery-model", None, "")
    assert entry.output_tokens > 0
    assert_invariants(run)


def test_cancelling_a_running_run_charges_the_step_in_flight_and_runs_no_more(team, celery_worker):
    source = definition(
        "long",
        "  - name: a\n    prompt: hi\n    mock: {latency_ms: 1500}\n    routes: [{to: b}]\n  - name: b\n    prompt: hi\n",
    )
    run = run_start(team=team, workflow=workflow_version(team=team, source=source).workflow_id)
    wait_for_run(run.pk, "running")

    run_cancel(run=run, reason="changed my mind")
    wait_until(lambda: run.ledger_entries.exists(), message="the step in flight to settle")

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert list(run.ledger_entries.values_list("agent", flat=True)) == ["a"]
    assert not run.steps.filter(agent="b").exists()
    assert_invariants(run)
