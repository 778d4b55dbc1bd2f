"""The attempt lock: proof that no other live worker is executing a step.

On PostgreSQL it is a session advisory lock on the worker's connection. The database drops it the
moment that connection dies, so a redelivered step can tell a crashed attempt (lock free) from one
still running elsewhere (lock held), without waiting for a lease to expire.

SQLite has no advisory locks. There a running step's attempt counts as alive for its lease: the
longest a live attempt can take, after which Celery's hard time limit has killed it.

`update_unless_locked` is the other lock question that differs by database: a write that is skipped
rather than wait for a lock (an API key's last use).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from workflows.models import Step, StepStatus

# The first key of the two-key advisory lock form, so these locks never collide with anyone else's.
STEP_LOCK_NAMESPACE = 0x5B5D

# Beyond the hard time limit: the pool's timer may take a moment to kill a task that overran it.
LEASE_MARGIN = timedelta(seconds=10)


@contextmanager
def step_attempt_lock(step_id: int) -> Iterator[bool]:
    """Yields whether this process now holds the step's attempt lock.

    Without advisory locks (SQLite) the lock is granted unless the step runs within its lease: a
    duplicate message the sweeper sent must not take over an attempt that is still alive.
    """
    if connection.vendor != "postgresql":
        yield not Step.objects.filter(_within_lease(timezone.now()), pk=step_id).exists()
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [STEP_LOCK_NAMESPACE, step_id])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [STEP_LOCK_NAMESPACE, step_id])


def update_unless_locked(rows: QuerySet, **values) -> bool:
    """UPDATE `rows` with `values`, unless that means waiting for a lock; returns whether it ran.

    For a write that may be skipped. On PostgreSQL the rows are locked with NOWAIT first. On SQLite
    the UPDATE is one statement in autocommit with no busy timeout: it fails at once when another
    connection holds the database's write lock. No explicit transaction there: a BEGIN IMMEDIATE
    refused without waiting was seen to leave other connections waiting out their whole busy timeout.
    Inside a caller's transaction the UPDATE is simply part of it.
    """
    if connection.in_atomic_block:
        rows.update(**values)
        return True
    try:
        if connection.vendor == "sqlite":
            waits_ms = int(connection.settings_dict.get("OPTIONS", {}).get("timeout", 5) * 1000)
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA busy_timeout = 0")
            try:
                rows.update(**values)
            finally:
                with connection.cursor() as cursor:
                    cursor.execute(f"PRAGMA busy_timeout = {waits_ms}")
            return True
        with transaction.atomic():
            if rows.select_for_update(nowait=True).exists():
                rows.update(**values)
        return True
    except OperationalError:
        return False


def without_live_attempt(steps: QuerySet[Step], *, now: datetime) -> QuerySet[Step]:
    """`steps` less those a live worker is executing (or, pending, is admitting) right now.

    On PostgreSQL this reads the held attempt locks once, before the caller's query reads the steps:
    an attempt takes its lock before it marks its step running, so a step found running whose lock
    was free a moment earlier belongs to a dead attempt.
    """
    if connection.vendor != "postgresql":
        return steps.exclude(_within_lease(now))
    return steps.exclude(pk__in=_held_step_locks())


def attempt_lease() -> timedelta:
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT) + LEASE_MARGIN


def _within_lease(now: datetime) -> Q:
    return Q(status=StepStatus.RUNNING, started_at__gte=now - attempt_lease())


def _held_step_locks() -> list[int]:
    """The steps whose attempt lock some session of this database holds."""
    with connection.cursor() as cursor:
        # Two-key advisory locks show as classid = key 1, objid = key 2, objsubid = 2.
        cursor.execute(
            """
            SELECT objid::bigint FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = %s
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            [STEP_LOCK_NAMESPACE],
        )
        return [row[0] for row in cursor.fetchall()]
