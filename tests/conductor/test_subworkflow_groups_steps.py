"""Groups inside a sub-workflow, driven step by step through the services, so that the order in which
branches end is the test's; and on PostgreSQL + Redis, a worker killed during a branch inside a frame."""

import pytest

from tests.conductor.test_group_validator_steps import (  # noqa: F401 - fixtures
    begin,
    run_step,
    settle,
    transactions,
    under_locks,
)
from tests.factories import workflow_version
from tests.integration.test_worker_crash import worker_process  # noqa: F401 - a worker process to kill
from tests.invariants import assert_invariants
from workflows.models import Run
from workflows.services.runs import run_start

pytestmark = pytest.mark.django_db


def drive(run: Run, answer, limit: int = 40) -> None:
    """Run each pending step in sequence order, as a worker would, `answer(step)` its output."""
    for _ in range(limit):
        step = run.steps.filter(status="pending").order_by("sequence").first()
        if step is None:
            return
        attempt = begin(step)
        output = attempt.prepared.data["output"] if attempt.prepared.request is None else answer(step, attempt)
        settle(attempt, output)
    raise AssertionError("still running")


CHILD = """
      workflow:
        name: inner
        entry_point: planner
        input: {things: {type: array}}
        runtime: {provider: fake, default_model: sim, max_tokens: 1000}
        cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
      agents:
        - {name: planner, prompt: "Plan {{ workflow.input.things | length }} things.", routes: [{to: items}]}
      for_each:
        - name: items
          source: workflow.input.things
          as: thing
          max_concurrent: 2
          agent:
            name: worker
            prompt: "Inner {{ thing }} {{ planner.output.plan }}"
            output: {text: {type: string}}
          routes: [{to: $end}]
      output:
        results: "{{ items.outputs }}"
        count: "{{ items.count }}"
"""

LOOP = """
workflow:
  name: loop
  entry_point: inner
  input: {things: {type: array}}
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: inner
    type: workflow
    input_mapping: {things: "{{ workflow.input.things if judge is not defined else judge.output.next }}"}
    workflow:CHILD
    routes: [{to: judge}]
  - name: judge
    prompt: "Judge {{ inner.output.results }}"
    output: {again: {type: boolean}, next: {type: array}}
    routes:
      - to: inner
        when: "{{ judge.output.again }}"
      - to: $end
output:
  results: "{{ inner.output.results }}"
  count: "{{ inner.output.count }}"
""".replace("CHILD", CHILD)


def test_reentering_a_subworkflow_gives_its_group_a_fresh_entry_and_fresh_results(team):
    version = workflow_version(team=team, source=LOOP)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b", "c"]})
    judged = []

    def answer(step, attempt):
        if step.agent == "judge":
            judged.append(attempt.prepared.request.prompt)
            return {"again": len(judged) == 1, "next": ["x"]}
        if step.agent == "inner/planner":
            return {"plan": "go"}
        return {"text": attempt.prepared.request.prompt}

    drive(run, answer)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output == {"results": [{"text": "Inner x go"}], "count": 1}
    entries = list(run.steps.filter(group="inner/items").order_by("sequence").values_list("iteration", "branch_key"))
    assert entries == [(1, "0"), (1, "1"), (1, "2"), (2, "0")]
    assert_invariants(run)



TWICE = """
workflow:
  name: twice
  entry_point: items
  input: {things: {type: array}}
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
for_each:
  - name: items
    source: workflow.input.things
    as: thing
    agent:
      name: worker
      prompt: "Outer {{ thing }}"
      output: {text: {type: string}}
    routes: [{to: first}]
agents:
  - name: first
    type: workflow
    input_mapping: {things: "{{ items.outputs | map(attribute='text') | list }}"}
    workflow:CHILD
    routes: [{to: second}]
  - name: second
    type: workflow
    input_mapping: {things: "{{ ['z'] }}"}
    workflow:CHILD
    routes: [{to: finisher}]
  - name: finisher
    prompt: "Finish {{ items.outputs }} {{ first.output.results }} {{ second.output.results }}"
output:
  outer: "{{ items.outputs }}"
  first: "{{ first.output.results }}"
  second: "{{ second.output.results }}"
""".replace("CHILD", CHILD)


def answer_echo(step, attempt):
    if step.agent.endswith("planner"):
        return {"plan": step.agent}
    if step.agent == "finisher":
        return {"done": True}
    return {"text": attempt.prepared.request.prompt}


def test_a_top_level_group_and_two_subworkflows_groups_of_one_name_keep_apart(team):
    version = workflow_version(team=team, source=TWICE)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b"]})

    drive(run, answer_echo)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output == {
        "outer": [{"text": "Outer a"}, {"text": "Outer b"}],
        "first": [{"text": "Inner Outer a first/planner"}, {"text": "Inner Outer b first/planner"}],
        "second": [{"text": "Inner z second/planner"}],
    }
    groups = list(run.steps.exclude(group="").order_by("sequence").values_list("agent", "group", "iteration", "branch_key"))
    assert groups == [
        ("worker", "items", 1, "0"), ("worker", "items", 1, "1"),
        ("first/worker", "first/items", 1, "0"), ("first/worker", "first/items", 1, "1"),
        ("second/worker", "second/items", 1, "0"),
    ]
    assert_invariants(run)


PAR_END = """
workflow:
  name: parend
  entry_point: inner
  input: {things: {type: array}}
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - name: inner
    type: workflow
    workflow:
      workflow:
        name: inner
        entry_point: checks
        input: {things: {type: array}}
        runtime: {provider: fake, default_model: sim, max_tokens: 1000}
        cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
      parallel:
        - name: checks
          agents: [risk, price]
          routes:
            - to: $end
              when: "{{ budget.spent_usd < 100 and context.iteration < 100 }}"
              output: {spent: "{{ budget.spent_usd }}", steps: "{{ context.iteration }}"}
      agents:
        - {name: risk, prompt: "Risk of {{ workflow.input.things }}", output: {level: {type: string}}}
        - {name: price, prompt: "Price of {{ workflow.input.things }}", output: {usd: {type: number}}, VALIDATOR}
      output:
        risk: "{{ checks.outputs.risk.level }}"
        usd: "{{ checks.outputs.price.usd }}"
    routes:
      - to: $end
        when: "{{ budget.spent_usd < 100 and context.iteration < 100 }}"
output:
  risk: "{{ inner.output.risk }}"
  usd: "{{ inner.output.usd }}"
  total: "{{ budget.spent_usd }}"
"""


@pytest.mark.parametrize("validator", [False, True])
def test_a_parallel_group_ending_the_subworkflow_and_the_run_settles_from_what_was_rendered_ahead(
    team, transactions, under_locks, validator
):
    source = PAR_END.replace(", VALIDATOR", ", validator: {criteria: Good.}" if validator else "")
    version = workflow_version(team=team, source=source)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a"]}, limits={"budget_usd": "5"})
    bind = begin(run.steps.get(agent="inner"))
    settle(bind, bind.prepared.data["output"])
    run_step(run.steps.get(agent="inner/risk"), {"level": "low"})
    last = begin(run.steps.get(agent="inner/price"))
    if validator:
        settle(last, {"usd": 3})
        last = begin(run.steps.get(agent="inner/price", role="validator"))
    transactions.clear()
    under_locks.clear()

    settle(last, {"usd": 3} if not validator else {"passed": True, "issues": []})

    assert len(transactions) == 1, f"the settling transaction ran {transactions} (StaleRender)"
    assert under_locks == [], "rendered under the locks"
    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["risk"] == "low" and run.output["usd"] == 3
    assert run.checkpoints.latest().outputs["inner"]["steps"] == 3  # the inner step and the checks; a validator counts for none
    assert_invariants(run)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_during_a_branch_inside_a_subworkflow_is_redelivered_and_its_killed_call_estimated(
    team, worker_process
):
    import os
    import signal
    from pathlib import Path

    import yaml

    from tests.conftest import wait_for_run, wait_until
    from workflows.models import LedgerEntry, Step
    from workflows.services.workflows import workflow_create

    here = Path(__file__).parent
    quotes = yaml.safe_load((here / "supplier_quotes.yaml").read_text())
    quotes["for_each"][0]["agent"]["mock"]["latency_ms"] = 4000
    workflow_create(team=team, definition=quotes)
    version = workflow_create(team=team, definition=(here / "supplier_brief.yaml").read_text())
    run = run_start(
        team=team, workflow=version.workflow_id, inputs={"part": "M8 bolt", "suppliers": ["Acme", "Bolt", "Cogs"]}
    )

    killed = wait_until(
        lambda: Step.objects.filter(run=run, agent="scan/quoter", status="running").exclude(worker="").first(),
        message="a quote's call to start",
    )
    os.kill(int(killed.worker.rsplit(":", 1)[1]), signal.SIGKILL)

    run = wait_for_run(run.pk, "completed", "failed", "budget_exceeded", "iteration_limit", "cancelled", timeout=120)
    assert run.status == "completed", run.error
    killed.refresh_from_db()
    assert (killed.status, killed.attempts, killed.redeliveries) == ("succeeded", 2, 1)
    assert run.output["quotes"] == [{"usd": 12}] * 3
    # The scan step charges nothing; the killed attempt is charged its estimate.
    assert LedgerEntry.objects.filter(run=run).count() == run.steps.count()
    assert list(LedgerEntry.objects.filter(step=killed).values_list("attempt", "basis")) == [
        (1, "estimated"),
        (2, "reported"),
    ]
    assert_invariants(run)


def test_the_api_and_admin_list_the_steps_and_ledger_of_groups_inside_a_subworkflow(team, api, admin_client):
    from django.urls import reverse

    version = workflow_version(team=team, source=TWICE)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b"]}, limits={"budget_usd": "5"})
    drive(run, answer_echo)

    steps = api.get(f"/api/v1/runs/{run.pk}/steps")
    assert steps.status_code == 200, steps.content
    listed = steps.json()["results"] if "results" in steps.json() else steps.json()
    assert {(step["agent"], step["group"]) for step in listed} >= {("first/worker", "first/items"), ("worker", "items")}
    ledger = api.get(f"/api/v1/runs/{run.pk}/ledger")
    assert ledger.status_code == 200, ledger.content
    assert "second/worker" in ledger.content.decode()
    assert api.get(f"/api/v1/runs/{run.pk}/events").status_code == 200
    assert api.get(f"/api/v1/runs/{run.pk}/checkpoints").status_code == 200
    spend = api.get("/api/v1/spend", {"group_by": "agent"})
    assert spend.status_code == 200 and "first/worker" in spend.content.decode()
    profile = api.get(f"/api/v1/workflows/{version.workflow_id}/cost-profile")
    assert profile.status_code == 200 and "second/worker" in profile.content.decode()
    page = admin_client.get(reverse("admin:workflows_run_change", args=[run.pk]))
    assert page.status_code == 200 and "first/items" in page.content.decode()
    for model in ("step", "ledgerentry", "event", "checkpoint"):
        url = reverse(f"admin:workflows_{model}_changelist")
        assert admin_client.get(url, {"q": "first/items"}).status_code == 200


@pytest.mark.parametrize("usage", [False, True])
def test_the_last_branch_failing_under_continue_on_error_returns_from_the_frame_from_what_was_rendered_ahead(
    team, transactions, under_locks, usage
):
    from tests.services.test_subworkflow_groups import CALLER
    from workflows.providers import ProviderError, Usage
    from workflows.services.steps.execute import step_provider_failed

    version = workflow_version(team=team, source=CALLER)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b"]}, limits={"budget_usd": "5"})
    bind = begin(run.steps.get(agent="inner"))
    settle(bind, bind.prepared.data["output"])
    run_step(run.steps.get(agent="inner/planner"), {"plan": "both"})
    run_step(run.steps.get(agent="inner/worker", branch_key="0"), {"text": "a"})
    last = begin(run.steps.get(agent="inner/worker", branch_key="1"))
    transactions.clear()
    under_locks.clear()

    billed = Usage(input_tokens=0, output_tokens=100) if usage else None
    step_provider_failed(attempt=last, error=ProviderError("down", status_code=400, usage=billed))

    run.refresh_from_db()
    assert run.checkpoints.latest().outputs["inner"] == {"results": [{"text": "a"}]}
    assert len(transactions) == 1, f"the settling transaction ran {transactions} (StaleRender)"
    assert under_locks == [], "rendered under the locks"
    assert_invariants(run)


TOP_COE = """
workflow:
  name: topcoe
  entry_point: items
  input: {things: {type: array}}
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
for_each:
  - name: items
    source: workflow.input.things
    as: thing
    failure_mode: continue_on_error
    agent: {name: worker, prompt: "Do {{ thing }}", output: {text: {type: string}}}
    routes:
      - to: $end
        when: "{{ budget.spent_usd < 100 }}"
agents:
  - {name: unused, prompt: "x"}
output:
  results: "{{ items.outputs }}"
"""


def test_top_level_the_last_branch_failing_with_a_billed_call_is_settled_from_what_was_rendered_ahead(
    team, transactions, under_locks
):
    from workflows.providers import ProviderError, Usage
    from workflows.services.steps.execute import step_provider_failed

    version = workflow_version(team=team, source=TOP_COE)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b"]}, limits={"budget_usd": "5"})
    run_step(run.steps.get(branch_key="0"), {"text": "a"})
    last = begin(run.steps.get(branch_key="1"))
    transactions.clear()
    under_locks.clear()

    step_provider_failed(attempt=last, error=ProviderError("down", status_code=400, usage=Usage(input_tokens=0, output_tokens=100)))

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert len(transactions) == 1, f"the settling transaction ran {transactions} (StaleRender)"
    assert under_locks == [], "rendered under the locks"


FORWARDED = """
workflow:
  name: forwarded
  entry_point: prep
  input: {things: {type: array}}
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
agents:
  - {name: prep, prompt: "Prepare.", routes: [{to: inner}]}
  - name: inner
    type: workflow
    workflow:
      workflow:
        name: inner
        entry_point: items
        input: {things: {type: array}}
        runtime: {provider: fake, default_model: sim, max_tokens: 1000}
        cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
      agents:
        - {name: unused, prompt: "x"}
      for_each:
        - name: items
          source: workflow.input.things
          as: thing
          agent: {name: worker, prompt: "Do {{ thing }}"}
          routes: [{to: $end}]
      output:
        results: "{{ items.outputs }}"
output:
  results: "{{ inner.output.results }}"
"""


def test_an_input_a_subworkflow_s_for_each_runs_over_is_held_to_for_each_max_items_at_start(team, settings):
    from workflows.errors import ValidationFailed

    settings.FOR_EACH_MAX_ITEMS = 2
    version = workflow_version(team=team, source=FORWARDED)

    # docs/api.md: "an input that a for_each group runs over when it holds more than FOR_EACH_MAX_ITEMS
    # items" is a 400 at POST /runs, before anything is spent; the sub-workflow runs over the run's own
    # input (its step forwards the caller's inputs).
    with pytest.raises(ValidationFailed) as refused:
        run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b", "c"]})

    assert refused.value.details == [{"path": "inputs.things", "message": "more than 2 items (FOR_EACH_MAX_ITEMS)"}]


def test_a_parallel_entry_point_of_a_subworkflow_refused_whole_resumes_onto_a_new_version(team):
    from workflows.services.runs import run_resume

    source = PAR_END.replace(", VALIDATOR", "")
    version = workflow_version(team=team, source=source)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a"]}, limits={"max_iterations": 2})
    bind = begin(run.steps.get(agent="inner"))
    settle(bind, bind.prepared.data["output"])
    run.refresh_from_db()
    assert (run.status, run.current_agent) == ("iteration_limit", "inner/checks")
    again = workflow_version(team=team, source=source.replace("Risk of", "The risk of"))

    run_resume(run=run, limits={"max_iterations": 3}, workflow_version=again.version)
    run_step(run.steps.get(agent="inner/risk"), {"level": "low"})
    run_step(run.steps.get(agent="inner/price"), {"usd": 3})

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert (run.output["risk"], run.output["usd"]) == ("low", 3)
    assert_invariants(run)
