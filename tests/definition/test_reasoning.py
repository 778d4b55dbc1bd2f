"""How much of a step's output cap thinking may use: the cap the gate prices holds the thinking, and
the thinking budget Anthropic is sent always fits inside it."""

from dataclasses import replace
from decimal import Decimal

import pytest

from workflows.definition import (
    REASONING_EFFORTS,
    TemplateFailure,
    UnitPrices,
    load_definition,
    output_cap,
    rendered_choice,
    thinking_budget,
)
from workflows.definition.reasoning import MIN_REASONING_CAP, MIN_THINKING_TOKENS, THINKING_TOKENS


def test_the_thinking_budgets_are_conductors():
    assert THINKING_TOKENS == {"low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768, "max": 59904}
    assert tuple(THINKING_TOKENS) == REASONING_EFFORTS


@pytest.mark.parametrize(
    ("effort", "cap", "budget"),
    [
        ("high", 16384 + 4096, 16384),  # the default cap: the level's budget, 4,096 left for the answer
        ("max", 64000, 59904),
        ("high", 100_000, 16384),  # a bigger cap does not think more than the level says
        ("high", 10_000, 5904),  # a smaller one keeps the answer its 4,096
        ("low", 6000, 2048),
        ("low", 4000, 2000),  # below twice 4,096: half the cap for the answer
        ("max", 2048, 1024),  # the least cap of a step that reasons: Anthropic's least thinking
    ],
)
def test_the_thinking_budget_is_the_levels_fitted_inside_the_cap_with_room_for_the_answer(effort, cap, budget):
    assert thinking_budget(effort, cap) == budget


@pytest.mark.parametrize("effort", REASONING_EFFORTS)
@pytest.mark.parametrize("cap", [MIN_REASONING_CAP, MIN_REASONING_CAP + 1, 5000, 8191, 8192, 12_289, 64_000, 1_000_000])
def test_the_thinking_budget_is_always_below_the_cap_and_never_below_anthropics_least(effort, cap):
    budget = thinking_budget(effort, cap)

    assert MIN_THINKING_TOKENS <= budget < cap
    assert budget <= THINKING_TOKENS[effort]


def agent(max_tokens: int | None = None):
    source = {"workflow": {"name": "w", "entry_point": "a"}, "agents": [{"name": "a", "model": "m", "prompt": "hi"}]}
    return replace(load_definition(source, provider_routes={"copilot": "openai"}).agent("a"), max_tokens=max_tokens)


@pytest.mark.parametrize(
    ("max_tokens", "model_max_output", "effort", "expected"),
    [
        (None, None, "high", 4096 + 16384),  # the default allowance, and the level's thinking on top
        (None, 64000, "max", 64000),
        (None, 32000, "xhigh", 32000),  # lowered to what the model can write
        (None, 64000, None, 4096),  # no reasoning: as before
        (3000, 64000, "max", 3000),  # the agent's (or runtime's) own cap holds the thinking too
    ],
)
def test_a_step_that_reasons_is_capped_with_room_for_its_thinking(max_tokens, model_max_output, effort, expected):
    prices = UnitPrices(Decimal("3"), Decimal("15"), max_output_tokens=model_max_output)

    assert output_cap(agent(max_tokens), prices, default=4096, effort=effort) == expected


def test_a_rendered_value_must_be_one_of_the_choices_as_conductor_strips_it():
    assert rendered_choice(" high\n", REASONING_EFFORTS, where="agent 'a' reasoning.effort") == "high"

    for text in ("ultra", "", "HIGH"):
        with pytest.raises(TemplateFailure) as caught:
            rendered_choice(text, REASONING_EFFORTS, where="agent 'a' reasoning.effort")
        assert str(caught.value) == (
            f"template agent 'a' reasoning.effort failed: rendered {text!r}, which is not one of low, medium, high, xhigh, max"
        )
