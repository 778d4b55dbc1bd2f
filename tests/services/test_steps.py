"""Step execution through the services, without a broker: redelivery, settlement and their bounds."""

from decimal import Decimal

import pytest

from tests.factories import THREE_STEP_YAML, UNDER_ESTIMATE_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import EventType, Step
from workflows.providers import CompletionResult, ProviderError
from workflows.services.runs import run_cancel, run_resume, run_start
from workflows.services.steps import step_begin, step_execute, step_fail, step_settle

pytestmark = pytest.mark.django_db

RESULT = CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=1000)


@pytest.fixture
def run(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    return run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "5"})


def first_step(run) -> Step:
    return run.steps.get(sequence=1)


def test_admitting_a_step_reserves_its_estimate(run):
    attempt = step_begin(step_id=first_step(run).pk, worker="host:1")

    run.refresh_from_db()
    assert attempt.number == 1
    assert attempt.prepared.estimate_usd == Decimal("0.300000")
    assert (run.status, run.reserved_usd) == ("running", Decimal("0.300000"))
    assert_invariants(run)


def test_settling_charges_once_releases_the_reservation_and_queues_the_next_step(run):
    attempt = step_begin(step_id=first_step(run).pk, worker="host:1")
    step_settle(attempt=attempt, result=RESULT)
    step_settle(attempt=attempt, result=RESULT)  # a duplicate settlement changes nothing

    run.refresh_from_db()
    assert (run.spent_usd, run.reserved_usd, run.iterations) == (Decimal("0.300000"), Decimal("0"), 1)
    assert run.ledger_entries.count() == 1
    assert list(run.steps.values_list("agent", "status")) == [("researcher", "succeeded"), ("writer", "pending")]
    assert run.checkpoints.latest().outputs == {"researcher": {"findings": "facts"}}
    assert_invariants(run)


def test_a_redelivered_step_charges_the_crashed_attempt_its_reservation_and_runs_again_through_the_gate(run):
    step = first_step(run)
    step_begin(step_id=step.pk, worker="host:1")  # its worker dies before settling
    retry = step_begin(step_id=step.pk, worker="host:2")

    assert retry.number == 2
    run.refresh_from_db()
    # The crashed attempt may have been billed: it is charged what it reserved, and the retry
    # reserves its own.
    assert (run.spent_usd, run.reserved_usd) == (Decimal("0.300000"), Decimal("0.300000"))
    step_settle(attempt=retry, result=RESULT)
    run.refresh_from_db()
    assert list(run.ledger_entries.values_list("attempt", "basis", "cost_usd", "input_tokens")) == [
        (1, "estimated", Decimal("0.300000"), 0),
        (2, "reported", Decimal("0.300000"), 3),
    ]
    assert run.events.filter(type=EventType.STEP_REDELIVERED).count() == 1
    estimated = run.events.get(type=EventType.USAGE_ESTIMATED).payload
    assert (estimated["attempt"], estimated["cost_usd"]) == (1, "0.300000")
    assert_invariants(run)


def test_a_crashed_attempt_whose_estimate_the_budget_cannot_hold_twice_stops_an_enforced_run(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(
        team=team,
        workflow=version.workflow_id,
        inputs={"topic": "x"},
        limits={"budget_usd": "0.5", "budget_mode": "enforce"},
    )
    step = first_step(run)
    step_begin(step_id=step.pk, worker="host:1")  # its worker dies before settling

    # $0.30 charged for the lost attempt, and another $0.30 would pass the $0.50.
    assert step_begin(step_id=step.pk, worker="host:2") is None
    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.reserved_usd) == ("budget_exceeded", Decimal("0.300000"), Decimal("0"))
    assert run.checkpoints.latest().next_step_id == step.pk
    assert_invariants(run)


def test_a_superseded_attempt_that_finishes_anyway_corrects_its_estimate_but_does_not_advance(run):
    step = first_step(run)
    superseded = step_begin(step_id=step.pk, worker="host:1")
    owner = step_begin(step_id=step.pk, worker="host:2")
    cheaper = CompletionResult(output={"findings": "late"}, input_tokens=3, output_tokens=500, request_id="req-late")

    step_settle(attempt=superseded, result=cheaper)
    step_settle(attempt=superseded, result=cheaper)  # a duplicate corrects nothing more
    run.refresh_from_db()
    estimate, correction = run.ledger_entries.filter(attempt=1).order_by("id")
    assert (estimate.basis, correction.basis, correction.corrects_id) == ("estimated", "correction", estimate.pk)
    # The correction brings the attempt to what it really cost, $0.15, with its tokens.
    assert (correction.cost_usd, correction.output_tokens, correction.request_id) == (
        Decimal("-0.150000"),
        500,
        "req-late",
    )
    assert (run.spent_usd, run.reserved_usd, run.iterations) == (Decimal("0.150000"), Decimal("0.300000"), 0)
    assert first_step(run).status == "running"
    assert run.events.get(type=EventType.USAGE_CORRECTED).payload["correction_usd"] == "-0.150000"

    step_settle(attempt=owner, result=RESULT)
    run.refresh_from_db()
    assert (run.spent_usd, run.reserved_usd, run.iterations) == (Decimal("0.450000"), Decimal("0"), 1)
    assert first_step(run).output == {"findings": "facts"}
    assert run.steps.count() == 2
    assert_invariants(run)


def test_a_step_that_keeps_crashing_is_parked_and_the_run_can_be_resumed(run, settings):
    settings.STEP_MAX_REDELIVERIES = 2
    step = first_step(run)
    for worker in range(3):
        assert step_begin(step_id=step.pk, worker=f"host:{worker}") is not None
    assert step_begin(step_id=step.pk, worker="host:last") is None

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["type"] == "StepCrashedError"
    assert run.reserved_usd == 0
    assert_invariants(run)

    run_resume(run=run, reason="fixed the worker")
    assert step_begin(step_id=step.pk, worker="host:fixed") is not None
    attempt = step_begin(step_id=step.pk, worker="host:fixed-again")  # the bound starts afresh
    assert attempt.number == 5
    step_settle(attempt=attempt, result=RESULT)
    assert_invariants(run)


def test_a_step_of_a_cancelled_run_never_starts(run):
    run_cancel(run=run)
    assert step_begin(step_id=first_step(run).pk, worker="host:1") is None
    assert first_step(run).status == "cancelled"


def test_a_crashed_attempt_of_a_cancelled_run_releases_its_reservation_when_redelivered(run):
    step_begin(step_id=first_step(run).pk, worker="host:1")  # then the worker dies
    run_cancel(run=run)
    assert step_begin(step_id=first_step(run).pk, worker="host:2") is None

    run.refresh_from_db()
    assert (run.status, run.reserved_usd, first_step(run).status) == ("cancelled", Decimal("0"), "cancelled")
    assert_invariants(run)


def test_a_provider_failure_after_cancel_leaves_the_run_cancelled(run):
    attempt = step_begin(step_id=first_step(run).pk, worker="host:1")
    run_cancel(run=run)
    step_fail(attempt=attempt, error={"type": "ProviderError", "message": "late failure"})

    run.refresh_from_db()
    assert (run.status, run.reserved_usd) == ("cancelled", Decimal("0"))
    assert_invariants(run)


class BrokenProvider:
    name = "fake"
    needs_credentials = False

    def __init__(self, error: Exception):
        self.error = error

    def complete(self, request, *, credentials=None):
        raise self.error


@pytest.mark.parametrize(
    "error,error_type,charged",
    [
        # The provider answered: it said no, and bills nothing.
        (ProviderError("upstream said no"), "ProviderError", []),
        # Interrupted with the call perhaps made (a soft time limit, a bug): charged as estimated.
        (RuntimeError("bug"), "StepInterruptedError", [("estimated", Decimal("0.300000"))]),
    ],
)
def test_a_provider_failure_fails_the_run_resumably_charging_only_a_call_that_may_have_been_billed(
    run, monkeypatch, error, error_type, charged
):
    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: BrokenProvider(error))
    step_execute(step_id=first_step(run).pk)

    run.refresh_from_db()
    assert (run.status, run.error["type"], run.reserved_usd) == ("failed", error_type, Decimal("0"))
    assert list(run.ledger_entries.values_list("basis", "cost_usd")) == charged
    assert_invariants(run)
    run_resume(run=run, reason="provider is back")
    assert first_step(run).status == "pending"


def test_steps_are_charged_what_the_provider_reported_not_what_the_gate_reserved(team):
    """Through the fake provider: each step reserves $0.10 and reports less; the run pays what was reported."""
    version = workflow_version(team=team, source=UNDER_ESTIMATE_YAML)
    run = run_start(team=team, workflow=version.workflow_id, limits={"budget_usd": "0.19", "budget_mode": "enforce"})
    step_execute(step_id=first_step(run).pk)
    # Spent 0.04: the second step projects 0.14; had the first been charged its 0.10, 0.20 would stop it.
    step_execute(step_id=run.steps.get(sequence=2).pk)

    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.reserved_usd) == ("completed", Decimal("0.110000"), Decimal("0"))
    entries = run.ledger_entries.order_by("step__sequence")
    assert [(entry.output_tokens, entry.cost_usd) for entry in entries] == [
        (40, Decimal("0.040000")),
        (70, Decimal("0.070000")),
    ]
    assert [step.estimate_usd for step in run.steps.order_by("sequence")] == [Decimal("0.100000")] * 2
    assert_invariants(run)
