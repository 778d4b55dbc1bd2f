"""Locks: the row locks every money-moving transaction takes, and the attempt lock of a step.

Row locks. A transaction that reads or moves a team's, a run's or a step's money locks their rows
with `lock_rows`, always in the order team → run → step, so that two transactions never wait for
each other in a cycle. Most step transactions skip the team (escrow.py). None of them waits for the
team's lock or for another run's while it holds a run's, which is what lets a transaction that holds
the team's lock also lock the team's other runs after its own (a recall of their slices).

The strength is FOR NO KEY UPDATE everywhere: it excludes every other writer of the row (and every
other FOR NO KEY UPDATE), which is what the counters need, while rows that only reference these
(ledger entries, events, checkpoints, steps) can still be inserted by others. FOR
UPDATE would also block those inserts' foreign-key checks (they take FOR KEY SHARE), and nothing here
changes a key, so it would only add waits.

The attempt lock: proof that no other live worker is executing a step. Where the database has
advisory locks (PostgreSQL) it is a session advisory lock on the worker's connection. The database
drops it the moment that connection dies, so a redelivered step can tell a crashed attempt (lock free)
from one still running elsewhere (lock held), without waiting for a lease to expire. Without them
(SQLite) a running step's attempt counts as alive for its lease: the longest a live attempt can take,
after which Celery's hard time limit has killed it.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from workflows import dialect
from workflows.models import ACTIVE_RUN_STATUSES, Run, Step, StepStatus, Team
from workflows.services import run_rows

logger = logging.getLogger(__name__)

# The first key of the two-key advisory lock form, so these locks never collide with anyone else's.
STEP_LOCK_NAMESPACE = 0x5B5D

# Beyond the hard time limit: the pool's timer may take a moment to kill a task that overran it.
LEASE_MARGIN = timedelta(seconds=10)


@dataclass(frozen=True)
class LockedRows:
    team: Team
    run: Run | None = None
    step: Step | None = None


def lock_rows(
    *, team_id: int | None = None, run_id: int | None = None, step_id: int | None = None, lock_team: bool = True
) -> LockedRows | None:
    """Lock the team (unless `lock_team` is false: then it is only read), then its run, then the
    run's step, inside the caller's transaction; None when a row named is gone, or the step is not
    the run's.

    Give the innermost id and, if known, the ones above it: the run is found through the step, the
    team through the run, in the statement that locks them. The run comes with its latest
    checkpoint's outputs as `latest_outputs`, read in the statement that locks it: every transaction
    that writes a checkpoint holds the run's lock until it commits, so they are current, and they are
    what this transaction started from (a caller that writes a checkpoint and needs it reads it again).

    Without the team's lock the team's row is read in the run's statement: its settings as committed
    before the run's lock was granted. A change of a team's budget takes the team's lock, revokes the
    runs' holds and then locks the team's active runs (`lock_team_runs`): a gate that waited for its
    run's lock reads the settings again (steps/execute.py).
    """
    team = None
    if lock_team or run_id is None and step_id is None:
        team = _lock_team(team_id=team_id, run_id=run_id, step_id=step_id)
        if team is None:
            return None
        run_id = team.step_run_id if step_id is not None else run_id
        if run_id is None:
            return LockedRows(team=team)
    found = run_rows.read(team_id=team_id, run_id=run_id, step_id=step_id, team=team, lock=True)
    if found is None:
        return None if team is None else LockedRows(team=team)
    run, step = found
    return LockedRows(team=run.team, run=run, step=step)


def lock_team_runs(team: Team) -> None:
    """Lock the team's active runs, inside a transaction that holds the team's lock (the order
    allows it): wait for every step transaction that holds one of them to commit. For a change of
    the team's budget: a step admitted under its run's lock alone decided by the old settings, and
    a draw under the new ones must see its reservation."""
    list(
        Run.objects.filter(team=team, status__in=ACTIVE_RUN_STATUSES)
        .select_for_update(no_key=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _lock_team(*, team_id: int | None, run_id: int | None, step_id: int | None) -> Team | None:
    lookups = {"pk": team_id} if team_id is not None else {}
    if step_id is not None:
        lookups["runs__steps"] = step_id
    elif run_id is not None:
        lookups["runs"] = run_id
    teams = Team.objects.select_for_update(of=("self",), no_key=True).filter(**lookups)
    if step_id is not None:
        teams = teams.annotate(step_run_id=F("runs__id"))
    return _one(teams)


def _one(rows: QuerySet):
    """The one row `rows` selects by key, or None, with no ORDER BY (neither `first()`'s nor the
    model's): a key needs none."""
    found = list(rows.order_by()[:1])
    return found[0] if found else None


@contextmanager
def step_attempt_lock(step_id: int) -> Iterator[bool]:
    """Yields whether this process now holds the step's attempt lock.

    Without advisory locks the lock is granted unless the step runs within its lease: a duplicate
    message the sweeper sent must not take over an attempt that is still alive.
    """
    if not dialect.has_advisory_locks():
        yield not Step.objects.filter(_within_lease(timezone.now()), pk=step_id).exists()
        return
    acquired = dialect.advisory_lock_try(STEP_LOCK_NAMESPACE, step_id)
    try:
        yield acquired
    finally:
        if acquired:
            _attempt_unlock(step_id)


def _attempt_unlock(step_id: int) -> None:
    """Let the step's attempt lock go. A connection that died took the lock with it: a worker cut off
    from the database may be unable to say so, or be on a new connection that never held it."""
    try:
        dialect.advisory_unlock(STEP_LOCK_NAMESPACE, step_id)
    except DatabaseError:
        logger.warning("Step %s: the attempt lock went with the database connection that held it.", step_id)


def update_unless_locked(rows: QuerySet, **values) -> bool:
    """UPDATE `rows` with `values`, unless that means waiting for a lock; returns whether it ran.

    For a write that may be skipped (an API key's last use). Inside a caller's transaction the UPDATE
    is simply part of it.
    """
    if connection.in_atomic_block:
        rows.update(**values)
        return True
    try:
        dialect.update_without_waiting(rows, values)
    except OperationalError:
        return False
    return True


def without_live_attempt(steps: QuerySet[Step], *, now: datetime) -> QuerySet[Step]:
    """`steps` less those a live worker is executing (or, pending, is admitting) right now.

    With advisory locks this reads the held attempt locks once, before the caller's query reads the
    steps: an attempt takes its lock before it marks its step running, so a step found running whose
    lock was free a moment earlier belongs to a dead attempt.
    """
    if not dialect.has_advisory_locks():
        return steps.exclude(_within_lease(now))
    return steps.exclude(pk__in=dialect.advisory_locks_held(STEP_LOCK_NAMESPACE))


def attempt_lease() -> timedelta:
    return timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT) + LEASE_MARGIN


def _within_lease(now: datetime) -> Q:
    return Q(status=StepStatus.RUNNING, started_at__gte=now - attempt_lease())
