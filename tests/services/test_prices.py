from datetime import date
from decimal import Decimal

import pytest

from workflows.definition import UnitPrices
from workflows.models import Price
from workflows.services import prices

pytestmark = pytest.mark.django_db


def prices_for(*, model, pricing, provider="openai", may_override_prices=False, on=None):
    return prices.prices_for(
        model=model, pricing=pricing, provider=provider, may_override_prices=may_override_prices, on=on
    )


@pytest.fixture
def price_history(db):
    Price.objects.create(model="m", input_per_mtok=1, output_per_mtok=2, valid_from=date(2025, 1, 1))
    Price.objects.create(model="m", input_per_mtok=3, output_per_mtok=4, valid_from=date(2026, 1, 1))


def test_the_price_in_force_on_a_date_is_used(price_history):
    assert prices_for(model="m", pricing={}, on=date(2025, 6, 1))[0].input_per_mtok == Decimal("1")
    assert prices_for(model="m", pricing={}, on=date(2026, 6, 1))[0].input_per_mtok == Decimal("3")
    assert prices_for(model="m", pricing={}, on=date(2024, 6, 1)) == (None, "")


def test_the_table_wins_for_a_real_provider_unless_the_team_may_override_it(price_history):
    own = UnitPrices(input_per_mtok=Decimal("0"), output_per_mtok=Decimal("0"))
    table, source = prices_for(model="m", pricing={"m": own}, on=date(2026, 6, 1))
    assert (table.input_per_mtok, table.output_per_mtok, source) == (Decimal("3"), Decimal("4"), "table")
    assert prices_for(model="m", pricing={"m": own}, may_override_prices=True) == (own, "workflow")
    assert prices_for(model="m", pricing={"m": own}, provider="fake") == (own, "workflow")


def test_a_workflow_prices_what_the_table_lacks_until_the_table_prices_it(price_history):
    own = UnitPrices(input_per_mtok=Decimal("0"), output_per_mtok=Decimal("0"))
    assert prices_for(model="m", pricing={"m": own}, on=date(2024, 6, 1)) == (own, "workflow")
    assert prices_for(model="new", pricing={"new": own}) == (own, "workflow")


def test_a_similar_model_name_never_borrows_a_price(price_history):
    assert prices_for(model="m-2026-01-01", pricing={}) == (None, "")


def test_a_listed_alias_is_priced_as_its_model_and_the_own_name_wins(price_history):
    from workflows.models import ModelAlias
    from workflows.services.prices import is_priced

    ModelAlias.objects.create(alias="m-2026-01-01", model="m")
    assert prices_for(model="m-2026-01-01", pricing={}, on=date(2026, 6, 1))[0].input_per_mtok == Decimal("3")
    assert is_priced("m-2026-01-01") and not is_priced("m-2026-02-02")

    Price.objects.create(model="m-2026-01-01", input_per_mtok=7, output_per_mtok=7, valid_from=date(2020, 1, 1))
    assert prices_for(model="m-2026-01-01", pricing={}, on=date(2026, 6, 1))[0].input_per_mtok == Decimal("7")


def test_the_table_carries_cache_rates_and_the_models_max_output(db):
    Price.objects.create(
        model="c", input_per_mtok=3, output_per_mtok=15, cached_input_per_mtok="0.3", cache_write_per_mtok="3.75",
        max_output_tokens=64000, valid_from=date(2025, 1, 1),
    )  # fmt: skip
    prices, _ = prices_for(model="c", pricing={})
    assert (prices.cached_input_per_mtok, prices.cache_write_per_mtok, prices.max_output_tokens) == (
        Decimal("0.3"), Decimal("3.75"), 64000,
    )  # fmt: skip
