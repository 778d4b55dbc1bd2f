"""A step that outlives Redis's visibility timeout is delivered twice, to two real worker processes,
and still charged once.

The workers run with CELERY_VISIBILITY_TIMEOUT_SECONDS=3 and the middle step takes 12 s: Redis hands
the unacknowledged message to the idle second worker while the first is still running the step. That
delivery finds the step's attempt lock held, logs it and looks again every 2 s until the first attempt
has settled; it never runs the step a second time.
"""

import re
import uuid
from pathlib import Path

import pytest

from tests.conftest import wait_for_run, wait_until
from tests.factories import slow_middle_yaml, workflow_version
from tests.integration.conftest import skip_unless_redis, wait_for_ready
from tests.invariants import assert_invariants
from workflows.models import EventType, Step
from workflows.selectors import team_budget_status
from workflows.services.runs import run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

VISIBILITY_TIMEOUT_SECONDS = 3
STEP_LATENCY_MS = 12_000


def parent_pid(pid: int) -> int:
    return int(re.search(r"^PPid:\s+(\d+)$", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE).group(1))


@pytest.mark.timeout(180)
def test_a_step_that_outlives_the_visibility_timeout_is_delivered_twice_and_charged_once(team, celery_process):
    skip_unless_redis()
    env = {
        "CELERY_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_TIMEOUT_SECONDS),
        "DJANGO_SETTINGS_MODULE": "tests.integration.worker_settings",
        "TEST_UNACKED_TAG": uuid.uuid4().hex,
    }
    workers = [
        celery_process(
            "worker", "--pool", "prefork", "--concurrency", "1", "--hostname", f"vis-{n}-{uuid.uuid4().hex[:6]}@%h",
            env=env,
        )
        for n in range(2)
    ]
    for worker in workers:
        wait_for_ready(worker)
    version = workflow_version(team=team, source=slow_middle_yaml(latency_ms=STEP_LATENCY_MS))
    run = run_start(team=team, workflow=version.workflow_id, limits={"budget_usd": "1", "budget_mode": "enforce"})

    step = wait_until(
        lambda: Step.objects.filter(run=run, agent="middle", status="running").first(),
        timeout=60,
        message="the slow step to start",
    )
    runner = next(worker for worker in workers if worker.pid == parent_pid(int(step.worker.rsplit(":", 1)[1])))
    (other,) = [worker for worker in workers if worker is not runner]

    run = wait_for_run(run.pk, "completed", "failed", timeout=90)
    assert run.status == "completed", run.error

    # The duplicate really happened: the idle worker took the step while it ran on the other.
    duplicates = other.log_path.read_text().count(f"Step {step.pk} is being executed by a live attempt elsewhere")
    print(f"the middle step was delivered to the idle worker {duplicates} time(s) while it ran")
    assert duplicates >= 1, other.log_path.read_text()[-5000:]

    middle = Step.objects.get(pk=step.pk)
    assert (middle.status, middle.attempts, middle.redeliveries, middle.worker) == ("succeeded", 1, 0, step.worker)
    assert list(run.ledger_entries.order_by("id").values_list("agent", "attempt")) == [
        ("first", 1),
        ("middle", 1),
        ("last", 1),
    ]
    assert str(run.spent_usd) == "0.300000"
    assert run.reserved_usd == 0
    team.refresh_from_db()
    assert team_budget_status(team=team).reserved_usd == 0
    assert not run.events.filter(type=EventType.STEP_REDELIVERED).exists()
    assert_invariants(run)
    assert all(worker.poll() is None for worker in workers)
