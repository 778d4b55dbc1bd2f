"""Conductor's explicit context mode on a real worker: each agent renders from what it declares; an
input that may not have run is refused at upload unless it is declared optional."""

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from workflows.models import LedgerEntry

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

EXPLICIT = """
workflow:
  name: explicit
  entry_point: research
  input: {topic: {type: string}}
  runtime: {provider: fake, default_model: sim-model, max_tokens: 50}
  context: {mode: explicit}
agents:
  - name: research
    input: [workflow.input.topic]
    prompt: "Research {{ workflow.input.topic }}."
    output: {notes: {type: string}}
    mock: {output: {notes: caps hold}}
    routes: [{to: write, when: "{{ output.notes != 'skip' }}"}, {to: audit}]
  - name: write
    input: [research.output.notes]
    prompt: "Write up {{ research.output.notes }}."
    mock: {output: {done: true}}
    routes: [{to: audit}]
  - name: audit
    input: [WRITE]
    prompt: "Audit{% if write is defined %} {{ write.output }}{% endif %}."
    mock: {output: {ok: true}}
"""


def test_each_agent_renders_from_what_it_declares_and_an_input_that_may_not_have_run_must_be_optional(
    api, team, celery_worker
):
    required = api.post("/api/v1/workflows", {"definition": EXPLICIT.replace("WRITE", "write.output")}, format="json")
    assert required.status_code == 400
    [detail] = required.json()["error"]["details"]
    assert detail["path"] == "agents[2].input[0]" and "'write' does not run before 'audit' on every way" in detail["message"]

    optional = EXPLICIT.replace("WRITE", "'write.output?'")
    assert api.post("/api/v1/workflows", {"definition": optional}, format="json").status_code == 201
    run_id = api.post("/api/v1/runs", {"workflow": "explicit", "inputs": {"topic": "caps"}}, format="json").json()["id"]
    run = wait_for_run(run_id, *TERMINAL)
    assert run.status == "completed", run.error
    assert list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True)) == ["research", "write", "audit"]

    skipping = optional.replace("notes: caps hold", "notes: skip").replace("name: explicit", "name: skipping")
    assert api.post("/api/v1/workflows", {"definition": skipping}, format="json").status_code == 201
    run_id = api.post("/api/v1/runs", {"workflow": "skipping", "inputs": {"topic": "caps"}}, format="json").json()["id"]
    run = wait_for_run(run_id, *TERMINAL)

    assert run.status == "completed", run.error
    assert list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", flat=True)) == ["research", "audit"]
    assert_invariants(run)


FOR_EACH = """
workflow:
  name: MODE-each
  entry_point: plan
  runtime: {provider: fake, default_model: sim-model, max_tokens: 50}
  context: {mode: MODE}
agents:
  - {name: plan, prompt: Plan., output: {items: {type: array}}, mock: {output: {items: ITEMS}}, routes: [{to: each}]}
  - {name: after, input: ["each.outputs"], prompt: "{{ each.count }} done."}
for_each:
  - {name: each, source: plan.output.items, as: item, agent: {prompt: "Do {{ item }}."}, routes: [{to: after}]}
"""


@pytest.mark.parametrize(("mode", "items"), [("explicit", "[a, b]"), ("last_only", "[a]"), ("last_only", "[]")])
def test_a_for_each_reads_its_source_and_the_next_agent_its_result_in_every_mode(api, team, celery_worker, mode, items):
    source = FOR_EACH.replace("MODE", mode).replace("ITEMS", items)
    assert api.post("/api/v1/workflows", {"definition": source}, format="json").status_code == 201
    run_id = api.post("/api/v1/runs", {"workflow": f"{mode}-each"}, format="json").json()["id"]

    run = wait_for_run(run_id, *TERMINAL)

    assert run.status == "completed", run.error
    assert_invariants(run)
