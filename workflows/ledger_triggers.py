"""The ledger's triggers on SQLite, put back after every `migrate`.

SQLite cannot alter most of a table in place, so a migration that changes the ledger's columns makes
Django copy it into a new table and drop the old one, and the old table's triggers go with it.
Migration 0005 creates them; this puts them back after any later migration rebuilt the table.
PostgreSQL alters tables in place and keeps its triggers (also made by migration 0005).

The money guards are SQLite's half of a rule PostgreSQL keeps by itself: a money value that does not fit
numeric(18, 6) is never stored. PostgreSQL refuses it on write; SQLite would store it, as a float, and
Django's converter could then never read it back, so every list showing the row would answer 500 for good.
A float keeps 15 significant digits, so the guard refuses from $999,999,999,999 (every input is bounded
far below it: workflows/definition/bounds.py).
"""

from django.apps import apps
from django.db import connections, models

from workflows import dialect

LEDGER = "workflows_ledgerentry"
DAILY = "workflows_teamdailyspend"

# As in migrations 0005 and 0025: SQLite stores booked_at as UTC text, and adds decimals as floats,
# so the sum is rounded as budgets.add rounds. No DELETE guard: Django's test flush deletes rows there.
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER IF NOT EXISTS workflows_ledger_daily_spend AFTER INSERT ON {LEDGER}
    BEGIN
        INSERT INTO {DAILY} (team_id, day, spent_usd)
        VALUES (NEW.team_id, date(NEW.booked_at), COALESCE(NEW.cost_usd, 0))
        ON CONFLICT (team_id, day) DO UPDATE SET spent_usd = round(spent_usd + excluded.spent_usd, 6);
    END
    """,
    f"""
    CREATE TRIGGER IF NOT EXISTS workflows_ledger_no_update BEFORE UPDATE ON {LEDGER}
    BEGIN SELECT RAISE(ABORT, 'Ledger entries are append-only.'); END
    """,
]


# The largest amount SQLite stores and reads back: a float rounded to 15 digits must still fit 18 digits.
SQLITE_MONEY_MAX = "999999999998.999999"


def money_guard_triggers() -> list[str]:
    """For each table with money columns, triggers refusing an insert or update that would not fit them."""
    statements = []
    for model in apps.get_app_config("workflows").get_models():
        columns = [field.column for field in model._meta.concrete_fields if isinstance(field, models.DecimalField)]
        if not columns:
            continue
        table = model._meta.db_table
        too_large = " OR ".join(f"abs(NEW.{column}) > {SQLITE_MONEY_MAX}" for column in columns)
        for operation in ("INSERT", "UPDATE"):
            statements.append(
                f"""
                CREATE TRIGGER IF NOT EXISTS {table}_money_fits_{operation.lower()} BEFORE {operation} ON {table}
                WHEN {too_large}
                BEGIN SELECT RAISE(ABORT, 'A money amount is too large for its column.'); END
                """
            )
    return statements


def ensure_ledger_triggers(*, using: str = "default", **kwargs) -> None:
    """A post_migrate receiver: on SQLite, once the ledger and its daily sums exist."""
    connection = connections[using]
    if not dialect.is_sqlite(connection):
        return
    tables = connection.introspection.table_names()
    if LEDGER not in tables or DAILY not in tables:
        return
    with connection.cursor() as cursor:
        for statement in [*SQLITE_TRIGGERS, *money_guard_triggers()]:
            cursor.execute(statement)
