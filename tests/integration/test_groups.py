"""Parallel and for_each groups on real workers: outputs in conductor's shape, one ledger entry per
branch, max_concurrent, an enforce stop in the middle of a group and its resume, and branches that
end at the same moment on several worker processes continuing the group exactly once."""

from decimal import Decimal

import pytest
from celery.contrib.testing.worker import start_worker
from django.conf import settings
from django.db import connection

from budgetsvc.celery import app
from tests.conftest import wait_for_run, wait_until
from tests.factories import FAN_OUT_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import EventType, Run, Step
from workflows.services.runs import run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")
THREADS = 4

# Six items, at most two at a time, each slow enough that a free worker thread would take a third.
SIX_AT_TWO_YAML = """
workflow:
  name: six-at-two
  entry_point: each
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  input:
    items: {type: array, default: [a, b, c, d, e, f]}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: after
    prompt: "{{ each.count }} items"
    mock: {output_tokens: 1000}
for_each:
  - name: each
    source: workflow.input.items
    max_concurrent: 2
    agent:
      prompt: "Item {{ item }}"
      mock: {output: {seen: true}, output_tokens: 1000, latency_ms: 300}
    routes: [{to: after}]
output:
  outputs: "{{ each.outputs }}"
"""

# Items without the field the prompt reads fail their branch; continue_on_error goes on without them.
PARTLY_BAD_YAML = """
workflow:
  name: partly-bad
  entry_point: each
  runtime: {provider: fake, default_model: sim-model, max_tokens: 1000}
  input:
    items: {type: array, default: [{n: 1}, {x: 2}, {n: 3}]}
  cost:
    pricing:
      sim-model: {input_per_mtok: 0, output_per_mtok: 100}
agents:
  - name: report
    prompt: "{{ each.outputs | length }} of {{ each.count }}"
    mock: {output_tokens: 1000}
for_each:
  - name: each
    source: workflow.input.items
    as: thing
    failure_mode: continue_on_error
    agent:
      prompt: "Number {{ thing.n }}"
      mock: {output: {ok: true}, output_tokens: 1000}
    routes: [{to: report}]
output:
  outputs: "{{ each.outputs }}"
  failed: "{{ each.errors.keys() | list }}"
  count: "{{ each.count }}"
"""


@pytest.fixture
def threaded_worker(transactional_db):
    """A real worker with several threads, so several branches can run at once in this process."""
    with start_worker(app, pool="threads", concurrency=THREADS, perform_ping_check=False, shutdown_timeout=30) as worker:
        yield worker


def peak_in_flight(steps) -> int:
    """The most steps that were between their gate and their settlement at the same moment."""
    moments = list(steps.values_list("started_at", "finished_at"))
    changes = sorted([(started, 1) for started, _ in moments] + [(finished, -1) for _, finished in moments])
    peak = in_flight = 0
    for _, change in changes:
        in_flight += change
        peak = max(peak, in_flight)
    return peak


def test_a_parallel_group_and_a_for_each_complete_with_conductors_outputs(api, threaded_worker):
    workflow = api.post("/api/v1/workflows", {"definition": FAN_OUT_YAML}, format="json").json()["id"]
    response = api.post("/api/v1/runs", {"workflow": workflow, "inputs": {"subject": "caching"}}, format="json")
    run_id = response.json()["id"]
    wait_for_run(run_id, *TERMINAL)

    body = api.get(f"/api/v1/runs/{run_id}").json()
    assert body["status"] == "completed", body["error"]
    assert body["output"] == {
        "reviews": {"security_review": {"verdict": "safe"}, "style_review": {"verdict": "tidy"}},
        "findings": [{"finding": "noted"}] * 3,
        "analysed": 3,
        "summary": "all reviewed",
    }
    assert (body["spent_usd"], body["reserved_usd"], body["iterations"]) == ("0.700000", "0.000000", 7)
    ledger = api.get(f"/api/v1/runs/{run_id}/ledger").json()["results"]
    # One ledger entry per branch, each telling its group and branch apart.
    assert sorted((e["group"], e["branch_key"], e["agent"], e["cost_usd"]) for e in ledger) == [
        ("", "", "planner", "0.100000"),
        ("", "", "summary", "0.100000"),
        ("analyses", "0", "analyses", "0.100000"),
        ("analyses", "1", "analyses", "0.100000"),
        ("analyses", "2", "analyses", "0.100000"),
        ("reviews", "security_review", "security_review", "0.100000"),
        ("reviews", "style_review", "style_review", "0.100000"),
    ]
    steps = api.get(f"/api/v1/runs/{run_id}/steps").json()["results"]
    assert [(s["group"], s["branch_index"], s["branch_key"]) for s in steps if s["group"] == "analyses"] == [
        ("analyses", 0, "0"),
        ("analyses", 1, "1"),
        ("analyses", 2, "2"),
    ]
    run = Run.objects.get(pk=run_id)
    assert run.events.filter(type=EventType.GROUP_COMPLETED).count() == 2
    assert peak_in_flight(run.steps.filter(group="analyses")) <= 2
    assert_invariants(run)


def test_max_concurrent_bounds_the_branches_in_flight(team, threaded_worker):
    run = run_start(team=team, workflow=workflow_version(team=team, source=SIX_AT_TWO_YAML).workflow_id)
    run = wait_for_run(run.pk, *TERMINAL, timeout=60)

    assert run.status == "completed", run.error
    assert run.output == {"outputs": [{"seen": True}] * 6}
    branches = run.steps.filter(group="each")
    assert branches.count() == 6 and run.ledger_entries.count() == 7
    # THREADS worker threads were free, yet no more than max_concurrent branches ran at once.
    assert peak_in_flight(branches) <= 2
    assert_invariants(run)


def test_continue_on_error_goes_on_with_the_branches_that_succeeded(team, celery_worker):
    run = run_start(team=team, workflow=workflow_version(team=team, source=PARTLY_BAD_YAML).workflow_id)
    run = wait_for_run(run.pk, *TERMINAL)

    assert run.status == "completed", run.error
    assert run.output == {"outputs": [{"ok": True}, {"ok": True}], "failed": ["1"], "count": 3}
    assert run.steps.get(branch_key="1").error["type"] == "TemplateError"
    assert run.ledger_entries.count() == 3  # two branches and the report: the failed one reached no provider
    assert_invariants(run)


def test_an_enforce_stop_mid_group_stops_unstarted_branches_and_resume_runs_only_those(api, celery_worker):
    workflow = api.post("/api/v1/workflows", {"definition": FAN_OUT_YAML}, format="json").json()["id"]
    response = api.post(
        "/api/v1/runs",
        {"workflow": workflow, "inputs": {"subject": "caching"}, "limits": {"budget_usd": "0.45", "budget_mode": "enforce"}},
        format="json",
    )
    run_id = response.json()["id"]
    wait_for_run(run_id, *TERMINAL)

    body = api.get(f"/api/v1/runs/{run_id}").json()
    assert (body["status"], body["spent_usd"], body["reserved_usd"]) == ("budget_exceeded", "0.400000", "0.000000")
    assert body["error"]["current_agent"] == "analyses"
    # Whichever branch the worker took first ran; the filesystem transport delivers messages sent in
    # the same millisecond in no fixed order, so which one it was is not part of the contract.
    analyses = Step.objects.filter(run_id=run_id, group="analyses")
    assert sorted(analyses.values_list("status", flat=True)) == ["blocked", "blocked", "succeeded"]
    assert_invariants(Run.objects.get(pk=run_id))

    response = api.post(f"/api/v1/runs/{run_id}/resume", {"budget_usd": "1.00", "reason": "worth it"}, format="json")
    assert response.status_code == 202, response.json()
    wait_for_run(run_id, "completed", "failed", "budget_exceeded")

    run = Run.objects.get(pk=run_id)
    assert (run.status, run.spent_usd) == ("completed", Decimal("0.700000"))
    # Each branch ran and was charged exactly once, across the stop and the resume.
    assert sorted(run.ledger_entries.values_list("step__branch_key", flat=True)) == [
        "", "", "0", "1", "2", "security_review", "style_review",
    ]  # fmt: skip
    assert run.output["findings"] == [{"finding": "noted"}] * 3
    assert_invariants(run)


RACE_RUNS = 4
RACE_BRANCHES = 9

# Nine branches at once, all ending within moments of each other on different worker processes.
RACE_YAML = f"""
workflow:
  name: photo-finish
  entry_point: each
  runtime: {{provider: fake, default_model: sim-model, max_tokens: 1000}}
  input:
    items: {{type: array, default: {list(range(RACE_BRANCHES))}}}
  cost:
    pricing:
      sim-model: {{input_per_mtok: 0, output_per_mtok: 100}}
agents:
  - name: after
    prompt: "{{{{ each.count }}}} done"
    mock: {{output_tokens: 1000}}
for_each:
  - name: each
    source: workflow.input.items
    max_concurrent: {RACE_BRANCHES}
    agent:
      prompt: "Item {{{{ item }}}}"
      mock: {{output: {{ok: true}}, output_tokens: 1000, latency_ms: 300}}
    routes: [{{to: after}}]
"""


@pytest.mark.skipif(
    connection.vendor != "postgresql" or not settings.CELERY_BROKER_URL.startswith("redis://"),
    reason="needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...: the race is between "
    "worker processes on one PostgreSQL database, which SQLite and the filesystem broker cannot host",
)
def test_branches_ending_at_once_on_several_workers_continue_the_group_exactly_once(team, workers):
    workflow = workflow_version(team=team, source=RACE_YAML).workflow_id
    started = [run_start(team=team, workflow=workflow).pk for _ in range(RACE_RUNS)]
    wait_until(
        lambda: Run.objects.filter(pk__in=started, status__in=TERMINAL).count() == RACE_RUNS,
        timeout=90,
        message="every run to stop",
    )

    for run in Run.objects.filter(pk__in=started):
        assert run.status == "completed", run.error
        assert run.events.filter(type=EventType.GROUP_COMPLETED).count() == 1
        assert run.steps.filter(agent="after").count() == 1
        assert run.ledger_entries.count() == RACE_BRANCHES + 1
        assert run.checkpoints.latest().outputs["each"]["count"] == RACE_BRANCHES
        assert_invariants(run)
    # The branches did run on several processes at once, so their ends really raced.
    assert Step.objects.filter(run_id__in=started, group="each").values("worker").distinct().count() > 1
