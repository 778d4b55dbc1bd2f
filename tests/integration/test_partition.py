"""A worker machine cut off from the network in the middle of a step (issue #13).

The cut-off worker runs in a network namespace of its own and reaches PostgreSQL and Redis through
relays on the host (tests/integration/netns.py). In the middle of its slow step the link starts
dropping every packet both ways. Once PostgreSQL's keepalive (the relay's, standing in for it) has
ended the worker's session, the step's attempt lock is free, and the sweeper on a real beat sends the
step to a second worker on the host, which charges the lost attempt its reservation as an estimate
and completes the run. Then the link comes back, and so does the cut-off worker, whose own provider
call for the step ended while it was cut off: it has kept trying to settle, and its usage now
corrects the estimate.
"""

import os
import socket
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from budgetsvc.celery import app
from tests.conftest import wait_for_run, wait_until
from tests.factories import slow_middle_yaml, workflow_version
from tests.integration.conftest import ON_POSTGRESQL, ON_REDIS, service_env, wait_for_ready
from tests.integration.netns import Link, NetworkUnavailable, Relay, namespace_link
from tests.invariants import assert_invariants
from workflows.models import EventType, Run, Step
from workflows.selectors import team_budget_status
from workflows.services.runs import run_start

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SERVICE_SETTINGS = {"SWEEP_INTERVAL_SECONDS": "1"}
STEP_LATENCY_MS = 10000
# The cut-off worker gives up on a silent database within 6 s (its keepalives, and tcp_user_timeout
# for a query on the dead link) instead of after TCP's retransmissions, about 15 min.
CUT_OFF_SETTINGS = {**SERVICE_SETTINGS, "DATABASE_DEAD_PEER_SECONDS": "6"}
# The middle call costs 40 output tokens at $1,000 per million, $0.04; its estimate, the 100-token cap, $0.10.
REAL_COST, ESTIMATE = Decimal("0.040000"), Decimal("0.100000")
# The relay's keepalive ends the session 3 to 6 s after the cut; then a 1 s sweep, the 10 s step
# again on the second worker, and the last step.
RECOVERY_BOUND = 40
# Once the link is back, the cut-off worker's sockets learn that their peers are gone only when TCP
# next retransmits on them, at intervals that doubled during the cut.
RETURN_BOUND = 60


@dataclass(frozen=True)
class CutOffMachine:
    link: Link
    env: dict  # what a Celery process in the namespace needs on top of the service environment


def _via(url: str, host: str, port: int) -> str:
    """`url` with its host and port replaced, its user and password kept."""
    parts = urlsplit(url)
    user, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}{at}{host}:{port}"))


@pytest.fixture
def cut_off_machine(django_db_setup, tmp_path) -> CutOffMachine:
    """A network namespace with relays to the test's PostgreSQL database and Redis database.

    Request it before `celery_process`, so that it is torn down after the processes are stopped.
    """
    if not (ON_POSTGRESQL and ON_REDIS):
        pytest.skip(
            "needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...: only PostgreSQL's session "
            "advisory lock ties a step's attempt to its worker's connection"
        )
    if os.geteuid() != 0:
        pytest.skip("needs root, to create a network namespace")
    with ExitStack() as stack:
        try:
            link = stack.enter_context(namespace_link())
        except NetworkUnavailable as exc:
            pytest.skip(f"cannot build a network namespace: {exc}")
        database = connection.settings_dict
        database_relay = Relay(listen_host=link.host_address, target=(database["HOST"], int(database["PORT"])))
        stack.callback(database_relay.close)
        broker = urlsplit(settings.CELERY_BROKER_URL)
        broker_relay = Relay(listen_host=link.host_address, target=(broker.hostname, broker.port or 6379))
        stack.callback(broker_relay.close)
        database_url = _via(service_env(tmp_path)["DATABASE_URL"], link.host_address, database_relay.port)
        yield CutOffMachine(
            link=link,
            env={
                "DATABASE_URL": database_url,
                "CELERY_BROKER_URL": _via(settings.CELERY_BROKER_URL, link.host_address, broker_relay.port),
            },
        )


def _worker_pid(step: Step) -> int:
    return int(step.worker.rpartition(":")[2])


def _idle(name: str) -> bool:
    """Whether the worker `name` answers over the broker and runs no task."""
    active = app.control.inspect(destination=[name], timeout=1).active()
    return active is not None and active.get(name) == []


def ledger(run: Run) -> list[tuple]:
    return list(run.ledger_entries.order_by("id").values_list("agent", "attempt", "basis", "cost_usd"))


def _corrected(middle: Step) -> bool:
    return middle.ledger_entries.filter(attempt=1, basis="correction").exists()


def test_a_step_cut_off_from_its_worker_completes_on_another_and_the_cut_off_worker_comes_back(
    cut_off_machine, team, celery_process
):
    link = cut_off_machine.link
    token = uuid.uuid4().hex[:6]
    cut_off_name, other_name = f"cutoff-{token}@{socket.gethostname()}", f"host-{token}@{socket.gethostname()}"
    beat = celery_process("beat", env=SERVICE_SETTINGS)
    cut_off = celery_process(
        "worker", "--pool", "prefork", "--concurrency", "1", "--hostname", cut_off_name,
        env={**CUT_OFF_SETTINGS, **cut_off_machine.env}, prefix=link.exec_prefix(),
    )  # fmt: skip
    # Started now rather than after the cut, as its start-up takes seconds, but on a queue nothing
    # is sent to: it takes the run's queue only once the slow step runs in the namespace.
    other = celery_process(
        "worker", "--pool", "prefork", "--concurrency", "1", "--hostname", other_name,
        "--queues", f"{settings.CELERY_TASK_DEFAULT_QUEUE}-standby", env=SERVICE_SETTINGS,
    )  # fmt: skip
    wait_for_ready(cut_off)
    wait_for_ready(other)
    source = slow_middle_yaml(latency_ms=STEP_LATENCY_MS).replace(
        "mock: {output_tokens: 100, latency_ms", "mock: {output_tokens: 40, latency_ms"
    )
    version = workflow_version(team=team, source=source)
    run = run_start(team=team, workflow=version.workflow_id, limits={"budget_usd": "1", "budget_mode": "enforce"})
    step = wait_until(
        lambda: Step.objects.filter(run=run, agent="middle", status="running").first(),
        message="the slow step to start",
    )
    assert _worker_pid(step) in link.pids()
    assert app.control.add_consumer(
        settings.CELERY_TASK_DEFAULT_QUEUE, destination=[other_name], reply=True, timeout=10
    )

    link.cut()
    cut_at = time.monotonic()
    into_step = (timezone.now() - step.started_at).total_seconds()
    print(f"cut at {datetime.now():%H:%M:%S.%f}, {into_step:.1f}s into the step")
    try:
        wait_until(
            lambda: Step.objects.filter(pk=step.pk, attempts=2).exists(),
            timeout=RECOVERY_BOUND,
            message="the second worker to take the step over",
        )
        taken_over_after = time.monotonic() - cut_at
        run = wait_for_run(run.pk, "completed", "failed", timeout=RECOVERY_BOUND - taken_over_after)
    except AssertionError:
        # pytest shows what was printed when the test fails.
        print(Step.objects.filter(run=run).values("sequence", "status", "attempts", "worker", "started_at"))
        for process in (beat, cut_off, other):
            print(process.log_path, process.log_path.read_text()[-6000:])
        raise
    completed_after = time.monotonic() - cut_at
    assert run.status == "completed", run.error
    middle = Step.objects.get(pk=step.pk)
    assert (middle.attempts, middle.redeliveries) == (2, 1)
    assert _worker_pid(middle) not in link.pids()
    assert run.events.filter(type=EventType.STEP_REDELIVERED).count() == 1
    # Both calls are in the ledger: the lost one, which the provider may have billed, at its estimate.
    assert ledger(run) == [
        ("first", 1, "reported", Decimal("0.100000")),
        ("middle", 1, "estimated", ESTIMATE),
        ("middle", 2, "reported", REAL_COST),
        ("last", 1, "reported", Decimal("0.100000")),
    ]
    assert_invariants(run)
    assert team_budget_status(team=team).reserved_usd == 0

    link.restore()
    restored_at = time.monotonic()
    print(f"restored at {datetime.now():%H:%M:%S.%f}; the cut-off worker logs to {cut_off.log_path}")
    try:
        wait_until(lambda: _corrected(middle), timeout=RETURN_BOUND, message="the cut-off worker's usage to arrive")
        corrected_after = time.monotonic() - restored_at
        wait_until(lambda: _idle(cut_off_name), timeout=RETURN_BOUND, message=f"{cut_off_name} to be back and idle")
    except AssertionError:
        print(cut_off.log_path.read_text()[-6000:])
        raise
    back_after = time.monotonic() - restored_at
    print(
        f"taken over {taken_over_after:.1f}s and completed {completed_after:.1f}s after the cut "
        f"(bound {RECOVERY_BOUND}s); the cut-off attempt's usage was recorded {corrected_after:.1f}s and the "
        f"worker was back and idle {back_after:.1f}s after the link (bound {RETURN_BOUND}s)"
    )
    assert "could not settle" in cut_off.log_path.read_text()
    # Its usage corrects the estimate to the call's real cost; its result moves nothing.
    estimate, correction = middle.ledger_entries.filter(attempt=1).order_by("id")
    assert (correction.basis, correction.corrects_id, correction.output_tokens) == ("correction", estimate.pk, 40)
    assert estimate.cost_usd + correction.cost_usd == REAL_COST
    run.refresh_from_db()
    assert (run.status, run.spent_usd, run.reserved_usd) == ("completed", Decimal("0.280000"), 0)
    assert Step.objects.get(pk=step.pk).worker == middle.worker
    assert run.events.filter(type=EventType.USAGE_CORRECTED).count() == 1
    assert_invariants(run)
