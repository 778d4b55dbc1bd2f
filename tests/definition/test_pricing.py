from dataclasses import replace
from decimal import Decimal

import pytest

from workflows.definition import (
    MONEY_PLACES,
    DefinitionError,
    UnitPrices,
    WorkflowDefinition,
    cost_usd,
    estimate_usd,
    load_definition,
    output_cap,
    to_money,
    usage_problem,
    worst_case_counts,
)

ROUTED = {"copilot": "openai"}  # workflows that name no provider take conductor's default, copilot
GPT = UnitPrices(input_per_mtok=Decimal("2.5"), output_per_mtok=Decimal("10"), cached_input_per_mtok=Decimal("1.25"))


@pytest.mark.parametrize(
    ("prices", "tokens", "expected"),
    [
        (UnitPrices(Decimal("1"), Decimal("300")), (0, 1000, 0), "0.300000"),
        (GPT, (1000, 500, 0), "0.007500"),
        (GPT, (600, 500, 400), "0.007000"),  # 600 uncached at 2.5 + 400 cached at 1.25 + 500 at 10
        (UnitPrices(Decimal("2.5"), Decimal("10")), (600, 0, 400), "0.002500"),  # no cached price: input price
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
    [
        {"input_tokens": -1, "output_tokens": 0},
        {"input_tokens": 10, "output_tokens": 0, "cached_input_tokens": -1},
        {"input_tokens": 10, "output_tokens": 0, "cache_write_tokens": -1},
    ],
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


CLAUDE = UnitPrices(
    input_per_mtok=Decimal("3"),
    output_per_mtok=Decimal("15"),
    cached_input_per_mtok=Decimal("0.30"),
    cache_write_per_mtok=Decimal("3.75"),
)


def test_each_kind_of_token_is_billed_once_at_its_own_rate():
    # Anthropic's counts: 1,000 uncached input, 2,000 written to the cache, 10,000 read from it, 500 out.
    cost = cost_usd(
        prices=CLAUDE, input_tokens=1000, cache_write_tokens=2000, cached_input_tokens=10_000, output_tokens=500
    )
    assert cost == Decimal("0.003") + Decimal("0.0075") + Decimal("0.003") + Decimal("0.0075")


def test_unlisted_cache_rates_are_never_billed_below_the_truth():
    # A cache read without its own rate costs what uncached input costs (every provider discounts reads).
    no_cache_rates = UnitPrices(input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"))
    assert cost_usd(prices=no_cache_rates, input_tokens=0, output_tokens=0, cached_input_tokens=1_000_000) == Decimal("3")
    # A cache write without its own rate costs twice the input rate, the highest listed premium.
    assert cost_usd(prices=no_cache_rates, input_tokens=0, output_tokens=0, cache_write_tokens=1_000_000) == Decimal("6")
    # Neither is ever free.
    assert cost_usd(prices=no_cache_rates, input_tokens=0, output_tokens=0, cache_write_tokens=1) > 0


def test_the_estimate_takes_input_at_the_dearest_listed_input_rate():
    # Any input may be written to the cache, at 3.75 rather than 3.
    assert estimate_usd(prices=CLAUDE, input_tokens=1_000_000, max_output_tokens=0) == Decimal("3.75")
    # No listed write rate (OpenAI's free automatic caching): the input rate.
    assert estimate_usd(prices=GPT, input_tokens=1_000_000, max_output_tokens=0) == Decimal("2.5")


@pytest.mark.parametrize(
    ("agent_max_tokens", "model_max_output", "default", "expected"),
    [
        (100, 16384, 4096, 100),  # the agent's (or the runtime's) max_tokens, whatever the model's
        (20000, 16384, 4096, 20000),
        (None, 64000, 4096, 4096),  # else the default allowance, not the model's whole output
        (None, 2048, 4096, 2048),  # lowered to a model that cannot write that much
        (None, None, 1024, 1024),
    ],
)
def test_the_output_cap_is_the_agents_else_the_default_allowance_within_the_models_maximum(
    agent_max_tokens, model_max_output, default, expected
):
    agent = load_definition(
        {"workflow": {"name": "w", "entry_point": "a"}, "agents": [{"name": "a", "model": "m", "prompt": "hi"}]},
        provider_routes=ROUTED,
    ).agent("a")
    agent = replace(agent, max_tokens=agent_max_tokens)
    prices = UnitPrices(Decimal("1"), Decimal("1"), max_output_tokens=model_max_output)
    assert output_cap(agent, prices, default=default) == expected
    assert output_cap(agent, None, default=default) == (agent_max_tokens or default)


def test_the_runtime_max_tokens_applies_when_the_agent_has_none():
    definition = load_definition(
        {
            "workflow": {"name": "w", "entry_point": "a", "runtime": {"max_tokens": 300}},
            "agents": [{"name": "a", "model": "m", "prompt": "hi"}, {"name": "b", "model": "m", "prompt": "hi", "max_tokens": 7}],
        },
        provider_routes=ROUTED,
    )
    assert output_cap(definition.agent("a"), UnitPrices(Decimal("1"), Decimal("1"), max_output_tokens=9000), default=4096) == 300
    assert output_cap(definition.agent("b"), None, default=4096) == 7


def test_cost_pricing_takes_conductors_cache_rate_names():
    definition = load_definition(
        {
            "workflow": {
                "name": "w",
                "entry_point": "a",
                "cost": {
                    "pricing": {
                        "claude-x": {
                            "input_per_mtok": 3,
                            "output_per_mtok": 15,
                            "cache_read_per_mtok": "0.3",
                            "cache_write_per_mtok": 3.75,
                        },
                        "gpt-x": {"input_per_mtok": 2.5, "output_per_mtok": 10, "cached_input_per_mtok": 1.25},
                    }
                },
            },
            "agents": [{"name": "a", "model": "claude-x", "prompt": "hi"}],
        },
        provider_routes=ROUTED,
    )
    assert definition.pricing["claude-x"] == CLAUDE
    assert definition.pricing["gpt-x"] == GPT
    assert WorkflowDefinition.from_dict(definition.to_dict()) == definition


def test_both_names_of_the_cache_read_rate_at_once_is_a_problem():
    with pytest.raises(DefinitionError) as caught:
        load_definition(
            {
                "workflow": {
                    "name": "w",
                    "entry_point": "a",
                    "cost": {"pricing": {"m": {"input_per_mtok": 1, "output_per_mtok": 1, "cache_read_per_mtok": 1, "cached_input_per_mtok": 1}}},
                },
                "agents": [{"name": "a", "model": "m", "prompt": "hi"}],
            }
        )
    assert caught.value.problems[0].path == "workflow.cost.pricing.m.cached_input_per_mtok"


def priced_definition(pricing: dict, *, provider: str) -> dict:
    return {
        "workflow": {"name": "w", "entry_point": "a", "runtime": {"provider": provider}, "cost": {"pricing": pricing}},
        "agents": [{"name": "a", "model": "m", "prompt": "hi"}],
    }


@pytest.mark.parametrize(
    ("listed", "lower"),
    [
        ({"input_per_mtok": 2.5, "output_per_mtok": 10, "cache_read_per_mtok": 1.25}, []),
        ({"input_per_mtok": 2.4, "output_per_mtok": 10, "cache_read_per_mtok": 1.25}, ["input_per_mtok", "cache_write_per_mtok"]),
        ({"input_per_mtok": 2.5, "output_per_mtok": 10, "cache_read_per_mtok": 1}, ["cache_read_per_mtok"]),
        # Left out, a cache rate is billed at its fallback: 2.5 for reads, 5 for writes, as the table's.
        ({"input_per_mtok": 2.5, "output_per_mtok": 10}, []),
        ({"input_per_mtok": 2.5, "output_per_mtok": 10, "cache_write_per_mtok": 4.99}, ["cache_write_per_mtok"]),
    ],
)
def test_a_real_providers_workflow_may_not_bill_any_rate_below_the_table(listed, lower):
    def table(model):
        return GPT

    try:
        load_definition(priced_definition({"m": listed}, provider="openai"), table_prices=table)
        problems = []
    except DefinitionError as exc:
        problems = exc.problems
    assert [problem.path for problem in problems] == [f"workflow.cost.pricing.m.{key}" for key in lower]


def test_the_fake_and_an_allowed_team_may_price_below_the_table():
    free = {"m": {"input_per_mtok": 0, "output_per_mtok": 0}}
    load_definition(priced_definition(free, provider="fake"), table_prices=lambda model: GPT)
    load_definition(
        priced_definition(free, provider="openai"),
        table_prices=lambda model: GPT,
        may_lower_prices=True,
    )


@pytest.mark.parametrize(
    ("counts", "problem"),
    [
        ((1, 2, 3, 4), None),
        ((10, 0, 0, 0), None),
        ((11, 0, 0, 0), "input_tokens is above 10 tokens"),
        ((5, 6, 0, 0), "the counts add up to more than 10 tokens"),
        ((0, -1, 0, 0), "output_tokens is negative"),
        ((0, 0, True, 0), "cached_input_tokens is not a whole number"),
        ((0, 0, 0, None), "cache_write_tokens is not a whole number"),
        ((0, 0, 0, 1.0), "cache_write_tokens is not a whole number"),
    ],
)
def test_usage_is_billable_only_as_whole_numbers_within_the_bound(counts, problem):
    fields = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens")
    assert usage_problem(dict(zip(fields, counts, strict=True)), max_tokens=10) == problem


@pytest.mark.parametrize(
    ("prices", "kind"),
    [(GPT, "input_tokens"), (CLAUDE, "cache_write_tokens"), (None, "input_tokens")],
)
def test_the_worst_case_bills_input_at_the_dearest_input_rate_and_the_whole_cap(prices, kind):
    counts = worst_case_counts(prices=prices, input_tokens=100, max_output_tokens=4096)

    assert counts == {**dict.fromkeys(("input_tokens", "cached_input_tokens", "cache_write_tokens"), 0), kind: 100, "output_tokens": 4096}
    if prices is not None:
        # Priced as billed, the worst case is the estimate, but for rounding half-up instead of up.
        billed = cost_usd(prices=prices, **counts)
        assert billed <= estimate_usd(prices=prices, input_tokens=100, max_output_tokens=4096) <= billed + MONEY_PLACES
