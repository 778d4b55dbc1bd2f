"""Parallel and for_each groups through the services, without a broker: each branch a step with its
own gate and reservation, group completion, failure modes, budget stops and resume."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.factories import FAN_OUT_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import EventType, Run, Step
from workflows.providers import CompletionResult
from workflows.services.runs import run_cancel, run_resume, run_start
from workflows.services.steps import step_begin, step_fail, step_settle
from workflows.services.sweeper import sweep_stuck_steps

pytestmark = pytest.mark.django_db

TENTH = Decimal("0.100000")  # every step: 1,000 output tokens at $100/Mtok, input free


def start(team, source: str = FAN_OUT_YAML, **limits) -> Run:
    version = workflow_version(team=team, source=source)
    return run_start(team=team, workflow=version.workflow_id, inputs={"subject": "caching"}, limits=limits or None)


def begin(step: Step):
    attempt = step_begin(step_id=step.pk, worker="host:1")
    assert attempt is not None, f"{step} was not admitted"
    return attempt


def settle(attempt, output=None) -> None:
    output = {"done": attempt.step_id} if output is None else output
    step_settle(attempt=attempt, result=CompletionResult(output=output, input_tokens=0, output_tokens=1000))


def run_step(step: Step, output=None) -> None:
    settle(begin(step), output)


def step_of(run: Run, agent: str, branch: str = "") -> Step:
    return run.steps.filter(agent=agent, branch_key=branch).latest("sequence")


def statuses(run: Run, group: str) -> list[tuple[str, str]]:
    return list(run.steps.filter(group=group).order_by("branch_index").values_list("branch_key", "status"))


def through_reviews(run: Run) -> None:
    run_step(step_of(run, "planner"), {"topics": ["cost", "latency", "safety"]})
    run_step(step_of(run, "security_review", "security_review"), {"verdict": "safe"})
    run_step(step_of(run, "style_review", "style_review"), {"verdict": "tidy"})


def test_a_parallel_group_sends_every_branch_and_goes_on_only_when_the_last_ends(team):
    run = start(team)
    run_step(step_of(run, "planner"), {"topics": ["cost", "latency", "safety"]})

    assert statuses(run, "reviews") == [("security_review", "pending"), ("style_review", "pending")]
    security = begin(step_of(run, "security_review", "security_review"))
    style = begin(step_of(run, "style_review", "style_review"))
    run.refresh_from_db()
    # Two steps in flight, each holding its own reservation.
    assert (run.reserved_usd, run.current_agent) == (2 * TENTH, "reviews")
    assert_invariants(run)

    settle(security, {"verdict": "safe"})
    assert not run.steps.filter(group="analyses").exists()
    settle(style, {"verdict": "tidy"})

    assert run.checkpoints.latest().outputs["reviews"] == {
        "outputs": {"security_review": {"verdict": "safe"}, "style_review": {"verdict": "tidy"}},
        "errors": {},
    }
    [completed] = run.events.filter(type=EventType.GROUP_COMPLETED)
    assert completed.payload == {"group": "reviews", "succeeded": 2, "failed": 0}
    # max_concurrent 2: the third item's branch is created only when a slot frees.
    assert statuses(run, "analyses") == [("0", "pending"), ("1", "pending")]
    assert_invariants(run)


def test_for_each_branches_see_their_item_index_and_key_and_respect_max_concurrent(team):
    run = start(team)
    through_reviews(run)

    first = begin(step_of(run, "analyses", "0"))
    second = begin(step_of(run, "analyses", "1"))
    assert first.prepared.request.prompt == "Analyse cost (item 0, key 0)."
    assert second.prepared.request.prompt == "Analyse latency (item 1, key 1)."
    assert len(statuses(run, "analyses")) == 2

    settle(first, {"finding": "cheap"})  # frees a slot: the third item's branch is created and sent
    assert statuses(run, "analyses") == [("0", "succeeded"), ("1", "running"), ("2", "pending")]
    third = begin(step_of(run, "analyses", "2"))
    assert third.prepared.request.prompt == "Analyse safety (item 2, key 2)."
    settle(third, {"finding": "safe"})
    settle(second, {"finding": "fast"})

    # Outputs in item order, whatever order the branches ended in.
    assert run.checkpoints.latest().outputs["analyses"] == {
        "outputs": [{"finding": "cheap"}, {"finding": "fast"}, {"finding": "safe"}],
        "errors": {},
        "count": 3,
    }
    summary = begin(step_of(run, "summary"))
    assert summary.prepared.request.prompt.startswith("Security: safe; style: tidy.\n3 of 3 topics analysed.")
    settle(summary, {"summary": "ok"})
    run.refresh_from_db()
    assert run.status == "completed"
    assert run.output["findings"] == [{"finding": "cheap"}, {"finding": "fast"}, {"finding": "safe"}]
    assert (run.output["analysed"], run.spent_usd, run.iterations) == (3, 7 * TENTH, 7)
    assert run.ledger_entries.count() == 7
    assert_invariants(run)


def test_continue_on_error_records_a_failed_branch_and_goes_on(team):
    run = start(team)
    through_reviews(run)
    step_fail(attempt=begin(step_of(run, "analyses", "0")), error={"type": "ProviderError", "message": "boom"})
    run_step(step_of(run, "analyses", "1"), {"finding": "fast"})
    run_step(step_of(run, "analyses", "2"), {"finding": "safe"})

    run.refresh_from_db()
    assert run.status == "running"
    assert run.checkpoints.latest().outputs["analyses"] == {
        "outputs": [{"finding": "fast"}, {"finding": "safe"}],
        "errors": {"0": {"item_key": "0", "exception_type": "ProviderError", "message": "boom"}},
        "count": 3,
    }
    assert step_of(run, "summary").status == "pending"
    assert_invariants(run)


def test_continue_on_error_fails_the_run_when_every_branch_failed_and_resume_runs_them_again(team):
    run = start(team)
    through_reviews(run)
    for key in ("0", "1", "2"):
        step_fail(attempt=begin(step_of(run, "analyses", key)), error={"type": "ProviderError", "message": key})

    run.refresh_from_db()
    assert (run.status, run.error["type"], run.error["group"]) == ("failed", "GroupFailedError", "analyses")
    assert set(run.error["errors"]) == {"0", "1", "2"}

    run_resume(run=run, reason="provider is back")
    assert statuses(run, "analyses") == [("0", "pending"), ("1", "pending"), ("2", "waiting")]
    assert_invariants(run)


def test_all_or_nothing_lets_every_branch_finish_then_fails_and_resume_reruns_only_the_failed_one(team):
    run = start(team)
    run_step(step_of(run, "planner"), {"topics": ["cost"]})
    step_fail(
        attempt=begin(step_of(run, "security_review", "security_review")),
        error={"type": "ProviderError", "message": "rate limited"},
    )
    run.refresh_from_db()
    assert run.status == "running"  # the other branch still runs
    run_step(step_of(run, "style_review", "style_review"), {"verdict": "tidy"})

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["errors"] == {
        "security_review": {"agent_name": "security_review", "exception_type": "ProviderError", "message": "rate limited"}
    }
    assert run.checkpoints.latest().next_agent == "reviews"

    run_resume(run=run, reason="retry")
    assert statuses(run, "reviews") == [("security_review", "pending"), ("style_review", "succeeded")]
    run_step(step_of(run, "security_review", "security_review"), {"verdict": "safe"})

    assert run.checkpoints.latest().outputs["reviews"]["outputs"] == {
        "security_review": {"verdict": "safe"},
        "style_review": {"verdict": "tidy"},
    }
    # The branch that succeeded ran once; the failed one is charged for its second attempt only.
    assert run.ledger_entries.filter(agent="style_review").count() == 1
    assert run.ledger_entries.filter(agent="security_review").count() == 1
    assert_invariants(run)


FAIL_FAST_YAML = FAN_OUT_YAML.replace("failure_mode: continue_on_error", "failure_mode: fail_fast")


def test_fail_fast_fails_the_run_at_once_blocks_unstarted_branches_and_charges_running_ones(team):
    run = start(team, FAIL_FAST_YAML)
    through_reviews(run)
    running = begin(step_of(run, "analyses", "1"))
    step_fail(attempt=begin(step_of(run, "analyses", "0")), error={"type": "ProviderError", "message": "boom"})

    run.refresh_from_db()
    assert (run.status, run.error["group"], run.error["branch"]) == ("failed", "analyses", "0")
    assert statuses(run, "analyses") == [("0", "failed"), ("1", "running")]  # the third never starts
    settle(running, {"finding": "fast"})  # finishes and is charged, but the run stays failed
    run.refresh_from_db()
    assert (run.status, run.spent_usd) == ("failed", 4 * TENTH)
    assert_invariants(run)

    run_resume(run=run, reason="retry")
    assert statuses(run, "analyses") == [("0", "pending"), ("1", "succeeded"), ("2", "pending")]
    run_step(step_of(run, "analyses", "0"), {"finding": "cheap"})
    run_step(step_of(run, "analyses", "2"), {"finding": "safe"})
    assert run.checkpoints.latest().outputs["analyses"]["outputs"] == [
        {"finding": "cheap"},
        {"finding": "fast"},
        {"finding": "safe"},
    ]
    assert_invariants(run)


def test_an_enforce_budget_stop_blocks_unstarted_branches_lets_running_ones_finish_and_resume_runs_only_the_rest(team):
    # planner, two reviews and one analysis fit in $0.45; the second analysis would make $0.50.
    run = start(team, budget_usd="0.45", budget_mode="enforce")
    through_reviews(run)
    running = begin(step_of(run, "analyses", "0"))
    assert step_begin(step_id=step_of(run, "analyses", "1").pk, worker="host:1") is None

    run.refresh_from_db()
    assert (run.status, run.error["type"], run.error["current_agent"]) == ("budget_exceeded", "BudgetExceededError", "analyses")
    assert statuses(run, "analyses") == [("0", "running"), ("1", "blocked")]  # the third is never created
    assert run.checkpoints.latest().next_agent == "analyses"
    # A blocked branch's late message finds nothing to do.
    assert step_begin(step_id=step_of(run, "analyses", "1").pk, worker="host:1") is None

    settle(running, {"finding": "cheap"})
    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.reserved_usd) == ("budget_exceeded", 4 * TENTH, 0)
    assert_invariants(run)

    run_resume(run=run, limits={"budget_usd": "1.00"}, reason="more budget")
    assert statuses(run, "analyses") == [("0", "succeeded"), ("1", "pending"), ("2", "pending")]
    run_step(step_of(run, "analyses", "1"), {"finding": "fast"})
    run_step(step_of(run, "analyses", "2"), {"finding": "safe"})
    run_step(step_of(run, "summary"), {"summary": "ok"})

    run.refresh_from_db()
    assert (run.status, run.spent_usd) == ("completed", 7 * TENTH)
    assert list(run.ledger_entries.filter(agent="analyses").values_list("step__branch_key", flat=True)) == ["0", "1", "2"]
    assert run.output["findings"] == [{"finding": "cheap"}, {"finding": "fast"}, {"finding": "safe"}]
    assert_invariants(run)


def test_the_iteration_limit_counts_branches_running_at_once(team):
    # A for_each group is not refused whole, as a parallel one is (tests/conductor/test_group_iterations.py):
    # its branches pass the gate one by one, each counting those in flight.
    run = start(team, max_iterations=4)
    run_step(step_of(run, "planner"), {"topics": ["cost", "latency"]})
    run_step(step_of(run, "security_review", "security_review"), {"verdict": "safe"})
    run_step(step_of(run, "style_review", "style_review"), {"verdict": "tidy"})
    begin(run.steps.get(group="analyses", branch_index=0))

    assert step_begin(step_id=run.steps.get(group="analyses", branch_index=1).pk, worker="host:1") is None
    run.refresh_from_db()
    assert (run.status, run.error["type"]) == ("iteration_limit", "MaxIterationsError")
    assert_invariants(run)


def test_cancelling_cancels_unstarted_branches_and_creates_no_more(team):
    run = start(team)
    through_reviews(run)

    run_cancel(run=run, reason="enough")

    assert statuses(run, "analyses") == [("0", "cancelled"), ("1", "cancelled")]
    assert_invariants(run)


EMPTY_SOURCE_YAML = FAN_OUT_YAML.replace("topics: [cost, latency, safety]", "topics: []")


def test_a_for_each_over_an_empty_list_ends_at_once_with_conductors_empty_result(team):
    run = start(team, EMPTY_SOURCE_YAML)
    run_step(step_of(run, "planner"), {"topics": []})
    run_step(step_of(run, "security_review", "security_review"), {"verdict": "safe"})
    run_step(step_of(run, "style_review", "style_review"), {"verdict": "tidy"})

    assert run.checkpoints.latest().outputs["analyses"] == {"outputs": [], "errors": {}, "count": 0}
    assert step_of(run, "summary").status == "pending"


def test_a_source_that_is_not_a_list_fails_the_run_saying_so(team):
    run = start(team)
    run_step(step_of(run, "planner"), {"topics": "cost"})
    run_step(step_of(run, "security_review", "security_review"), {"verdict": "safe"})
    run_step(step_of(run, "style_review", "style_review"), {"verdict": "tidy"})

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["type"] == "ForEachSourceError"
    assert "'planner.output.topics' is str, not a list" in run.error["message"]
    assert_invariants(run)


# Entered at the group, `planner` never runs: what read its output reads an input instead (upload
# refuses a name that cannot have run before it is rendered).
ENTRY_GROUP_YAML = (
    FAN_OUT_YAML.replace("entry_point: planner", "entry_point: reviews")
    .replace("{{ planner.output.topics | join(', ') }}", "{{ workflow.input.subject }}")
    .replace("source: planner.output.topics", "source: workflow.input.topics")
    .replace("      required: true\n", "      required: true\n    topics: {type: array, default: [cost]}\n")
)


def test_the_entry_point_may_be_a_group(team):
    run = start(team, ENTRY_GROUP_YAML)

    assert statuses(run, "reviews") == [("security_review", "pending"), ("style_review", "pending")]
    assert run.checkpoints.latest().next_agent == "reviews"


def test_the_sweeper_sends_lost_branches_again_but_creates_none(team):
    run = start(team)
    through_reviews(run)

    report = sweep_stuck_steps(now=timezone.now() + timedelta(hours=1))

    assert report.lost_resent == 2  # the two pending branches; the third is created when a slot frees
    assert statuses(run, "analyses") == [("0", "pending"), ("1", "pending")]
