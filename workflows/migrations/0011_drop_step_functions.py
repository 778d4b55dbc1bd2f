"""Drop the PL/pgSQL step functions an earlier 0008 installed: the step transaction is Python's alone."""

from django.db import migrations

DROP = """
DROP FUNCTION IF EXISTS workflows_step_settle(bigint, integer, bigint, timestamptz, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb);
DROP FUNCTION IF EXISTS workflows_step_admit(bigint, numeric, text, text, bigint, timestamptz);
DROP FUNCTION IF EXISTS workflows_period_bounds(text, timestamptz);
"""


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("workflows", "0010_price_overrides_usage_rejected")]

    # Not reversible into anything: no code calls the functions any more.
    operations = [migrations.RunPython(drop, migrations.RunPython.noop)]
