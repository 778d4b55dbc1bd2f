"""Reasoning effort on the wire: OpenAI's `reasoning_effort`, Anthropic's extended thinking, each
within the output cap the gate priced, and the thinking billed as the output it is."""

import json
from datetime import date
from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, drive, ledger
from tests.providers.wire import anthropic_message, anthropic_stream, anthropic_usage, openai_completion, openai_usage
from workflows.definition import count_tokens
from workflows.models import Price, Run
from workflows.services.credentials import credential_set
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

ANSWER = {"summary": "Budgets hold.", "score": 7}
THOUGHT = {"type": "thinking", "thinking": "The cap holds the thinking too.", "signature": "sig_1"}
TOOL_ANSWER = {"type": "tool_use", "id": "toolu_1", "name": "output", "input": ANSWER}


@pytest.fixture
def reasoning_prices(db):
    Price.objects.create(
        model="o4-mini", input_per_mtok="1.1", cached_input_per_mtok="0.275", output_per_mtok="4.4",
        max_output_tokens=100_000, valid_from=date(2025, 1, 1),
    )  # fmt: skip
    Price.objects.create(
        model="claude-sonnet-4-5", input_per_mtok="3", cached_input_per_mtok="0.3", cache_write_per_mtok="3.75",
        output_per_mtok="15", max_output_tokens=64_000, valid_from=date(2025, 1, 1),
    )  # fmt: skip
    Price.objects.create(
        model="claude-opus-4-1", input_per_mtok="15", output_per_mtok="75", max_output_tokens=32_000,
        valid_from=date(2025, 1, 1),
    )  # fmt: skip


def start(team, wire, *, provider: str, model: str, runtime: str = "", agent: str = "", output: bool = True) -> Run:
    credential_set(
        team=team, provider=provider, api_key=SECRET_KEY_FOR_TESTS, base_url=f"{wire.url}/v1" if provider == "openai" else wire.url
    )
    schema = "    output: {summary: {type: string}, score: {type: integer}}\n" if output else ""
    workflow_create(
        team=team,
        definition=f"""
workflow:
  name: thinker
  entry_point: writer
  runtime: {{provider: {provider}, default_model: {model}, temperature: 0.7{runtime}}}
agents:
  - name: writer
    system_prompt: "Be brief."
    prompt: "Think about budgets."
{agent}{schema}""",
    )
    return run_start(team=team, workflow="thinker", inputs={})


def estimate(prompt_text: str, *, input_rate: str, output_rate: str, max_tokens: int) -> Decimal:
    """The gate's estimate, by hand: the local count of the prompt at the dearest input-side rate, and
    the whole cap at the output rate, per 1M, rounded up."""
    usd = (count_tokens(prompt_text) * Decimal(input_rate) + max_tokens * Decimal(output_rate)) / 1_000_000
    return usd.quantize(Decimal("0.000001"), rounding="ROUND_UP")


def test_openai_is_sent_the_effort_with_no_temperature_within_a_cap_the_estimate_priced(team, wire, reasoning_prices):
    # 300 of the 1,500 output tokens are reasoning, which OpenAI counts (and bills) as output.
    wire.script(openai_completion(json.dumps(ANSWER), openai_usage(prompt=40, completion=1500, reasoning=300)))
    run = drive(start(team, wire, provider="openai", model="o4-mini", runtime=", default_reasoning_effort: medium"))

    assert run.status == "completed", run.error
    sent = wire.received[0].body
    assert sent["reasoning_effort"] == "medium"
    assert "temperature" not in sent  # reasoning models take only their default
    # The default allowance and medium's 8,192 thinking tokens: what is asked for is what is priced.
    assert sent["max_completion_tokens"] == 4096 + 8192
    assert run.steps.get().estimate_usd == estimate(
        "Be brief.Think about budgets.", input_rate="1.1", output_rate="4.4", max_tokens=sent["max_completion_tokens"]
    )
    assert ledger(run)[0][4:6] == (1500, Decimal("0.006644"))  # 40 x $1.10 + 1,500 x $4.40, per 1M
    assert_invariants(run)


@pytest.mark.parametrize("effort", ["low", "medium", "high", "xhigh", "max"])
def test_openai_is_sent_each_of_conductors_levels_by_its_own_name(team, wire, reasoning_prices, effort):
    wire.script(openai_completion(json.dumps(ANSWER), openai_usage(prompt=40, completion=100)))
    drive(start(team, wire, provider="openai", model="o4-mini", agent=f"    reasoning: {{effort: {effort}}}\n"))

    assert wire.received[0].body["reasoning_effort"] == effort


def test_no_effort_sends_no_reasoning_and_keeps_the_temperature(team, wire, reasoning_prices):
    wire.script(openai_completion(json.dumps(ANSWER), openai_usage(prompt=40, completion=100)))
    drive(start(team, wire, provider="openai", model="o4-mini"))

    sent = wire.received[0].body
    assert "reasoning_effort" not in sent and sent["temperature"] == 0.7 and sent["max_completion_tokens"] == 4096


def test_anthropic_thinks_within_the_priced_cap_and_its_thinking_is_billed_as_output(team, wire, reasoning_prices):
    # Anthropic's output count includes the thinking.
    wire.script(anthropic_message([THOUGHT, TOOL_ANSWER], anthropic_usage(input_tokens=40, output_tokens=2500)))
    run = drive(start(team, wire, provider="anthropic", model="claude-sonnet-4-5", agent="    reasoning: {effort: high}\n"))

    assert run.status == "completed", run.error
    assert run.steps.get().output == ANSWER  # the thinking is not the answer
    sent = wire.received[0].body
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert sent["max_tokens"] == 4096 + 16384
    assert "temperature" not in sent  # thinking takes none but the default
    # A forced tool cannot be combined with thinking: the model is offered the one tool.
    assert sent["tool_choice"] == {"type": "auto"} and sent["tools"][0]["name"] == "output"
    # The dearest input-side rate is the cache write's, $3.75.
    assert run.steps.get().estimate_usd == estimate(
        "Be brief.Think about budgets.", input_rate="3.75", output_rate="15", max_tokens=sent["max_tokens"]
    )
    assert ledger(run)[0][4:6] == (2500, Decimal("0.037620"))  # 40 x $3 + 2,500 x $15, per 1M
    assert_invariants(run)


@pytest.mark.parametrize(
    ("agent", "model", "max_tokens", "budget_tokens"),
    [
        # The agent's own cap holds thinking and answer: the thinking is lowered to leave 4,096.
        ("    reasoning: {effort: high}\n    max_tokens: 10000\n", "claude-sonnet-4-5", 10000, 5904),
        # Conductor's max: its whole 64,000-token thinking cap.
        ("    reasoning: {effort: max}\n", "claude-sonnet-4-5", 64000, 59904),
        # A model that writes at most 32,000 tokens: the cap, and the thinking within it.
        ("    reasoning: {effort: xhigh}\n", "claude-opus-4-1", 32000, 27904),
    ],
)
def test_the_thinking_budget_always_fits_the_cap_that_is_sent(team, wire, reasoning_prices, agent, model, max_tokens, budget_tokens):
    wire.script(anthropic_message([THOUGHT, TOOL_ANSWER], anthropic_usage(input_tokens=40, output_tokens=900)))
    run = drive(start(team, wire, provider="anthropic", model=model, agent=agent))

    assert run.status == "completed", run.error
    sent = wire.received[0].body
    assert (sent["max_tokens"], sent["thinking"]["budget_tokens"]) == (max_tokens, budget_tokens)


def test_a_streamed_answer_after_thinking_is_the_answer_alone(team, wire, reasoning_prices):
    wire.script(
        anthropic_stream(
            tool_json_pieces=['{"summary": "Budgets hold.", ', '"score": 7}'],
            thinking_pieces=["The cap ", "holds."],
            start_usage=anthropic_usage(input_tokens=40, output_tokens=1),
            final_output_tokens=1200,
        )
    )
    run = drive(
        start(team, wire, provider="anthropic", model="claude-sonnet-4-5", runtime=", stream: true, default_reasoning_effort: low")
    )

    assert run.status == "completed", run.error
    assert wire.received[0].body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert run.steps.get().output == ANSWER
    assert ledger(run)[0][4] == 1200


def test_a_text_answer_after_thinking_is_the_text_alone(team, wire, reasoning_prices):
    text = {"type": "text", "text": "Budgets hold."}
    wire.script(anthropic_message([THOUGHT, text], anthropic_usage(input_tokens=40, output_tokens=600)))
    run = drive(
        start(team, wire, provider="anthropic", model="claude-sonnet-4-5", agent="    reasoning: {effort: low}\n", output=False)
    )

    assert run.steps.get().output == "Budgets hold."
    assert "tools" not in wire.received[0].body
