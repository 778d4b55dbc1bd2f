"""A validator on the agent of a group, driven step by step through the services (no broker) so that
the order in which branches' chains end is the test's; and on PostgreSQL, two chains ending at once
and a worker killed during a branch's validator call."""

import pytest

from tests.factories import workflow_version
from tests.integration.test_worker_crash import worker_process  # noqa: F401 - a worker process to kill
from tests.invariants import assert_invariants
from workflows.models import Run, Step
from workflows.providers import CompletionResult, ProviderError
from workflows.services.runs import run_cancel, run_resume, run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.steps.execute import step_provider_failed

pytestmark = pytest.mark.django_db

GRADED = """
workflow:
  name: graded
  entry_point: items
  input: {things: {type: array}}
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 100}}}
for_each:
  - name: items
    source: workflow.input.things
    as: thing
    max_concurrent: SLOTS
    failure_mode: MODE
    agent:
      name: worker
      prompt: "Do {{ thing }}"
      output: {text: {type: string}}
      validator:
        criteria: Good.
    routes:
      - to: finisher
agents:
  - name: finisher
    prompt: "Finish {{ items.outputs | length }} items."
    routes: [{to: $end}]
output:
  results: "{{ items.outputs }}"
  errors: "{{ items.errors }}"
"""

PASS, FAIL = {"passed": True, "issues": []}, {"passed": False, "issues": ["again"]}


def graded(slots: int = 2, mode: str = "continue_on_error") -> str:
    return GRADED.replace("SLOTS", str(slots)).replace("MODE", mode)


def start(team, source: str, things, **limits) -> Run:
    version = workflow_version(team=team, source=source)
    return run_start(team=team, workflow=version.workflow_id, inputs={"things": things}, limits=limits or None)


def begin(step: Step):
    attempt = step_begin(step_id=step.pk, worker="host:1")
    assert attempt is not None, f"{step} was not admitted"
    return attempt


def settle(attempt, output) -> None:
    step_settle(attempt=attempt, result=CompletionResult(output=output, input_tokens=0, output_tokens=100))


def run_step(step: Step, output) -> None:
    settle(begin(step), output)


def open_step(run: Run, key: str, role: str = "") -> Step:
    return run.steps.get(branch_key=key, role=role, status__in=["pending", "running", "waiting"])


def chain(run: Run, key: str) -> list[tuple[str, str]]:
    return list(run.steps.filter(branch_key=key).order_by("sequence").values_list("role", "status"))


def text(n) -> dict:
    return {"text": f"t{n}"}


def test_one_slot_is_held_by_a_branch_until_its_chain_ends_and_the_result_holds_final_outputs(team):
    run = start(team, graded(slots=1), ["a", "b", "c"])

    run_step(open_step(run, "0"), text(0))
    assert chain(run, "0") == [("", "succeeded"), ("validator", "pending")]
    assert not run.steps.filter(branch_key="1").exists()  # the slot is branch 0's until its chain ends
    run_step(open_step(run, "0", "validator"), FAIL)
    assert not run.steps.filter(branch_key="1").exists()
    run_step(open_step(run, "0", "rerun"), text("0 again"))
    run_step(open_step(run, "1"), text(1))
    run_step(open_step(run, "1", "validator"), PASS)
    run_step(open_step(run, "2"), text(2))
    run_step(open_step(run, "2", "validator"), FAIL)
    attempt = begin(open_step(run, "2", "rerun"))
    step_provider_failed(attempt=attempt, error=ProviderError("down", status_code=400))
    run_step(run.steps.get(agent="finisher"), {"done": True})

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["results"] == [text("0 again"), text(1), text(2)]
    assert list(run.steps.order_by("sequence").values_list("branch_key", "role")) == [
        ("0", ""), ("0", "validator"), ("0", "rerun"), ("1", ""), ("1", "validator"),
        ("2", ""), ("2", "validator"), ("2", "rerun"), ("", ""),
    ]
    assert run.iterations == 4
    assert_invariants(run)


def drive(run: Run, limit: int = 20) -> None:
    """Run each open step of the run, as a worker would, until none is left: validators pass."""
    for _ in range(limit):
        step = run.steps.filter(status="pending").order_by("sequence").first()
        if step is None:
            return
        output = PASS if step.role == "validator" else ({"done": True} if step.agent == "finisher" else text(step.branch_key))
        run_step(step, output)


def test_a_resume_onto_a_version_without_the_validator_while_another_branch_is_mid_chain(team):
    from workflows.errors import ValidationFailed

    run = start(team, graded(), ["a", "b"], budget_usd="0.15", budget_mode="enforce")
    first = begin(open_step(run, "0"))
    assert step_begin(step_id=open_step(run, "1").pk, worker="host:2") is None  # $0.10 held + $0.10 > $0.15
    run.refresh_from_db()
    assert run.status == "budget_exceeded"
    settle(first, text(0))  # in the stopped run: its validator's step waits, blocked
    assert chain(run, "0") == [("", "succeeded"), ("validator", "blocked")]
    assert run.checkpoints.latest().next_step.branch_key == "1"  # the stop's, at branch 1's own step

    lacking = workflow_version(team=team, source=graded().replace("      validator:\n        criteria: Good.\n", ""))
    with pytest.raises(ValidationFailed) as refused:
        run_resume(run=run, limits={"budget_usd": "5"}, workflow_version=lacking.version)

    assert "with a validator (the run goes on from its validator's call)" in str(refused.value)
    run.refresh_from_db()
    assert (run.status, run.workflow_version.version) == ("budget_exceeded", 1)
    assert_invariants(run)


@pytest.fixture
def transactions(monkeypatch) -> list[str]:
    """The names of the settling transactions run, each try of one counted (a StaleRender retries)."""
    from workflows.services.steps import execute

    ran = []
    for name in ("_settle_under_locks", "_provider_failed_under_locks", "_fail_under_locks"):
        locked = getattr(execute, name)

        def counted(*, _name=name, _locked=locked, **kwargs):
            ran.append(_name)
            return _locked(**kwargs)

        monkeypatch.setattr(execute, name, counted)
    return ran


@pytest.fixture
def under_locks(monkeypatch) -> list[tuple]:
    """The renders a transaction asked for that were not rendered ahead with the context it has:
    each of them rendered under the locks (or retried the transaction)."""
    from dataclasses import dataclass, field

    from workflows.services import renders

    missed: list[tuple] = []

    @dataclass
    class Tracked(renders._Kept):
        outcomes: dict = field(default_factory=dict)

        def __post_init__(self):
            kept = self

            class Outcomes(dict):
                def get(self, key, default=None):
                    found = super().get(key, default)
                    if not kept.recording and found is None:
                        missed.append(key)
                    return found

            self.outcomes = Outcomes()

    monkeypatch.setattr(renders, "_Kept", Tracked)
    return missed


@pytest.mark.parametrize("ending", ["passed", "rerun", "rerun_failed", "validator_failed"])
def test_the_last_branch_s_chain_ending_its_group_is_settled_from_what_was_rendered_ahead(
    team, transactions, under_locks, ending
):
    # The group's route reads what the settlement changes: the run's spend and executed steps.
    source = graded().replace(
        "      - to: finisher\n", "      - to: finisher\n        when: \"{{ budget.spent_usd < 100 and context.iteration < 100 }}\"\n"
    )
    run = start(team, source, ["a", "b"], budget_usd="5")
    run_step(open_step(run, "0"), text(0))
    run_step(open_step(run, "0", "validator"), PASS)
    run_step(open_step(run, "1"), text(1))
    transactions.clear()
    validator = begin(open_step(run, "1", "validator"))
    under_locks.clear()
    if ending == "validator_failed":
        step_provider_failed(attempt=validator, error=ProviderError("down", status_code=400))
    elif ending == "passed":
        settle(validator, PASS)
    else:
        settle(validator, FAIL)
        rerun = begin(open_step(run, "1", "rerun"))
        transactions.clear()
        under_locks.clear()
        if ending == "rerun":
            settle(rerun, text("1 again"))
        else:
            step_provider_failed(attempt=rerun, error=ProviderError("down", status_code=400))

    assert len(transactions) == 1, f"the settling transaction ran {transactions} (StaleRender)"
    assert under_locks == [], "rendered under the locks"
    run.refresh_from_db()
    assert run.steps.filter(agent="finisher", status="pending").exists()
    assert run.checkpoints.latest().outputs["items"]["outputs"] == [text(0), text("1 again" if ending == "rerun" else 1)]
    assert_invariants(run)


def test_a_validator_whose_worker_died_after_the_run_stopped_is_graded_on_resume(team):
    from datetime import timedelta

    from django.utils import timezone

    from workflows.models import EventType
    from workflows.services.sweeper import sweep_stuck_steps

    run = start(team, graded(), ["a", "b"], budget_usd="0.15", budget_mode="enforce")
    run_step(open_step(run, "0"), text(0))  # $0.01 spent
    crashed = begin(open_step(run, "0", "validator"))  # $0.10 held; its worker then dies mid-call
    assert step_begin(step_id=open_step(run, "1").pk, worker="host:2") is None  # $0.01 + $0.10 + $0.10 > $0.15
    run.refresh_from_db()
    assert run.status == "budget_exceeded"

    report = sweep_stuck_steps(now=timezone.now() + timedelta(hours=1))
    assert report.crashed_resent == 1
    # Its delivery charges the dead attempt its $0.10 as an estimate and sets the step aside.
    assert step_begin(step_id=crashed.step_id, worker="host:3") is None
    run_resume(run=run, limits={"budget_usd": "5"})
    drive(run)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    graded_branches = {
        event.payload["branch"]
        for event in run.events.filter(type__in=[EventType.AGENT_VALIDATION_PASSED, EventType.AGENT_VALIDATION_FAILED])
    }
    assert graded_branches == {"0", "1"}, f"chain of branch 0: {chain(run, '0')}"
    assert_invariants(run)


def test_a_branch_whose_worker_died_after_the_run_stopped_runs_on_resume(team):
    """The same for a branch's own step : its item must not drop out of the result."""
    from datetime import timedelta

    from django.utils import timezone

    from workflows.services.sweeper import sweep_stuck_steps

    run = start(team, graded(), ["a", "b"], budget_usd="0.15", budget_mode="enforce")
    crashed = begin(open_step(run, "0"))  # $0.10 held; its worker then dies mid-call
    assert step_begin(step_id=open_step(run, "1").pk, worker="host:2") is None
    sweep_stuck_steps(now=timezone.now() + timedelta(hours=1))
    assert step_begin(step_id=crashed.step_id, worker="host:3") is None  # the sweeper's delivery
    run_resume(run=run, limits={"budget_usd": "5"})
    drive(run)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["results"] == [text("0"), text("1")], f"chain of branch 0: {chain(run, '0')}"
    assert_invariants(run)


@pytest.mark.django_db(transaction=True)
def test_two_branches_chains_ending_at_once_end_their_group_exactly_once(team, monkeypatch):
    import threading

    from django.db import connection

    from workflows.models import EventType
    from workflows.services.steps import execute

    if connection.vendor != "postgresql":
        pytest.skip("row locks that threads hold exist on PostgreSQL only")
    run = start(team, graded(), ["a", "b"])
    run_step(open_step(run, "0"), text(0))
    run_step(open_step(run, "1"), text(1))
    first, second = begin(open_step(run, "0", "validator")), begin(open_step(run, "1", "validator"))

    # Each renders ahead before either transaction commits: each sees the other's chain open.
    both_rendered = threading.Barrier(2, timeout=10)
    prerender = execute.prerender_ending

    def rendered_then_wait(**kwargs):
        try:
            prerender(**kwargs)
        finally:
            both_rendered.wait()

    monkeypatch.setattr(execute, "prerender_ending", rendered_then_wait)
    errors = []

    def settle_in_thread(attempt):
        try:
            settle(attempt, PASS)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=settle_in_thread, args=(attempt,)) for attempt in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    run.refresh_from_db()
    assert run.events.filter(type=EventType.GROUP_COMPLETED).count() == 1
    assert run.steps.filter(agent="finisher").count() == 1
    assert run.checkpoints.latest().outputs["items"]["outputs"] == [text(0), text(1)]
    assert_invariants(run)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_during_a_branch_s_validator_call_is_redelivered_and_its_killed_call_estimated(
    team, worker_process
):
    from pathlib import Path

    import yaml

    from tests.conftest import wait_for_run
    from tests.steps import kill_worker_during
    from workflows.models import LedgerEntry
    from workflows.services.workflows import workflow_create

    data = yaml.safe_load((Path(__file__).parent / "listing_translations.yaml").read_text())
    data["for_each"][0]["agent"]["validator"]["mock"]["latency_ms"] = 4000
    data["agents"][0]["validator"]["mock"]["output"] = {"passed": True, "issues": []}
    version = workflow_create(team=team, definition=data)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"phrases": ["a", "b", "c"]})

    killed = kill_worker_during(run, role="validator")

    run = wait_for_run(run.pk, "completed", "failed", "budget_exceeded", "iteration_limit", "cancelled", timeout=90)
    assert run.status == "completed", run.error
    killed.refresh_from_db()
    assert (killed.status, killed.attempts, killed.redeliveries) == ("succeeded", 2, 1)
    assert run.output["lines"] == [{"text": "Une traduction"}] * 3
    # One entry per step, and the killed attempt's estimate.
    assert LedgerEntry.objects.filter(run=run).count() == run.steps.count() + 1 == 11
    assert list(LedgerEntry.objects.filter(step=killed).values_list("attempt", "basis")) == [
        (1, "estimated"),
        (2, "reported"),
    ]
    assert_invariants(run)


def fail(step: Step, retryable: bool = False) -> None:
    step_provider_failed(attempt=begin(step), error=ProviderError("down", status_code=500 if retryable else 400))


def test_continue_on_error_with_chains_in_flight_holds_each_branch_s_final_output_in_item_order(team):
    run = start(team, graded(slots=2), ["a", "b", "c"])

    run_step(open_step(run, "1"), text(1))
    fail(open_step(run, "0"))  # frees its slot: branch 2 is created, beside branch 1's validator
    assert chain(run, "2") == [("", "pending")]
    run_step(open_step(run, "1", "validator"), FAIL)
    run_step(open_step(run, "2"), text(2))
    run_step(open_step(run, "2", "validator"), PASS)
    assert not run.steps.filter(agent="finisher").exists()  # branch 1's re-run is still open
    run_step(open_step(run, "1", "rerun"), text("1 again"))
    run_step(run.steps.get(agent="finisher"), {"done": True})

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["results"] == [text("1 again"), text(2)]
    assert list(run.output["errors"]) == ["0"]
    assert run.iterations == 3  # a failed call counts as nothing
    assert_invariants(run)


def test_fail_fast_with_chains_in_flight_then_a_resume_runs_what_was_left_and_no_call_twice(team):
    run = start(team, graded(slots=3, mode="fail_fast"), ["a", "b", "c"])

    run_step(open_step(run, "0"), text(0))
    grading = begin(open_step(run, "0", "validator"))
    run_step(open_step(run, "2"), text(2))  # its validator's step is pending when the run fails
    fail(open_step(run, "1"))
    run.refresh_from_db()
    assert (run.status, run.error["branch"]) == ("failed", "1")
    assert chain(run, "2") == [("", "succeeded"), ("validator", "blocked")]
    settle(grading, FAIL)  # in the failed run: the re-run it asks for waits, blocked
    assert chain(run, "0") == [("", "succeeded"), ("validator", "succeeded"), ("rerun", "blocked")]
    assert_invariants(run)

    run_resume(run=run)
    drive(run)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert run.output["results"] == [text(0), text(1), text(2)]  # drive's re-run answers as the first run
    assert set(run.steps.exclude(branch_key="1", role="").values_list("attempts", flat=True)) == {1}
    assert run.steps.get(branch_key="1", role="").attempts == 2
    assert chain(run, "0") == [("", "succeeded"), ("validator", "succeeded"), ("rerun", "succeeded")]
    assert_invariants(run)


def test_cancelling_with_a_branch_s_validator_running_and_another_pending_charges_the_running_one_only(team):
    run = start(team, graded(slots=2), ["a", "b", "c"])
    run_step(open_step(run, "0"), text(0))
    run_step(open_step(run, "1"), text(1))
    grading = begin(open_step(run, "0", "validator"))

    run_cancel(run=run)
    settle(grading, FAIL)  # no re-run follows in a cancelled run

    run.refresh_from_db()
    assert run.status == "cancelled"
    assert chain(run, "0") == [("", "succeeded"), ("validator", "succeeded")]
    assert chain(run, "1") == [("", "succeeded"), ("validator", "cancelled")]
    assert not run.steps.filter(branch_key="2").exists()
    assert run.ledger_entries.count() == 3
    assert_invariants(run)


def test_the_iteration_limit_stops_a_branch_s_own_step_never_its_validator_and_a_resume_goes_on(team):
    run = start(team, graded(slots=2), ["a", "b", "c"], max_iterations=2)
    run_step(open_step(run, "0"), text(0))
    run_step(open_step(run, "1"), text(1))
    run_step(open_step(run, "1", "validator"), PASS)  # two steps executed: validators do not count
    assert step_begin(step_id=open_step(run, "2").pk, worker="host:1") is None
    run.refresh_from_db()
    assert run.status == "iteration_limit"
    assert chain(run, "0") == [("", "succeeded"), ("validator", "blocked")]

    run_resume(run=run, limits={"max_iterations": 4})
    drive(run)

    run.refresh_from_db()
    assert run.status == "completed", run.error
    assert (run.iterations, run.output["results"]) == (4, [text(0), text(1), text(2)])
    assert_invariants(run)
