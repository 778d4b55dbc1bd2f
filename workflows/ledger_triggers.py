"""The ledger's triggers on SQLite, put back after every `migrate`.

SQLite cannot alter most of a table in place, so a migration that changes the ledger's columns makes
Django copy it into a new table and drop the old one, and the old table's triggers go with it.
Migration 0005 creates them; this puts them back after any later migration rebuilt the table.
PostgreSQL alters tables in place and keeps its triggers (also made by migration 0005).
"""

from django.db import connections

LEDGER = "workflows_ledgerentry"
DAILY = "workflows_teamdailyspend"

# As in migration 0005: SQLite stores created_at as UTC text, and adds decimals as floats, so the
# sum is rounded as budgets.add rounds. No DELETE guard: Django's test flush deletes rows there.
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER IF NOT EXISTS workflows_ledger_daily_spend AFTER INSERT ON {LEDGER}
    BEGIN
        INSERT INTO {DAILY} (team_id, day, spent_usd)
        VALUES (NEW.team_id, date(NEW.created_at), COALESCE(NEW.cost_usd, 0))
        ON CONFLICT (team_id, day) DO UPDATE SET spent_usd = round(spent_usd + excluded.spent_usd, 6);
    END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS workflows_ledger_no_update BEFORE UPDATE ON {LEDGER}
    BEGIN SELECT RAISE(ABORT, 'Ledger entries are append-only.'); END
    """,
]


def ensure_ledger_triggers(*, using: str = "default", **kwargs) -> None:
    """A post_migrate receiver: on SQLite, once the ledger and its daily sums exist."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    tables = connection.introspection.table_names()
    if LEDGER not in tables or DAILY not in tables:
        return
    with connection.cursor() as cursor:
        for statement in SQLITE_TRIGGERS:
            cursor.execute(statement)
