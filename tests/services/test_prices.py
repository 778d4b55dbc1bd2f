import json
from datetime import date
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings

from tests.providers.conftest import drive
from workflows.definition import UnitPrices
from workflows.errors import ValidationFailed
from workflows.models import LedgerEntry, Price
from workflows.services import prices
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

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


# The names conductor's example workflows use for OpenAI and Anthropic models, in both its dotted
# and dashed forms, and the dated snapshots the providers answer with.
CONDUCTOR_NAMES = {
    "gpt-5.2": ("1.75", "14"),
    "gpt-5-2": ("1.75", "14"),
    "gpt-5": ("1.25", "10"),
    "gpt-5.1": ("1.25", "10"),
    "gpt-5-mini": ("0.25", "2"),
    "gpt-5.5": ("5", "30"),
    "gpt-4.1": ("2", "8"),
    "gpt-4.1-mini": ("0.4", "1.6"),
    "gpt-4.1-nano": ("0.1", "0.4"),
    "gpt-4.1-2025-04-14": ("2", "8"),
    "gpt-4o": ("2.5", "10"),
    "gpt-4o-mini": ("0.15", "0.6"),
    "claude-sonnet-4-5": ("3", "15"),
    "claude-sonnet-4.5": ("3", "15"),
    "claude-sonnet-4-5-20250929": ("3", "15"),
    "claude-haiku-4.5": ("1", "5"),
    "claude-haiku-4-5": ("1", "5"),
    "claude-haiku-4-5-20251001": ("1", "5"),
    "claude-opus-4.5": ("5", "25"),
    "claude-opus-4.6": ("5", "25"),
    "claude-opus-4.6-1m": ("5", "25"),
    "claude-opus-4.8": ("5", "25"),
    "claude-opus-4-1": ("15", "75"),
    "claude-sonnet-4.6": ("3", "15"),
}


@pytest.fixture
def shipped(db):
    return prices.prices_load(path=settings.PRICES_FILE)


@pytest.mark.parametrize("name", CONDUCTOR_NAMES)
def test_conductors_common_model_names_are_priced_out_of_the_box(shipped, name):
    table, source = prices_for(model=name, pricing={}, on=date(2026, 12, 1))

    assert source == "table"
    assert (table.input_per_mtok, table.output_per_mtok) == tuple(Decimal(rate) for rate in CONDUCTOR_NAMES[name])


def test_the_shipped_table_is_genai_prices_list_with_its_history(shipped):
    assert shipped.local_rows == 0 and shipped.rows == Price.objects.count() > 20
    assert set(Price.objects.values_list("source", flat=True)) == {"list"}
    # A price that changed is charged by the date the step runs, and the older price is kept.
    assert prices_for(model="o3", pricing={}, on=date(2025, 6, 9))[0].output_per_mtok == Decimal("40")
    assert prices_for(model="o3-2025-04-16", pricing={}, on=date(2025, 6, 10))[0].output_per_mtok == Decimal("8")
    # The most output a model can write comes from the prices file, which genai-prices does not give.
    assert prices_for(model="claude-sonnet-4.5", pricing={})[0].max_output_tokens == 64000
    # Only listed names: never a name by prefix, as genai-prices' own matching would.
    assert prices_for(model="claude-sonnet-4-5-20990101", pricing={}) == (None, "")


def test_loading_again_changes_nothing(shipped):
    before = list(Price.objects.order_by("pk").values())
    again = prices.prices_load(path=settings.PRICES_FILE)

    assert again.rows == shipped.rows
    assert list(Price.objects.order_by("pk").values()) == before


def write_prices(tmp_path, data: dict):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))
    return path


def test_a_local_override_wins_over_every_list_price_of_its_model_even_a_newer_one(shipped, tmp_path):
    negotiated = {"model": "o3", "input_per_mtok": "9", "output_per_mtok": "30", "valid_from": "2025-01-01"}
    loaded = prices.prices_load(path=write_prices(tmp_path, {"prices": [negotiated]}))

    assert loaded.local_rows == 1
    # The list's $2/$8 from 2025-06-10 is newer, but the operator's price is the one charged.
    for on in (date(2025, 1, 1), date(2025, 7, 1), date(2026, 12, 1)):
        assert prices_for(model="o3-2025-04-16", pricing={}, on=on)[0].output_per_mtok == Decimal("30")
    # Before the override took effect, the list price of the day.
    assert prices_for(model="o3", pricing={}, on=date(2024, 12, 31))[0].output_per_mtok == Decimal("40")


def test_reloading_the_list_never_overwrites_a_local_row(shipped, tmp_path):
    # An operator's row (from the admin) at the same model and date as a list row.
    Price.objects.filter(model="gpt-4o").update(input_per_mtok=Decimal("2"), source="local")

    loaded = prices.prices_load(path=settings.PRICES_FILE)

    assert loaded.list_rows_kept_local == 1
    assert Price.objects.get(model="gpt-4o").input_per_mtok == Decimal("2")
    assert prices_for(model="gpt-4o-2024-08-06", pricing={})[0].input_per_mtok == Decimal("2")


def test_a_row_added_in_the_admin_is_a_local_override():
    assert Price().source == "local"


def test_a_file_that_lists_a_name_genai_prices_knows_as_another_model_loads_nothing(shipped, tmp_path):
    path = write_prices(
        tmp_path,
        {"genai_prices": {"anthropic": {"claude-sonnet-4-5": {"aliases": ["claude-haiku-4-5"]}}}, "prices": []},
    )
    before = Price.objects.count()

    with pytest.raises(ValidationFailed, match="'claude-haiku-4-5' as 'claude-haiku-4-5', not as 'claude-sonnet-4-5'"):
        prices.prices_load(path=path)
    assert Price.objects.count() == before


O3_YAML = """
workflow:
  name: dated
  entry_point: a
  runtime: {provider: fake, default_model: o3, max_tokens: 100}
agents:
  - name: a
    prompt: "Go."
    mock: {output: {ok: true}, input_tokens: 1000, output_tokens: 100}
"""


@pytest.mark.parametrize(("day", "rates", "cost"), [
    ("2025-06-09", ("10", "40"), "0.014000"),  # 1,000 x $10 + 100 x $40, per 1M
    ("2025-06-10", ("2", "8"), "0.002800"),
])  # fmt: skip
def test_a_step_is_charged_the_price_in_force_on_the_day_it_runs(shipped, team, day, rates, cost):
    workflow_create(team=team, definition=O3_YAML)
    with time_machine.travel(date.fromisoformat(day), tick=True):
        run = drive(run_start(team=team, workflow="dated"))

    assert run.status == "completed", run.error
    entry = LedgerEntry.objects.get(run=run)
    assert (entry.input_per_mtok, entry.output_per_mtok, entry.price_source) == (*map(Decimal, rates), "table")
    assert entry.cost_usd == run.spent_usd == Decimal(cost)


@pytest.mark.parametrize(("genai_prices", "message"), [
    ({"openai": {"gpt-4o": "cheap"}}, "genai_prices.openai.gpt-4o must be a mapping"),
    ({"openai": ["gpt-4o"]}, "genai_prices.openai must map model names"),
    ({"openai": {"gpt-4o": {"aliases": "gpt-4o-2024-08-06"}}}, "genai_prices.openai.gpt-4o.aliases must be a list"),
    ({"openai": {"gpt-4o": {"max_output_tokens": 0}}}, "max_output_tokens must be a whole number >= 1"),
])  # fmt: skip
def test_a_malformed_genai_prices_entry_is_refused_naming_it(db, tmp_path, genai_prices, message):
    with pytest.raises(ValidationFailed, match=message):
        prices.prices_load(path=write_prices(tmp_path, {"genai_prices": genai_prices, "prices": []}))
    assert not Price.objects.exists()
