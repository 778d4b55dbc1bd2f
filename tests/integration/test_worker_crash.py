"""A worker process SIGKILLed in the middle of a step, on Redis and PostgreSQL with real worker processes."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import wait_for_run, wait_until
from tests.factories import slow_middle_yaml, workflow_version
from tests.integration.conftest import service_env
from tests.invariants import assert_invariants
from workflows.models import EventType, Step
from workflows.services.runs import run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker_process(transactional_db, tmp_path: Path):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip(
            "needs CELERY_BROKER_URL=redis://...: Celery's filesystem transport deletes a message when a worker "
            "takes it, so a killed step is never redelivered there"
        )
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "budgetsvc", "worker",
            "--pool", "prefork", "--concurrency", "1", "--loglevel", "INFO",
            "--hostname", f"crash-test-{uuid.uuid4().hex[:6]}@%h",
        ],
        cwd=settings.BASE_DIR,
        env=service_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def wait_for_step_running(run_id: int, agent: str) -> Step:
    return wait_until(
        lambda: Step.objects.filter(run_id=run_id, agent=agent, status="running").exclude(worker="").first(),
        message=f"step {agent} of run {run_id} to start",
    )


def test_a_worker_killed_mid_step_is_redelivered_and_charged_once(team, worker_process):
    version = workflow_version(team=team, source=slow_middle_yaml(latency_ms=4000))
    run = run_start(team=team, workflow=version.workflow_id, limits={"budget_usd": "1", "budget_mode": "enforce"})

    step = wait_for_step_running(run.pk, "middle")
    pid = int(step.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    run = wait_for_run(run.pk, "completed", "failed", timeout=60)
    print(f"completed {time.monotonic() - killed_at:.1f}s after the child was killed (the step takes 4 s)")
    assert run.status == "completed", run.error
    middle = Step.objects.get(pk=step.pk)
    assert (middle.attempts, middle.redeliveries) == (2, 1)
    assert middle.worker != step.worker
    # The killed attempt may have been billed: its $0.10 reservation is charged as an estimate.
    assert list(run.ledger_entries.order_by("id").values_list("agent", "attempt", "basis")) == [
        ("first", 1, "reported"),
        ("middle", 1, "estimated"),
        ("middle", 2, "reported"),
        ("last", 1, "reported"),
    ]
    assert str(run.spent_usd) == "0.400000"
    assert run.events.filter(type=EventType.STEP_REDELIVERED).count() == 1
    assert_invariants(run)
