"""The step transaction against the pure gate: `step_begin` admits a step exactly when `gate_decide`
does, over every combination of limits that decides a gate, and stops the run with the status the
decision names. docs/architecture.md lists the invariants these tests check."""

import itertools
import threading
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from tests.factories import THREE_STEP_YAML, workflow_version
from tests.invariants import assert_invariants
from workflows.models import Run, Step, StepStatus, Team
from workflows.providers import get_provider
from workflows.services.budgets import gate_input
from workflows.services.gate import gate_decide
from workflows.services.runs import run_start
from workflows.services.steps import step_begin, step_settle

pytestmark = pytest.mark.django_db

TOPIC = {"topic": "x"}
ESTIMATE = Decimal("0.3")  # what the research pipeline's first step reserves


def test_the_gate_admits_exactly_when_the_pure_gate_does(team):
    """Each combination starts from the same rows (the previous one's writes are reset): the run has
    spent $0.10 and reserves $0.10, another run of the team reserves $0.10 and holds $0.10 or a $0.25
    slice, and the step's estimate is $0.30. The pure gate decides over spend and reservations only:
    where the other run's idle slice is all that stands in the way, the gate recalls it."""
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={"max_iterations": 3})
    other = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC)
    step = run.steps.get()
    compared = Counter()
    for run_budget, run_mode, team_budget, team_mode, iterations, active_seconds, timeout, other_held in (
        itertools.product(
            [None, "0.5", "0.499999"], ["audit", "enforce"], [None, "0.5", "0.499999"], ["audit", "enforce"],
            [2, 3], [5, 20], [None, 10], ["0.1", "0.25"],
        )
    ):  # fmt: skip
        now = timezone.now()
        Run.objects.filter(pk=run.pk).update(
            status="queued", error=None, finished_at=None, budget_usd=run_budget, budget_mode=run_mode,
            spent_usd="0.1", reserved_usd="0.1", held_usd="0.1", iterations=iterations, timeout_seconds=timeout,
            audit_rearm_at_usd=None, active_time=timedelta(0), active_since=now - timedelta(seconds=active_seconds),
        )  # fmt: skip
        Run.objects.filter(pk=other.pk).update(reserved_usd="0.1", held_usd=other_held)
        Team.objects.filter(pk=team.pk).update(
            period_budget_usd=team_budget, period_mode=team_mode, period_audit_rearm_at_usd=None
        )
        Step.objects.filter(pk=step.pk).update(status=StepStatus.PENDING, attempts=0, reserved_usd=0)
        decision = gate_decide(
            gate_input(run=Run.objects.get(pk=run.pk), team=Team.objects.get(pk=team.pk), estimate=ESTIMATE, now=now)
        )
        combination = (run_budget, run_mode, team_budget, team_mode, iterations, timeout, active_seconds, other_held)
        attempt = step_begin(step_id=step.pk, worker="host:1")
        stopped_as = Run.objects.get(pk=run.pk).status
        assert (attempt is not None) == decision.admitted, combination
        if not decision.admitted:
            assert stopped_as == decision.stop, combination
        compared[decision.stop] += 1
    assert dict(compared) == {None: 150, "budget_exceeded": 66, "iteration_limit": 216, "timed_out": 144}


def test_an_attempt_that_lost_its_step_to_a_takeover_corrects_its_estimate_but_moves_nothing(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={})
    step = run.steps.get()
    superseded = step_begin(step_id=step.pk, worker="host:1")
    step_begin(step_id=step.pk, worker="host:2")  # the redelivery takes the crashed attempt over
    step_settle(attempt=superseded, result=get_provider("fake").complete(superseded.prepared.request))

    run.refresh_from_db()
    assert (run.iterations, run.steps.count(), Step.objects.get(pk=step.pk).status) == (0, 1, "running")
    assert list(run.ledger_entries.values_list("attempt", "basis")) == [(1, "estimated"), (1, "correction")]
    assert_invariants(run)


def hold_run_lock(run_id: int, seconds: float, held: threading.Event) -> None:
    try:
        with transaction.atomic():
            Run.objects.select_for_update(no_key=True).get(pk=run_id)
            held.set()
            time.sleep(seconds)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks that a thread holds exist on PostgreSQL only")
def test_the_timeout_is_judged_when_the_locks_are_held_not_when_the_gate_was_called(team):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC, limits={"timeout_seconds": 2})
    Run.objects.filter(pk=run.pk).update(active_since=timezone.now() - timedelta(seconds=1.5))
    held = threading.Event()
    holder = threading.Thread(target=hold_run_lock, args=(run.pk, 1.5, held))
    holder.start()
    held.wait()
    attempt = step_begin(step_id=run.steps.get().pk, worker="host:1")  # waits about 1.5 s for the run
    holder.join()

    run.refresh_from_db()
    assert attempt is None
    assert run.status == "timed_out"


def write_checkpoint_under_run_lock(run_id: int, outputs: dict, seconds: float, held: threading.Event) -> None:
    """What every transaction that writes a checkpoint does (a settlement, a stop): it locks the
    run, moves its counters, writes the checkpoint, and commits while another waits for the run."""
    from workflows.services.locks import lock_rows
    from workflows.services.run_state import checkpoint_record

    try:
        with transaction.atomic():
            run = lock_rows(run_id=run_id, lock_team=False).run
            Run.objects.filter(pk=run_id).update(iterations=run.iterations + 1)
            checkpoint_record(run=run, reason="step_completed", outputs=outputs, next_step=None)
            held.set()
            time.sleep(seconds)
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks that a thread holds exist on PostgreSQL only")
def test_the_latest_outputs_read_under_the_run_lock_are_those_the_lock_holder_committed(team):
    """locks.lock_rows: the run's `latest_outputs` are read in the statement that locks it, and
    'every transaction that writes a checkpoint holds the run's lock until it commits, so they are
    current'. A statement that waited for the lock re-reads the run's row at its newest version,
    but the checkpoint subquery runs on the snapshot taken before it waited."""
    from workflows.services.locks import lock_rows

    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs=TOPIC)
    step = run.steps.get()
    outputs = {"researcher": {"findings": "committed while the other waited"}}
    held = threading.Event()
    holder = threading.Thread(target=write_checkpoint_under_run_lock, args=(run.pk, outputs, 1.0, held))
    holder.start()
    assert held.wait(10)
    with transaction.atomic():
        locked = lock_rows(step_id=step.pk, lock_team=False)  # waits about 1 s for the run
        iterations, latest = locked.run.iterations, locked.run.latest_outputs
    holder.join()

    assert iterations == 1  # the run's row is the one the holder committed
    assert latest == outputs
