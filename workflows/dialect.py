"""What PostgreSQL and SQLite do differently, in one place: the rest of the code asks here.

PostgreSQL is production. SQLite is the embedded default of `make run` and `make test`: one writer at
a time, no advisory locks, and triggers installed after `migrate` rather than by a migration.
"""

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import QuerySet


def has_advisory_locks() -> bool:
    return connection.vendor == "postgresql"


def is_sqlite(db: BaseDatabaseWrapper = connection) -> bool:
    return db.vendor == "sqlite"


def row_lock_clause(*aliases: str) -> str:
    """What ends a SELECT that locks the rows of the tables named by `aliases`, in that order, at the
    strength locks.py argues for. Nothing on SQLite, whose transactions take the database's one write
    lock up front (BEGIN IMMEDIATE)."""
    if is_sqlite():
        return ""
    return f" FOR NO KEY UPDATE OF {', '.join(aliases)}"


def row_unchanged(table: str, alias: str) -> str:
    """SQL that is true unless the row `alias` of `table`, which the statement locks, is a newer
    version than its snapshot saw. On PostgreSQL a statement that waits for a row lock goes on with
    the row's newest version, but its subqueries keep the older snapshot: then they must be read
    again. On SQLite nothing changes under a statement (one writer, whose lock comes first)."""
    if is_sqlite():
        return "1"
    return f"{alias}.xmin = (SELECT snapshot.xmin FROM {table} snapshot WHERE snapshot.id = {alias}.id)"


def greatest(*expressions: str) -> str:
    """SQL for the largest of `expressions`: SQLite's max() of several arguments is PostgreSQL's GREATEST()."""
    return f"{'max' if is_sqlite() else 'GREATEST'}({', '.join(expressions)})"


def advisory_lock_try(namespace: int, key: int) -> bool:
    """Take a session advisory lock without waiting: whether this session now holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, key])
        return cursor.fetchone()[0]


def advisory_unlock(namespace: int, key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, key])


def advisory_locks_held(namespace: int) -> list[int]:
    """The keys in `namespace` whose advisory lock some session of this database holds."""
    with connection.cursor() as cursor:
        # Two-key advisory locks show as classid = key 1, objid = key 2, objsubid = 2.
        cursor.execute(
            """
            SELECT objid::bigint FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid::bigint = %s
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            [namespace],
        )
        return [row[0] for row in cursor.fetchall()]


def update_without_waiting(rows: QuerySet, values: dict) -> None:
    """UPDATE `rows`, raising OperationalError rather than waiting for a lock another holds.

    On PostgreSQL the rows are locked with NOWAIT first. On SQLite the UPDATE is one statement in
    autocommit with no busy timeout: it fails at once when another connection holds the database's
    write lock. No explicit transaction there: a BEGIN IMMEDIATE refused without waiting was seen to
    leave other connections waiting out their whole busy timeout.
    """
    if not is_sqlite():
        with transaction.atomic():
            if rows.select_for_update(nowait=True).exists():
                rows.update(**values)
        return
    waits_ms = int(connection.settings_dict.get("OPTIONS", {}).get("timeout", 5) * 1000)
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout = 0")
    try:
        rows.update(**values)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {waits_ms}")

