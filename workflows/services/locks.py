"""The attempt lock: proof that no other live worker is executing a step.

On PostgreSQL it is a session advisory lock on the worker's connection. The database drops it the
moment that connection dies, so a redelivered step can tell a crashed attempt (lock free) from one
still running elsewhere (lock held), without waiting for a lease to expire.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

# The first key of the two-key advisory lock form, so these locks never collide with anyone else's.
STEP_LOCK_NAMESPACE = 0x5B5D


@contextmanager
def step_attempt_lock(step_id: int) -> Iterator[bool]:
    """Yields whether this process now holds the step's attempt lock.

    SQLite has no advisory locks; there a single machine runs the service and the filesystem
    transport never redelivers, so the lock is always granted.
    """
    if connection.vendor != "postgresql":
        yield True
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
