"""An attempt whose outcome is unknown is charged its reservation as an estimate, and reconciled when
its usage is known: by the attempt itself when it comes back, or by an operator's adjustment.

The sources: an interruption before the provider reported usage, a provider call that timed out or
lost its connection after the request was sent, a crash (services/test_steps.py and test_sweeper.py),
and a worker cut off from the network (integration/test_partition.py).
"""

from decimal import Decimal

import pytest
from django.db import OperationalError

from tests.factories import THREE_STEP_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.errors import ValidationFailed
from workflows.models import EventType, LedgerEntry, Step
from workflows.providers import CompletionResult, ProviderError, Usage
from workflows.services.adjustments import check_adjustment, ledger_adjust
from workflows.services.runs import run_cancel, run_resume, run_start
from workflows.services.steps import step_begin, step_execute, step_settle
from workflows.services.steps import execute

pytestmark = pytest.mark.django_db

RESULT = CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=1000)
ESTIMATE = Decimal("0.300000")  # 1,000 output tokens at $300 per million: the step's worst case


@pytest.fixture
def run(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    return run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "5"})


def first_step(run) -> Step:
    return run.steps.get(sequence=1)


class FailingProvider:
    """Raises each error given, in turn, then answers."""

    name = "fake"
    needs_credentials = False

    def __init__(self, *errors: Exception):
        self.errors = list(errors)

    def complete(self, request, *, credentials=None):
        if self.errors:
            raise self.errors.pop(0)
        return CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=400)


def provider_fails(monkeypatch, *errors: Exception) -> None:
    provider = FailingProvider(*errors)
    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: provider)


def entries(run) -> list[tuple]:
    return list(run.ledger_entries.order_by("id").values_list("attempt", "basis", "cost_usd"))


def test_a_call_that_timed_out_after_it_was_sent_is_charged_its_estimate_and_the_retry_its_usage(run, monkeypatch):
    provider_fails(monkeypatch, ProviderError("OpenAI could not be reached: timed out", retryable=True, outcome_unknown=True))
    step = first_step(run)

    step_execute(step_id=step.pk)
    run.refresh_from_db()
    assert (run.spent_usd, run.reserved_usd, first_step(run).status) == (ESTIMATE, Decimal("0"), "pending")
    retry = run.events.get(type=EventType.PROVIDER_RETRY).payload
    assert retry["cost_usd"] == "0.300000"

    step_execute(step_id=step.pk)
    assert entries(run) == [(1, "estimated", ESTIMATE), (2, "reported", Decimal("0.120000"))]

    # No usage ever comes for a call that timed out: the provider's console says it was not billed.
    estimate = run.ledger_entries.get(basis="estimated")
    ledger_adjust(
        entry=estimate, adjustment=check_adjustment(amount_usd="-0.3", reason="Not billed (console)"), actor="ops"
    )
    run.refresh_from_db()
    assert run.spent_usd == Decimal("0.120000")
    assert_invariants(run)


def test_a_call_refused_before_it_was_sent_costs_nothing(run, monkeypatch):
    provider_fails(monkeypatch, ProviderError("OpenAI could not be reached: connection refused", retryable=True))
    step_execute(step_id=first_step(run).pk)
    step_execute(step_id=first_step(run).pk)

    assert entries(run) == [(2, "reported", Decimal("0.120000"))]
    assert_invariants(run)


def test_an_interrupted_attempt_is_charged_its_estimate_and_an_operator_reconciles_it(run, monkeypatch, admin_user):
    provider_fails(monkeypatch, RuntimeError("SoftTimeLimitExceeded"))
    step_execute(step_id=first_step(run).pk)
    run.refresh_from_db()
    assert (run.status, run.error["type"], run.spent_usd) == ("failed", "StepInterruptedError", ESTIMATE)
    estimate = run.ledger_entries.get()
    assert (estimate.basis, estimate.input_tokens, estimate.reason) == (
        "estimated",
        0,
        "The step's work stopped: RuntimeError.",
    )

    # The provider's console shows the interrupted call billed $0.02: the operator corrects the estimate.
    adjustment = ledger_adjust(
        entry=estimate,
        adjustment=check_adjustment(amount_usd="-0.28", reason="Provider console: request billed $0.02"),
        actor="ops@example.com",
    )
    run.refresh_from_db()
    assert run.spent_usd == Decimal("0.020000")
    assert (adjustment.basis, adjustment.corrects_id, adjustment.actor) == ("adjustment", estimate.pk, "ops@example.com")
    event = run.events.get(type=EventType.LEDGER_ADJUSTED)
    assert (event.actor, event.payload["amount_usd"], event.payload["entry_stands_at_usd"]) == (
        "ops@example.com",
        "-0.280000",
        "0.020000",
    )
    run_resume(run=run, reason="provider is back")
    assert_invariants(run)


def test_an_adjustment_may_not_take_an_entry_below_zero_and_leaves_nothing_when_refused(run, monkeypatch):
    provider_fails(monkeypatch, RuntimeError("stopped"))
    step_execute(step_id=first_step(run).pk)
    estimate = run.ledger_entries.get()

    with pytest.raises(ValidationFailed) as refused:
        ledger_adjust(entry=estimate, adjustment=check_adjustment(amount_usd="-0.300001", reason="refund"), actor="ops")
    assert refused.value.details == [{"path": "amount_usd", "message": "must be at least -0.300000"}]
    assert run.ledger_entries.count() == 1 and not run.events.filter(type=EventType.LEDGER_ADJUSTED).exists()
    # The whole of it may be refunded.
    ledger_adjust(entry=estimate, adjustment=check_adjustment(amount_usd="-0.3", reason="refund"), actor="ops")
    run.refresh_from_db()
    assert run.spent_usd == 0
    assert_invariants(run)


@pytest.mark.parametrize(
    "amount,reason,problems",
    [
        ("0", "why", [{"path": "amount_usd", "message": "must not be 0"}]),
        ("0.0000001", "why", [{"path": "amount_usd", "message": "has more than 6 decimal places: '0.0000001'"}]),
        ("NaN", "why", [{"path": "amount_usd", "message": "must be a finite number, not 'NaN'"}]),
        ("-1000000001", "why", [{"path": "amount_usd", "message": "must be at most 1000000000 either way"}]),
        (True, "  ", [
            {"path": "amount_usd", "message": "must be a number, not a boolean"},
            {"path": "reason", "message": "say why the entry is adjusted"},
        ]),
        ("1", "x" * 501, [{"path": "reason", "message": "at most 500 characters"}]),
    ],
)
def test_an_adjustment_is_checked_before_anything_is_saved(amount, reason, problems):
    with pytest.raises(ValidationFailed) as refused:
        check_adjustment(amount_usd=amount, reason=reason)
    assert refused.value.details == problems


def test_a_correction_is_not_adjusted_itself(run):
    superseded = step_begin(step_id=first_step(run).pk, worker="host:1")
    step_begin(step_id=first_step(run).pk, worker="host:2")
    step_settle(attempt=superseded, result=RESULT)
    correction = run.ledger_entries.get(basis="correction")

    with pytest.raises(ValidationFailed, match="adjust that one"):
        ledger_adjust(entry=correction, adjustment=check_adjustment(amount_usd="1", reason="why"), actor="ops")


def test_a_late_provider_error_with_usage_corrects_the_estimate_of_its_attempt(run):
    superseded = step_begin(step_id=first_step(run).pk, worker="host:1")
    step_begin(step_id=first_step(run).pk, worker="host:2")  # its worker was thought dead
    late = ProviderError("The model's answer is not JSON", usage=Usage(input_tokens=3, output_tokens=100))

    execute.step_provider_failed(attempt=superseded, error=late)

    run.refresh_from_db()
    assert entries(run) == [(1, "estimated", ESTIMATE), (1, "correction", Decimal("-0.270000"))]
    assert first_step(run).status == "running"  # the takeover's attempt owns the step
    assert_invariants(run)


def test_an_attempt_set_aside_in_a_stopped_run_that_was_alive_after_all_corrects_its_estimate(run):
    """The sweeper judged the attempt dead after the run was cancelled; its worker was only slow."""
    alive = step_begin(step_id=first_step(run).pk, worker="host:1")
    run_cancel(run=run)
    assert step_begin(step_id=first_step(run).pk, worker="host:2") is None  # the sweeper's delivery
    run.refresh_from_db()
    assert (run.spent_usd, first_step(run).status) == (ESTIMATE, "cancelled")

    step_settle(attempt=alive, result=CompletionResult(output={"findings": "late"}, input_tokens=3, output_tokens=100))

    run.refresh_from_db()
    assert entries(run) == [(1, "estimated", ESTIMATE), (1, "correction", Decimal("-0.270000"))]
    assert (run.status, run.spent_usd, first_step(run).status) == ("cancelled", Decimal("0.030000"), "cancelled")
    assert_invariants(run)


def test_a_settlement_the_database_refused_is_tried_again_until_it_lands(run, monkeypatch):
    """A worker cut off from the database, then back: its result is settled, not lost."""
    tries = []
    settle = execute._settle_under_locks

    def unreachable_twice(**kwargs):
        tries.append(1)
        if len(tries) <= 2:
            raise OperationalError("could not receive data from server: Connection timed out")
        settle(**kwargs)

    monkeypatch.setattr(execute, "_settle_under_locks", unreachable_twice)
    monkeypatch.setattr(execute, "SETTLE_RETRY_FIRST_SECONDS", 0.01)
    step_execute(step_id=first_step(run).pk)

    run.refresh_from_db()
    assert len(tries) == 3
    assert (first_step(run).status, entries(run)) == ("succeeded", [(1, "reported", ESTIMATE)])
    assert_invariants(run)


def test_past_the_time_limit_a_settlement_gives_up_and_the_next_delivery_charges_the_estimate(run, monkeypatch, settings):
    settings.STEP_SOFT_TIME_LIMIT_SECONDS = execute.SETTLE_RETRY_MARGIN_SECONDS + 1

    def unreachable(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(execute, "_settle_under_locks", unreachable)
    monkeypatch.setattr(execute, "SETTLE_RETRY_FIRST_SECONDS", 0.2)
    with pytest.raises(OperationalError):
        step_execute(step_id=first_step(run).pk)
    assert first_step(run).status == "running"

    monkeypatch.undo()
    step_begin(step_id=first_step(run).pk, worker="host:2")  # the task's retry takes the step over
    assert entries(run) == [(1, "estimated", ESTIMATE)]
    assert_invariants(run)


def test_an_attempt_that_reserved_nothing_leaves_no_estimate(team, monkeypatch):
    version = workflow_version(team=team, source=THREE_STEP_YAML.replace("output_per_mtok: 300", "output_per_mtok: 0"))
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={})
    provider_fails(monkeypatch, RuntimeError("stopped"))
    step_execute(step_id=first_step(run).pk)

    run.refresh_from_db()
    assert (run.status, LedgerEntry.objects.filter(run=run).count()) == ("failed", 0)
    assert_invariants(run)
