"""An install upgraded from the release that shipped its own list prices: the rows it loaded from
that list become list prices, which genai-prices' table supersedes; an operator's rows stay local."""

from datetime import date
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("workflows", "0015_waiting_for_input")]
AFTER = [("workflows", "0016_price_source")]


@pytest.mark.django_db(transaction=True)
def test_rows_of_the_old_shipped_list_become_list_prices_and_the_operators_stay_local():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    Price = executor.loader.project_state(BEFORE).apps.get_model("workflows", "Price")
    shipped = {"input_per_mtok": Decimal("3.00"), "cached_input_per_mtok": Decimal("0.30"),
               "cache_write_per_mtok": Decimal("3.75"), "output_per_mtok": Decimal("15.00"), "max_output_tokens": 64000}  # fmt: skip
    Price.objects.create(model="claude-sonnet-4-5", valid_from=date(2025, 9, 29), **shipped)
    # The same model and date at another rate: an operator changed it.
    Price.objects.create(model="claude-sonnet-4", valid_from=date(2025, 5, 22), **{**shipped, "input_per_mtok": Decimal("2")})
    Price.objects.create(model="house-model", valid_from=date(2025, 1, 1), input_per_mtok=1, output_per_mtok=1)

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    Price = executor.loader.project_state(AFTER).apps.get_model("workflows", "Price")

    assert dict(Price.objects.values_list("model", "source")) == {
        "claude-sonnet-4-5": "list",
        "claude-sonnet-4": "local",
        "house-model": "local",
    }
    MigrationExecutor(connection).migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
