"""A for_each group whose agent is a sub-workflow, driven step by step through the services (no
broker), so that the order in which its branches' steps end is the test's: a branch holds its slot
until its sub-workflow ends, a settlement renders nothing under its locks, a step still running
when the run stops or is cancelled ends its branch's way, a sub-workflow that fails is its item's
error, and a branch's sub-workflow may run another.

Prices: input free, output $100 per million tokens; a call reserves $0.10 (its 1,000-token cap)
and costs $0.01 (100 tokens)."""

from decimal import Decimal

import pytest

from tests.conductor.test_group_validator_steps import (  # noqa: F401 - fixtures
    begin,
    run_step,
    settle,
    transactions,
    under_locks,
)
from tests.factories import workflow_version
from tests.invariants import assert_invariants
from workflows.errors import ValidationFailed
from workflows.models import LedgerEntry, Run, Step
from workflows.services.runs import run_cancel, run_resume, run_start
from workflows.services.steps import step_begin

pytestmark = pytest.mark.django_db

RUNTIME = """  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}"""
INNER = f"""
workflow:
  name: inner
  entry_point: first
  input: {{thing: {{type: string}}}}
{RUNTIME}
agents:
  - name: first
    prompt: "First {{{{ workflow.input.thing }}}}"
    routes:
      - {{to: stop, when: "{{{{ workflow.input.thing == 'bad' }}}}"}}
      - {{to: second}}
  - name: second
    prompt: "Second {{{{ workflow.input.thing }}}} after {{{{ first.output.text }}}}"
  - name: stop
    type: terminate
    status: failed
    reason: "no {{{{ workflow.input.thing }}}}"
    output_template: {{text: none}}
output:
  text: "{{{{ second.output.text }}}}"
"""
CALLER = f"""
workflow:
  name: caller
  entry_point: items
  input: {{things: {{type: array}}}}
{RUNTIME}
for_each:
  - name: items
    source: workflow.input.things
    as: thing
    max_concurrent: 2
    failure_mode: continue_on_error
    agent:
      name: runner
      type: workflow
      workflow: ./inner.yaml
      input_mapping: {{thing: "{{{{ thing }}}}"}}
    routes:
      - to: finisher
        when: "{{{{ budget.spent_usd < 100 and context.iteration < 100 }}}}"
agents:
  - name: finisher
    prompt: "Finish {{{{ items.outputs | length }}}} items."
output:
  results: "{{{{ items.outputs }}}}"
"""


def start(team, things=("a", "b", "c"), source: str = CALLER, **limits) -> Run:
    workflow_version(team=team, source=INNER)
    version = workflow_version(team=team, source=source)
    return run_start(team=team, workflow=version.workflow_id, inputs={"things": list(things)}, limits=limits or None)


def step(run: Run, agent: str, **filters) -> Step:
    return run.steps.get(agent=agent, **filters)


def run_no_call(each: Step) -> dict:
    """A step that calls no model (a workflow step, a terminate step): it answers what it prepared."""
    attempt = begin(each)
    settle(attempt, attempt.prepared.data["output"])
    return attempt.prepared.data["output"]


def bind(run: Run, index: int) -> None:
    """The branch's workflow step: its output is the inputs it bound."""
    assert run_no_call(step(run, "runner", branch_index=index)) == {"thing": run.inputs["things"][index]}


def branch(run: Run, index: int) -> None:
    """The whole of a branch whose steps have not started."""
    bind(run, index)
    thing = run.inputs["things"][index]
    run_step(step(run, f"runner[{index}]/first"), {"text": f"{thing}1"})
    run_step(step(run, f"runner[{index}]/second"), {"text": f"{thing}2"})


def charged(run: Run) -> list[str]:
    return sorted(LedgerEntry.objects.filter(run=run).values_list("agent", flat=True))


def test_a_branch_holds_its_slot_until_its_subworkflow_ends_and_the_last_settles_from_renders_ahead(
    team, transactions, under_locks
):
    run = start(team)
    assert list(run.steps.values_list("agent", "branch_index")) == [("runner", 0), ("runner", 1)]
    bind(run, 0)
    bind(run, 1)
    assert not run.steps.filter(branch_index=2).exists()  # both slots are held by sub-workflows
    run_step(step(run, "runner[0]/first"), {"text": "a1"})
    transactions.clear()
    run_step(step(run, "runner[0]/second"), {"text": "a2"})
    assert step(run, "runner", branch_index=2).status == "pending"  # branch 0 ended: its slot freed
    branch(run, 2)
    run_step(step(run, "runner[1]/first"), {"text": "b1"})
    last = begin(step(run, "runner[1]/second"))
    transactions.clear()
    under_locks.clear()

    settle(last, {"text": "b2"})

    assert len(transactions) == 1, f"the settling transaction ran {transactions} (StaleRender)"
    assert under_locks == [], "rendered under the locks"
    run.refresh_from_db()
    outputs = run.checkpoints.latest().outputs
    assert outputs["items"] == {"outputs": [{"text": "a2"}, {"text": "b2"}, {"text": "c2"}], "errors": {}, "count": 3}
    assert sorted(outputs) == ["items"]  # no branch's frame is left
    assert [each.output for each in run.steps.filter(agent="runner").order_by("branch_index")] == [
        {"text": "a2"},
        {"text": "b2"},
        {"text": "c2"},
    ]
    run_step(step(run, "finisher"), {"done": True})
    run.refresh_from_db()
    assert run.status == "completed"
    assert run.output == {"results": [{"text": "a2"}, {"text": "b2"}, {"text": "c2"}]}
    assert_invariants(run)


def test_a_branch_step_that_ends_after_a_stop_leaves_its_next_step_blocked_and_resume_goes_on_there(team):
    run = start(team, things=("a", "b"), budget_usd="0.15", budget_mode="enforce")
    bind(run, 0)
    bind(run, 1)
    running = begin(step(run, "runner[0]/first"))  # holds $0.10
    assert step_begin(step_id=step(run, "runner[1]/first").pk, worker="host:2") is None  # $0.20 > $0.15
    settle(running, {"text": "a1"})

    run.refresh_from_db()
    assert (run.status, run.current_agent, run.spent_usd) == ("budget_exceeded", "items", Decimal("0.010000"))
    assert step(run, "runner[0]/second").status == "blocked"
    assert step(run, "runner[1]/first").status == "blocked"
    assert run.checkpoints.latest().outputs["runner[0]/first"] == {"text": "a1"}

    run_resume(run=run, limits={"budget_usd": "5"})
    run_step(step(run, "runner[0]/second"), {"text": "a2"})
    run_step(step(run, "runner[1]/first"), {"text": "b1"})
    run_step(step(run, "runner[1]/second"), {"text": "b2"})
    run_step(step(run, "finisher"), {"done": True})

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output == {"results": [{"text": "a2"}, {"text": "b2"}]}
    expected = ["finisher", "runner[0]/first", "runner[0]/second", "runner[1]/first", "runner[1]/second"]
    assert charged(run) == expected
    assert_invariants(run)


def test_the_iteration_limit_stops_among_the_branches_and_resume_goes_on(team):
    run = start(team, things=("a", "b"), max_iterations=3)
    bind(run, 0)
    bind(run, 1)
    run_step(step(run, "runner[0]/first"), {"text": "a1"})
    assert step_begin(step_id=step(run, "runner[1]/first").pk, worker="host:2") is None

    run.refresh_from_db()
    assert (run.status, run.iterations) == ("iteration_limit", 3)
    assert step(run, "runner[0]/second").status == "blocked"

    run_resume(run=run, limits={"max_iterations": 20})
    run_step(step(run, "runner[0]/second"), {"text": "a2"})
    run_step(step(run, "runner[1]/first"), {"text": "b1"})
    run_step(step(run, "runner[1]/second"), {"text": "b2"})
    run_step(step(run, "finisher"), {"done": True})
    run.refresh_from_db()
    assert (run.status, run.iterations) == ("completed", 7)
    assert_invariants(run)


def test_cancelling_leaves_a_running_branch_step_charged_and_creates_no_more(team):
    run = start(team, things=("a", "b"))
    bind(run, 0)
    running = begin(step(run, "runner[0]/first"))

    run_cancel(run=run, reason="enough")
    settle(running, {"text": "a1"})

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert not run.steps.filter(agent="runner[0]/second").exists()
    assert step(run, "runner", branch_index=1).status == "cancelled"
    assert charged(run) == ["runner[0]/first"]
    assert_invariants(run)


def test_a_subworkflow_that_fails_is_its_items_error_and_its_frame_is_dropped(team):
    run = start(team, things=("a", "bad"))
    bind(run, 0)
    bind(run, 1)
    run_step(step(run, "runner[1]/first"), {"text": "x"})
    run_no_call(step(run, "runner[1]/stop"))
    failed = step(run, "runner", branch_index=1)
    assert (failed.status, failed.error["type"], failed.error["message"]) == ("failed", "WorkflowTerminated", "no bad")
    run_step(step(run, "runner[0]/first"), {"text": "a1"})
    run_step(step(run, "runner[0]/second"), {"text": "a2"})

    run.refresh_from_db()
    outputs = run.checkpoints.latest().outputs
    assert outputs["items"]["outputs"] == [{"text": "a2"}]
    assert outputs["items"]["errors"] == {"1": {"item_key": "1", "exception_type": "WorkflowTerminated", "message": "no bad"}}
    assert sorted(outputs) == ["items"]
    assert step(run, "finisher").status == "pending"
    assert_invariants(run)


def test_under_fail_fast_a_subworkflow_that_fails_fails_the_run_naming_its_branch(team):
    run = start(team, things=("a", "bad"), source=CALLER.replace("continue_on_error", "fail_fast"))
    bind(run, 0)
    bind(run, 1)
    run_step(step(run, "runner[1]/first"), {"text": "x"})
    run_no_call(step(run, "runner[1]/stop"))

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error == {"type": "WorkflowTerminated", "message": "no bad", "group": "items", "branch": "1"}
    # A resume runs the branch's workflow step again, which enters its sub-workflow afresh.
    checkpoint = run.checkpoints.latest()
    assert checkpoint.next_step == step(run, "runner", branch_index=1, status="failed")
    assert not any(path.startswith("runner[1]") for path in checkpoint.outputs)
    assert_invariants(run)


LEAF = f"""
workflow:
  name: leaf
  entry_point: answer
  input: {{thing: {{type: string}}}}
{RUNTIME}
agents:
  - name: answer
    prompt: "Answer {{{{ workflow.input.thing }}}}"
output:
  text: "{{{{ answer.output.text }}}}"
"""


def test_a_branchs_subworkflow_may_run_another_in_a_frame_inside_its_own(team):
    workflow_version(team=team, source=LEAF)
    inner = INNER.replace(
        "  - name: second\n    prompt: \"Second {{ workflow.input.thing }} after {{ first.output.text }}\"\n",
        "  - name: second\n    type: workflow\n    workflow: ./leaf.yaml\n    input_mapping: {thing: \"{{ first.output.text }}\"}\n",
    )
    assert inner != INNER
    workflow_version(team=team, source=inner)
    version = workflow_version(team=team, source=CALLER)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a"]})
    bind(run, 0)
    run_step(step(run, "runner[0]/first"), {"text": "a1"})
    assert run_no_call(step(run, "runner[0]/second")) == {"thing": "a1"}
    run_step(step(run, "runner[0]/second/answer"), {"text": "a-leaf"})

    run.refresh_from_db()
    nested = step(run, "runner[0]/second/answer")
    assert (nested.group, nested.branch_index) == ("items", 0)
    assert run.checkpoints.latest().outputs["items"]["outputs"] == [{"text": "a-leaf"}]
    run_step(step(run, "finisher"), {"done": True})
    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert_invariants(run)


def _stopped_among_the_branches(team) -> Run:
    run = start(team, things=("a", "b"), budget_usd="0.15", budget_mode="enforce")
    bind(run, 0)
    bind(run, 1)
    running = begin(step(run, "runner[0]/first"))
    assert step_begin(step_id=step(run, "runner[1]/first").pk, worker="host:2") is None
    settle(running, {"text": "a1"})
    run.refresh_from_db()
    assert run.status == "budget_exceeded"
    return run


def test_a_resume_onto_a_version_keeping_the_branches_subworkflow_goes_on_in_their_frames(team):
    run = _stopped_among_the_branches(team)
    again = workflow_version(team=team, source=CALLER.replace("Finish", "Now finish"))

    run_resume(run=run, limits={"budget_usd": "5"}, workflow_version=again.version)
    run_step(step(run, "runner[0]/second"), {"text": "a2"})
    run_step(step(run, "runner[1]/first"), {"text": "b1"})
    run_step(step(run, "runner[1]/second"), {"text": "b2"})
    run_step(step(run, "finisher"), {"done": True})

    run.refresh_from_db()
    assert (run.status, run.workflow_version.version) == ("completed", 2)
    assert run.output == {"results": [{"text": "a2"}, {"text": "b2"}]}
    assert_invariants(run)


@pytest.mark.parametrize(
    ("source", "lacks"),
    [
        (
            CALLER.replace('type: workflow\n      workflow: ./inner.yaml\n      input_mapping: {thing: "{{ thing }}"}', "prompt: Do {{ thing }}."),
            "lacks 'runner'",
        ),
        (
            INNER.replace('prompt: "First', 'output: {text: {type: integer}}\n    prompt: "First'),
            "lacks 'runner[0]/first' with its output as it was",
        ),
        (INNER.replace("thing: {type: string}", "thing: {type: integer}"), "lacks 'runner[0]' taking the inputs it bound"),
    ],
)
def test_a_resume_onto_a_version_that_changed_what_the_branches_ran_is_refused(team, source, lacks):
    run = _stopped_among_the_branches(team)
    if "name: inner" in source:
        workflow_version(team=team, source=source)  # the caller, uploaded again, runs the new inner
        source = CALLER
    version = workflow_version(team=team, source=source)

    with pytest.raises(ValidationFailed) as refused:
        run_resume(run=run, limits={"budget_usd": "5"}, workflow_version=version.version)

    assert any(detail["message"].startswith(lacks) for detail in refused.value.details), refused.value.details
    run.refresh_from_db()
    assert (run.status, run.workflow_version.version) == ("budget_exceeded", 1)


def test_a_groups_agent_without_a_name_runs_under_the_groups(team):
    run = start(team, things=("a",), source=CALLER.replace("      name: runner\n", ""))
    assert run_no_call(step(run, "items", branch_index=0)) == {"thing": "a"}
    run_step(step(run, "items[0]/first"), {"text": "a1"})
    run_step(step(run, "items[0]/second"), {"text": "a2"})

    run.refresh_from_db()
    assert run.checkpoints.latest().outputs["items"]["outputs"] == [{"text": "a2"}]
    assert step(run, "finisher").status == "pending"
    assert_invariants(run)


KEYED_INNER = f"""
workflow:
  name: keyed
  entry_point: ask
  input: {{thing: {{type: string}}}}
{RUNTIME}
agents:
  - name: ask
    session_key: notes
    prompt: "Ask about {{{{ workflow.input.thing }}}}"
    routes:
      - {{to: ask, when: "{{{{ ask.output.text.startswith('first') }}}}"}}
      - {{to: $end}}
output:
  text: "{{{{ ask.output.text }}}}"
"""
KEYED_CALLER = f"""
workflow:
  name: keyed-caller
  entry_point: items
  input: {{things: {{type: array}}}}
  limits: {{max_iterations: 50}}
{RUNTIME}
for_each:
  - name: items
    source: workflow.input.things
    as: thing
    max_concurrent: 2
    agent:
      name: runner
      type: workflow
      workflow: ./keyed.yaml
      input_mapping: {{thing: "{{{{ thing }}}}"}}
    routes:
      - {{to: items, when: "{{{{ budget.spent_usd < 0.05 }}}}"}}
      - {{to: done}}
agents:
  - name: done
    prompt: "Done."
output:
  results: "{{{{ items.outputs }}}}"
"""


def test_a_session_in_a_branchs_subworkflow_is_the_branchs_own_and_starts_afresh_when_the_group_is_entered_again(team):
    workflow_version(team=team, source=KEYED_INNER)
    version = workflow_version(team=team, source=KEYED_CALLER)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"things": ["a", "b"]})
    sent = []

    def ask(index: int, answer: str) -> None:
        attempt = begin(run.steps.get(agent=f"runner[{index}]/ask", status="pending"))
        sent.append((index, [(exchange.prompt, exchange.answer) for exchange in attempt.prepared.request.history]))
        settle(attempt, {"text": answer})

    for _ in range(2):  # the group, entered twice
        for index in (0, 1):
            assert run_no_call(run.steps.get(agent="runner", branch_index=index, status="pending")) == {
                "thing": "ab"[index]
            }
        for index in (0, 1):
            ask(index, f"first {index}")
            ask(index, f"second {index}")
    run_step(step(run, "done"), {"text": "done"})

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert sent[:4] == [
        (0, []),
        (0, [("Ask about a", '{"text": "first 0"}')]),
        (1, []),
        (1, [("Ask about b", '{"text": "first 1"}')]),
    ]
    assert sent[4:] == sent[:4]  # the second entry's sessions hold nothing of the first's
    assert_invariants(run)
