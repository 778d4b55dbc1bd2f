"""A step that crashes its worker every time it runs, on Redis and PostgreSQL with a real prefork worker.

The test plays the crashing step: each time the step is running it SIGKILLs the worker child that runs
it (the pid the attempt recorded in `Step.worker`). The parent notices the lost child and rejects the
message back to Redis (`reject_on_worker_lost`), a new child takes it and takes the crashed attempt over
- until STEP_MAX_REDELIVERIES takeovers have been spent, when the next delivery parks the run as
`failed` and frees its reservation. Once the crashing stops, a resume through the API completes it.
"""

import os
import signal
import time
import uuid

import pytest

from tests.conftest import wait_for_run, wait_until
from tests.factories import slow_middle_yaml, workflow_version
from tests.integration.conftest import skip_unless_redis, wait_for_ready
from tests.invariants import assert_invariants
from workflows.models import EventType, Step
from workflows.selectors import team_budget_status
from workflows.services.runs import run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MAX_REDELIVERIES = 2
# From a kill to the next attempt running, or to the run parked: the pool forks a new child, which
# takes the rejected message at once. Generous, for a machine shared with other test runs.
PARK_BOUND = 30


def test_a_step_that_crashes_its_worker_every_time_is_parked_after_k_deliveries_and_can_be_resumed(
    team, api, celery_process
):
    skip_unless_redis()
    worker = celery_process(
        "worker", "--pool", "prefork", "--concurrency", "1", "--hostname", f"park-{uuid.uuid4().hex[:6]}@%h",
        env={"STEP_MAX_REDELIVERIES": str(MAX_REDELIVERIES)},
    )
    wait_for_ready(worker)
    version = workflow_version(team=team, source=slow_middle_yaml(latency_ms=6000))
    run = run_start(team=team, workflow=version.workflow_id, limits={"budget_usd": "1", "budget_mode": "enforce"})

    # The first delivery, then MAX_REDELIVERIES takeovers: every attempt dies mid-call.
    killed, takeovers, killed_at = [], [], 0.0
    for attempt in range(1, MAX_REDELIVERIES + 2):
        step = wait_until(
            lambda: Step.objects.filter(run=run, agent="middle", status="running", attempts=attempt).first(),
            timeout=PARK_BOUND if killed else 60,
            message=f"attempt {attempt} of the middle step to start",
        )
        if killed:
            takeovers.append(time.monotonic() - killed_at)
        pid = int(step.worker.rsplit(":", 1)[1])
        assert pid not in killed and pid != worker.pid
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        killed.append(pid)

    run = wait_for_run(run.pk, "failed", "completed", timeout=PARK_BOUND)
    parked_after = time.monotonic() - killed_at
    print(
        "from a child's death to the next attempt running: "
        + ", ".join(f"{seconds:.1f}s" for seconds in takeovers)
        + f"; to the run parked after the last: {parked_after:.1f}s (bound {PARK_BOUND}s each)"
    )
    assert run.status == "failed"
    assert run.error["type"] == "StepCrashedError"
    assert f"lost its worker {MAX_REDELIVERIES + 1} times" in run.error["message"] and "parked" in run.error["message"]
    middle = Step.objects.get(run=run, agent="middle")
    assert (middle.status, middle.attempts, middle.redeliveries) == ("failed", MAX_REDELIVERIES + 1, MAX_REDELIVERIES)
    assert middle.reserved_usd == 0
    assert run.reserved_usd == 0
    team.refresh_from_db()
    assert team_budget_status(team=team).reserved_usd == 0
    # No attempt of the middle step settled: each may have been billed, and is charged its $0.10 estimate.
    crashed = [("middle", attempt, "estimated") for attempt in range(1, MAX_REDELIVERIES + 2)]
    assert list(run.ledger_entries.order_by("id").values_list("agent", "attempt", "basis")) == [
        ("first", 1, "reported"),
        *crashed,
    ]
    assert str(run.spent_usd) == "0.400000"
    assert run.events.filter(type=EventType.STEP_REDELIVERED).count() == MAX_REDELIVERIES
    assert run.events.filter(type=EventType.RUN_FAILED).count() == 1
    assert run.checkpoints.latest().next_step_id == middle.pk
    assert_invariants(run)
    assert worker.poll() is None, "the worker parent outlived all its children's deaths"

    # The crashing stops: resume continues from the parked step, with a fresh redelivery bound.
    response = api.post(f"/api/v1/runs/{run.pk}/resume", {"reason": "the crashing dependency was fixed"}, format="json")
    assert response.status_code == 202, response.json()
    resumed_at = time.monotonic()
    run = wait_for_run(run.pk, "completed", "failed", timeout=60)
    print(f"completed {time.monotonic() - resumed_at:.1f}s after the resume (the middle step takes 6 s)")
    assert run.status == "completed", run.error
    middle.refresh_from_db()
    assert (middle.status, middle.attempts, middle.redeliveries) == ("succeeded", MAX_REDELIVERIES + 2, 0)
    assert list(run.ledger_entries.order_by("id").values_list("agent", "attempt", "basis")) == [
        ("first", 1, "reported"),
        *crashed,
        ("middle", MAX_REDELIVERIES + 2, "reported"),
        ("last", 1, "reported"),
    ]
    assert str(run.spent_usd) == "0.600000"
    assert run.reserved_usd == 0
    team.refresh_from_db()
    assert team_budget_status(team=team).reserved_usd == 0
    assert run.events.filter(type=EventType.RUN_RESUMED).count() == 1
    assert_invariants(run)
