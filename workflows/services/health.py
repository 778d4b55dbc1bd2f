"""Readiness checks and the figures /metrics reads at scrape time, each bounded in time.

Every check runs on a thread of its own, with its own database connection, and is waited for at
most HEALTH_CHECK_TIMEOUT_SECONDS: a hung database or broker makes the check fail quickly instead of
holding the request. A check still running from an earlier probe counts as failed, and no second one
is started beside it, so a hung dependency never piles up threads.

What a failed check says names the problem, never a host, a URL or a credential.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import timedelta

from django.conf import settings
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Sum
from django.utils import timezone
from kombu import Connection

from workflows.models import Step, StepStatus, SweepHeartbeat

# The singleton row's id.
HEARTBEAT_ID = 1

_in_flight: dict[str, Future] = {}
_in_flight_lock = threading.Lock()


class CheckFailed(Exception):
    """A check's finding, as a readiness answer shows it."""


def readiness_problems() -> dict[str, str]:
    """What keeps the service from taking work, by check name; empty when it is ready."""
    results = _bounded(
        {"database": _database, "broker": _broker, "migrations": _migrations, "sweeper": _sweeper},
        timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS,
    )
    return {name: problem for name, (_, problem) in results.items() if problem is not None}


def scrape_figures() -> dict:
    """The gauges /metrics reads at scrape time; None for a source that did not answer in time."""
    results = _bounded(
        {"scrape-database": _reservations, "scrape-broker": _queue_depths}, timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS
    )
    reservations, _ = results["scrape-database"]
    depths, _ = results["scrape-broker"]
    return {
        "reserved_usd": None if reservations is None else reservations["reserved_usd"],
        "running_steps": None if reservations is None else reservations["running_steps"],
        "queue_depth": depths,
    }


def sweep_heartbeat_record() -> None:
    """Note that a sweep ran (services/sweeper.py), for the readiness check."""
    SweepHeartbeat.objects.update_or_create(pk=HEARTBEAT_ID, defaults={"swept_at": timezone.now()})


def _database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _broker() -> None:
    _queue_depths()


def _migrations() -> None:
    executor = MigrationExecutor(connection)
    unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if unapplied:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in unapplied[:5])
        raise CheckFailed(f"{len(unapplied)} migrations are not applied: {names}.")


def _sweeper() -> None:
    swept_at = SweepHeartbeat.objects.filter(pk=HEARTBEAT_ID).values_list("swept_at", flat=True).first()
    if swept_at is None:
        raise CheckFailed("No sweep has run yet: is celery beat running, with a worker?")
    age = timezone.now() - swept_at
    if age > timedelta(seconds=settings.HEALTH_SWEEP_MAX_AGE_SECONDS):
        raise CheckFailed(
            f"The last sweep ran {age.total_seconds():.0f} s ago, more than {settings.HEALTH_SWEEP_MAX_AGE_SECONDS:g} s: "
            "is celery beat running, with a worker?"
        )


def _reservations() -> dict:
    return Step.objects.filter(status=StepStatus.RUNNING).aggregate(
        reserved_usd=Sum("reserved_usd", default=0), running_steps=Count("pk")
    )


def _queue_depths() -> dict[str, int]:
    """Messages waiting in each of the service's queues, asked of the broker itself: Redis's list
    lengths, or the filesystem transport's message files."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    options = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        # One try, not kombu's default of retrying for ever: the check's thread must end.
        "max_retries": 0,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    transport = getattr(settings, "CELERY_BROKER_TRANSPORT", None)
    with Connection(settings.CELERY_BROKER_URL, transport=transport, transport_options=options, connect_timeout=timeout) as broker:
        channel = broker.default_channel
        return {queue.name: channel.queue_declare(queue=queue.name).message_count for queue in settings.CELERY_TASK_QUEUES}


def _bounded(checks: dict[str, Callable], *, timeout: float) -> dict[str, tuple[object, str | None]]:
    """Run the checks side by side, each on its thread, for at most `timeout` seconds in all.
    Returns (result, problem) by name; problem is None for a check that passed."""
    futures = {name: _started(name, check) for name, check in checks.items()}
    deadline = time.monotonic() + timeout
    results = {}
    for name, future in futures.items():
        if future is None:
            results[name] = (None, "An earlier check has not finished yet; it is hanging.")
            continue
        left = max(0.0, deadline - time.monotonic())
        try:
            results[name] = (future.result(timeout=left), None)
        except FutureTimeout:
            results[name] = (None, f"No answer within {timeout:g} s.")
        except CheckFailed as exc:
            results[name] = (None, str(exc))
        except Exception as exc:  # noqa: BLE001 - any failure is the check's finding
            # The error's class only: a driver's message may name the host or the URL.
            results[name] = (None, f"Failed: {type(exc).__name__}.")
    return results


def _started(name: str, check: Callable) -> Future | None:
    with _in_flight_lock:
        earlier = _in_flight.get(name)
        if earlier is not None and not earlier.done():
            return None
        future = _in_flight[name] = Future()

    def run() -> None:
        try:
            future.set_result(check())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            future.set_exception(exc)
        finally:
            connections.close_all()  # this thread's own connections

    threading.Thread(target=run, name=f"health-{name}", daemon=True).start()
    return future
