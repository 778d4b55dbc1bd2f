"""Public list prices from genai-prices' bundled table: exact Decimals, dated history, names checked."""

import socket
from datetime import date
from decimal import Decimal

import pytest

from workflows.services.list_prices import FIRST_PRICE_FROM, ListPriceError, list_prices


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The table is read from the installed package: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("genai-prices tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_rates_come_as_exact_decimals_with_every_kind_this_service_bills():
    [period] = list_prices(provider="anthropic", model="claude-sonnet-4-5", aliases=[])

    assert period.valid_from == FIRST_PRICE_FROM
    assert all(type(rate) is Decimal for rate in period.rates.values())
    # Long-context tiers are taken at their base: the rates of a prompt under 200k tokens.
    assert period.rates == {
        "input_per_mtok": Decimal("3"),
        "output_per_mtok": Decimal("15"),
        "cached_input_per_mtok": Decimal("0.3"),
        "cache_write_per_mtok": Decimal("3.75"),
    }


def test_a_model_without_a_cache_write_charge_has_none():
    [period] = list_prices(provider="openai", model="gpt-5.2", aliases=["gpt-5-2", "gpt-5.2-2025-12-11"])

    assert period.rates["cache_write_per_mtok"] is None
    assert (period.rates["input_per_mtok"], period.rates["output_per_mtok"]) == (Decimal("1.75"), Decimal("14"))


def test_a_price_change_is_a_dated_period_after_the_first():
    periods = list_prices(provider="openai", model="o3", aliases=[])

    assert [(period.valid_from, period.rates["input_per_mtok"], period.rates["output_per_mtok"]) for period in periods] == [
        (FIRST_PRICE_FROM, Decimal("10"), Decimal("40")),
        (date(2025, 6, 10), Decimal("2"), Decimal("8")),
    ]


def test_conductors_dotted_and_dated_names_are_the_same_model_to_genai_prices():
    assert list_prices(
        provider="anthropic", model="claude-haiku-4-5", aliases=["claude-haiku-4.5", "claude-haiku-4-5-20251001"]
    )


def test_a_name_genai_prices_knows_as_another_model_is_never_listed_as_an_alias():
    with pytest.raises(ListPriceError, match="'claude-haiku-4.5' as 'claude-haiku-4-5', not as 'claude-sonnet-4-5'"):
        list_prices(provider="anthropic", model="claude-sonnet-4-5", aliases=["claude-haiku-4.5"])


def test_a_model_genai_prices_does_not_have_is_named():
    with pytest.raises(ListPriceError, match="no model 'llama3.1' at provider 'openai'"):
        list_prices(provider="openai", model="llama3.1", aliases=[])
