from decimal import Decimal

import pytest

from workflows.definition import MONEY_PLACES, UnitPrices, cost_usd, estimate_usd, to_money

GPT = UnitPrices(input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10"), cached_input_per_mtok=Decimal("1.25"))


@pytest.mark.parametrize(
    ("prices", "tokens", "expected"),
    [
        (UnitPrices(Decimal("1"), Decimal("300")), (0, 1000, 0), "0.300000"),
        (GPT, (1000, 500, 0), "0.007500"),
        (GPT, (1000, 500, 400), "0.007000"),  # 600 at 2.5 + 400 cached at 1.25 + 500 at 10
        (UnitPrices(Decimal("2.5"), Decimal("10")), (1000, 0, 400), "0.002500"),  # no cached price: input price
        (UnitPrices(Decimal("0.5"), Decimal("0")), (1, 0, 0), "0.000001"),  # 0.0000005 rounds half up
        (UnitPrices(Decimal("0.4"), Decimal("0")), (1, 0, 0), "0.000000"),
    ],
)
def test_cost_is_exact(prices, tokens, expected):
    input_tokens, output_tokens, cached = tokens

    cost = cost_usd(prices=prices, input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached)

    assert cost == Decimal(expected)
    assert cost.as_tuple().exponent == MONEY_PLACES.as_tuple().exponent


@pytest.mark.parametrize(
    ("prices", "input_tokens", "max_output_tokens", "expected"),
    [
        (GPT, 1000, 4096, "0.043460"),
        (UnitPrices(Decimal("0.1"), Decimal("0")), 1, 0, "0.000001"),  # 0.0000001 rounds up, never down
        (UnitPrices(Decimal("0"), Decimal("0")), 10, 10, "0.000000"),
    ],
)
def test_estimate_rounds_up(prices, input_tokens, max_output_tokens, expected):
    assert estimate_usd(prices=prices, input_tokens=input_tokens, max_output_tokens=max_output_tokens) == Decimal(
        expected
    )


@pytest.mark.parametrize(
    "tokens",
    [{"input_tokens": -1, "output_tokens": 0}, {"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": 11}],
)
def test_impossible_token_counts_are_refused(tokens):
    with pytest.raises(ValueError):
        cost_usd(prices=GPT, **tokens)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2.50", "2.500000"),
        (5, "5.000000"),
        (0.1, "0.100000"),
        (Decimal("1.0000005"), "1.000001"),
        (" 3 ", "3.000000"),
        ("-3", "-3.000000"),  # the sign is the caller's business
    ],
)
def test_to_money(value, expected):
    assert to_money(value) == Decimal(expected)
    assert str(to_money(value)) == expected


@pytest.mark.parametrize("value", [True, None, "abc", "", "NaN", "inf", float("nan"), float("-inf"), [1], "1e999999"])
def test_to_money_refuses_non_amounts(value):
    with pytest.raises(ValueError):
        to_money(value)
