from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0027_event_request_id"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(fields=["team", "-id"], name="ledger_team_newest"),
        ),
    ]
