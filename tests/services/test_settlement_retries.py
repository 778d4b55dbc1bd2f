"""A settlement the database refused on a healthy connection (a deadlock, a serialization failure, a
cancelled query) is tried again on that connection. Closing it would drop the session advisory lock
that proves the attempt alive: while the worker waited for its next try, the sweeper would judge the
live attempt crashed, and a delivery would end it and run the step a second time, the call made and
billed twice."""

from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.services import sweeper
from workflows.services.locks import step_attempt_lock
from workflows.services.runs import run_start
from workflows.services.steps import execute, step_execute

on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory attempt locks exist on PostgreSQL only")


@pytest.mark.django_db(transaction=True)
@on_postgresql
def test_a_transient_error_on_a_healthy_connection_does_not_make_a_live_attempt_look_crashed(team, monkeypatch):
    version = workflow_version(team=team, source=THREE_STEP_YAML)
    run = run_start(team=team, workflow=version.workflow_id, inputs={"topic": "x"}, limits={"budget_usd": "5"})
    step = run.steps.get(sequence=1)
    settle = execute._settle_under_locks
    sent, tries = [], []

    def deadlocked_once(**kwargs):
        tries.append(1)
        if len(tries) == 1:
            # The connection itself is fine: the server rolled the transaction back.
            raise OperationalError("deadlock detected")
        # The worker is alive and about to settle: what does the sweeper see meanwhile?
        sent.append(sweeper.sweep_stuck_steps(now=timezone.now() + timedelta(seconds=10)).crashed_resent)
        settle(**kwargs)

    monkeypatch.setattr(execute, "_settle_under_locks", deadlocked_once)
    monkeypatch.setattr(execute, "SETTLE_RETRY_FIRST_SECONDS", 0.01)
    monkeypatch.setattr(sweeper, "step_schedule", lambda step, now: None)
    with step_attempt_lock(step.pk) as acquired:  # as the task does
        assert acquired
        step_execute(step_id=step.pk)

    assert tries == [1, 1]
    assert sent == [0], "the sweeper sent the live attempt's step for takeover"
