"""Once installed the PL/pgSQL step functions; they restated the gate in SQL and are gone.

The step transaction has one implementation, in Python (workflows/services/steps/). Databases that
applied the original of this migration have the functions dropped by 0011_drop_step_functions.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("workflows", "0007_provider_retries_and_credentials")]

    operations = []
