"""The sweeper through the services, without a broker: what it sends again, what it leaves alone,
and what it releases. A step sent again shows as an on-commit callback and a fresh `enqueued_at`."""

import threading
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections

from tests.factories import THREE_STEP_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import Step
from workflows.providers import CompletionResult
from workflows.services.locks import attempt_lease, step_attempt_lock
from workflows.services.runs import run_cancel, run_start
from workflows.services.steps import step_begin, step_settle
from workflows.services.sweeper import RUNNING_GRACE, SweepReport, sweep_stuck_steps

pytestmark = pytest.mark.django_db

RESULT = CompletionResult(output={"findings": "facts"}, input_tokens=3, output_tokens=1000)
NOTHING = SweepReport(crashed_resent=0, lost_resent=0)
on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="advisory attempt locks exist on PostgreSQL only"
)


@pytest.fixture
def run(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    return run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "5"})


def first_step(run) -> Step:
    return run.steps.get(sequence=1)


def after_lease(step: Step):
    """A moment at which the step's attempt is dead on every database, unless its lock is held."""
    return step.started_at + attempt_lease() + timedelta(seconds=1)


def sweep(capture, *, now) -> tuple[SweepReport, list[int]]:
    """Sweep at `now`; returns the report and the ids of the steps whose task it sent."""
    with capture() as callbacks:
        report = sweep_stuck_steps(now=now)
    # Each callback is `send_task(name, args)`: the step's id is the task's one argument.
    return report, [callback.args[1][0] for callback in callbacks]


@pytest.fixture
def crashed(run) -> Step:
    """The first step, admitted, whose worker then died without settling."""
    step_begin(step_id=first_step(run).pk, worker="host:1")
    return first_step(run)


def test_starting_a_run_stamps_its_first_step_as_sent(run):
    assert first_step(run).enqueued_at is not None


def test_a_running_step_whose_attempt_died_is_sent_again_and_taken_over(
    crashed, run, django_capture_on_commit_callbacks
):
    now = after_lease(crashed)
    report, sent = sweep(django_capture_on_commit_callbacks, now=now)

    assert report == SweepReport(crashed_resent=1, lost_resent=0)
    assert sent == [crashed.pk]
    assert first_step(run).enqueued_at == now

    # The delivery charges the crashed attempt its reservation as an estimate and runs the step again.
    attempt = step_begin(step_id=crashed.pk, worker="host:2")
    step = first_step(run)
    assert (attempt.number, step.redeliveries) == (2, 1)
    step_settle(attempt=attempt, result=RESULT)
    run.refresh_from_db()
    assert (run.spent_usd, run.reserved_usd) == (Decimal("0.600000"), Decimal("0"))
    assert list(run.ledger_entries.values_list("attempt", "basis")) == [(1, "estimated"), (2, "reported")]
    assert_invariants(run)


def test_a_step_admitted_moments_ago_is_left_alone(crashed, django_capture_on_commit_callbacks):
    # Inside the grace on PostgreSQL, and inside the lease on SQLite.
    report, sent = sweep(django_capture_on_commit_callbacks, now=crashed.started_at + RUNNING_GRACE / 2)

    assert (report, sent) == (NOTHING, [])


@on_postgresql
def test_a_step_whose_attempt_lock_is_held_elsewhere_is_left_alone(
    crashed, run, django_capture_on_commit_callbacks
):
    with attempt_lock_held_elsewhere(crashed.pk):
        report, sent = sweep(django_capture_on_commit_callbacks, now=after_lease(crashed) + timedelta(days=1))
        run_cancel(run=run)
        cancelled_report, _ = sweep(django_capture_on_commit_callbacks, now=after_lease(crashed))

    assert (report, sent, cancelled_report) == (NOTHING, [], NOTHING)
    run.refresh_from_db()
    assert (first_step(run).status, run.reserved_usd) == ("running", Decimal("0.300000"))


def test_a_crashed_step_already_sent_again_is_not_sent_again_until_that_message_is_lost_too(
    crashed, settings, django_capture_on_commit_callbacks
):
    now = after_lease(crashed)
    pending_after = timedelta(seconds=settings.SWEEP_PENDING_AFTER_SECONDS)
    _, first = sweep(django_capture_on_commit_callbacks, now=now)
    _, second = sweep(django_capture_on_commit_callbacks, now=now + pending_after - timedelta(seconds=1))
    _, third = sweep(django_capture_on_commit_callbacks, now=now + pending_after + timedelta(seconds=1))

    assert (first, second, third) == ([crashed.pk], [], [crashed.pk])


def test_a_pending_step_whose_message_was_lost_is_sent_again_once(run, settings, django_capture_on_commit_callbacks):
    step = first_step(run)
    pending_after = timedelta(seconds=settings.SWEEP_PENDING_AFTER_SECONDS)

    _, early = sweep(django_capture_on_commit_callbacks, now=step.enqueued_at + pending_after - timedelta(seconds=1))
    now = step.enqueued_at + pending_after + timedelta(seconds=1)
    report, late = sweep(django_capture_on_commit_callbacks, now=now)
    _, again = sweep(django_capture_on_commit_callbacks, now=now)

    assert (early, late, again) == ([], [step.pk], [])
    assert report == SweepReport(crashed_resent=0, lost_resent=1)
    assert first_step(run).enqueued_at == now


def test_a_pending_step_sent_before_stamps_existed_is_judged_by_its_age(
    run, settings, django_capture_on_commit_callbacks
):
    Step.objects.filter(pk=first_step(run).pk).update(enqueued_at=None)
    now = first_step(run).created_at + timedelta(seconds=settings.SWEEP_PENDING_AFTER_SECONDS + 1)

    assert sweep(django_capture_on_commit_callbacks, now=now)[1] == [first_step(run).pk]


def test_steps_of_stopped_runs_are_never_sent(run, settings, django_capture_on_commit_callbacks):
    run_cancel(run=run)
    now = first_step(run).enqueued_at + timedelta(seconds=settings.SWEEP_PENDING_AFTER_SECONDS + 1)

    assert sweep(django_capture_on_commit_callbacks, now=now) == (NOTHING, [])


def test_a_crashed_step_of_a_cancelled_run_is_sent_to_charge_its_attempt_and_be_set_aside(
    crashed, run, team, django_capture_on_commit_callbacks
):
    run_cancel(run=run)
    run.refresh_from_db()
    assert run.reserved_usd == Decimal("0.300000")

    report, sent = sweep(django_capture_on_commit_callbacks, now=after_lease(crashed))
    assert (report, sent) == (SweepReport(crashed_resent=1, lost_resent=0), [crashed.pk])

    # Its delivery charges the attempt, which may have been billed, its reservation as an estimate.
    assert step_begin(step_id=crashed.pk, worker="host:2") is None
    run.refresh_from_db()
    step = first_step(run)
    assert (run.status, run.spent_usd, run.reserved_usd, run.held_usd) == (
        "cancelled",
        Decimal("0.300000"),
        Decimal("0"),
        Decimal("0"),
    )
    assert (step.status, step.reserved_usd, step.error["type"]) == ("cancelled", Decimal("0"), "StepCrashedError")
    assert list(run.ledger_entries.values_list("attempt", "basis")) == [(1, "estimated")]
    assert sweep(django_capture_on_commit_callbacks, now=after_lease(crashed)) == (NOTHING, [])
    # A late redelivery of the crashed attempt finds nothing left to do.
    assert step_begin(step_id=step.pk, worker="host:2") is None
    assert_invariants(run)


def test_a_duplicate_delivery_cannot_take_over_a_live_attempt(crashed):
    """A pending step sent again whose first message was only slow: the attempt that message started is alive."""
    if connection.vendor == "postgresql":
        with attempt_lock_held_elsewhere(crashed.pk), step_attempt_lock(crashed.pk) as acquired:
            assert not acquired
    else:
        with step_attempt_lock(crashed.pk) as acquired:  # the attempt is inside its lease
            assert not acquired
    Step.objects.filter(pk=crashed.pk).update(started_at=crashed.started_at - attempt_lease())
    with step_attempt_lock(crashed.pk) as acquired:  # dead now: free on every database
        assert acquired


@contextmanager
def attempt_lock_held_elsewhere(step_id: int):
    """Holds a step's attempt lock on another database connection, as a live worker would."""
    held, done = threading.Event(), threading.Event()

    def hold():
        try:
            with step_attempt_lock(step_id) as acquired:
                if acquired:
                    held.set()
                    done.wait(timeout=30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(timeout=10), "another connection could not take the attempt lock"
        yield
    finally:
        done.set()
        thread.join()
