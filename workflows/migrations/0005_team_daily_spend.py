"""Team spend per UTC day, kept by a trigger on the ledger, and the ledger made append-only in the database."""

from decimal import Decimal

import django.db.models.deletion
from django.db import migrations, models

LEDGER = "workflows_ledgerentry"
DAILY = "workflows_teamdailyspend"

POSTGRESQL = [
    # No entry may be inserted between the backfill and the trigger's creation.
    f"LOCK TABLE {LEDGER} IN SHARE ROW EXCLUSIVE MODE",
    f"""
    INSERT INTO {DAILY} (team_id, day, spent_usd)
    SELECT team_id, (created_at AT TIME ZONE 'UTC')::date, COALESCE(SUM(cost_usd), 0)
    FROM {LEDGER} GROUP BY 1, 2
    """,
    f"""
    CREATE FUNCTION workflows_ledger_daily_spend() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- Once per statement, over the rows it inserted: a COPY of a million entries updates each
        -- (team, day) row once, not a million times.
        INSERT INTO {DAILY} (team_id, day, spent_usd)
        SELECT team_id, (created_at AT TIME ZONE 'UTC')::date, COALESCE(SUM(cost_usd), 0)
        FROM inserted GROUP BY 1, 2
        ON CONFLICT (team_id, day) DO UPDATE SET spent_usd = {DAILY}.spent_usd + EXCLUDED.spent_usd;
        RETURN NULL;
    END
    $$
    """,
    f"""
    CREATE TRIGGER workflows_ledger_daily_spend AFTER INSERT ON {LEDGER}
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION workflows_ledger_daily_spend()
    """,
    """
    CREATE FUNCTION workflows_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'Ledger entries are append-only.';
    END
    $$
    """,
    f"""
    CREATE TRIGGER workflows_ledger_append_only BEFORE UPDATE OR DELETE ON {LEDGER}
    FOR EACH ROW EXECUTE FUNCTION workflows_ledger_append_only()
    """,
]
POSTGRESQL_REVERSE = [
    f"DROP TRIGGER workflows_ledger_append_only ON {LEDGER}",
    "DROP FUNCTION workflows_ledger_append_only()",
    f"DROP TRIGGER workflows_ledger_daily_spend ON {LEDGER}",
    "DROP FUNCTION workflows_ledger_daily_spend()",
]

# SQLite stores created_at as UTC text, and adds decimals as floats: rounded as budgets.add does.
# No DELETE guard there: Django's test flush empties SQLite tables with DELETE (TRUNCATE elsewhere).
SQLITE = [
    f"""
    INSERT INTO {DAILY} (team_id, day, spent_usd)
    SELECT team_id, date(created_at), round(COALESCE(SUM(cost_usd), 0), 6) FROM {LEDGER} GROUP BY 1, 2
    """,
    f"""
    CREATE TRIGGER workflows_ledger_daily_spend AFTER INSERT ON {LEDGER}
    BEGIN
        INSERT INTO {DAILY} (team_id, day, spent_usd)
        VALUES (NEW.team_id, date(NEW.created_at), COALESCE(NEW.cost_usd, 0))
        ON CONFLICT (team_id, day) DO UPDATE SET spent_usd = round(spent_usd + excluded.spent_usd, 6);
    END
    """,
    f"""
    CREATE TRIGGER workflows_ledger_no_update BEFORE UPDATE ON {LEDGER}
    BEGIN SELECT RAISE(ABORT, 'Ledger entries are append-only.'); END
    """,
]
SQLITE_REVERSE = [
    "DROP TRIGGER workflows_ledger_no_update",
    "DROP TRIGGER workflows_ledger_daily_spend",
]


def _run(statements: dict[str, list[str]]):
    def run(apps, schema_editor):
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("workflows", "0004_step_groups_and_branches")]

    operations = [
        migrations.CreateModel(
            name="TeamDailySpend",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField(help_text="UTC date of the ledger entries' created_at.")),
                (
                    "spent_usd",
                    models.DecimalField(
                        decimal_places=6,
                        default=Decimal("0"),
                        help_text="Sum of their cost_usd; unpriced entries add nothing.",
                        max_digits=18,
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="daily_spend", to="workflows.team"
                    ),
                ),
            ],
            options={
                "ordering": ["team", "day"],
                "constraints": [models.UniqueConstraint(fields=("team", "day"), name="team_daily_spend_unique_day")],
            },
        ),
        migrations.RunPython(
            _run({"postgresql": POSTGRESQL, "sqlite": SQLITE}),
            _run({"postgresql": POSTGRESQL_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
