"""A step whose agent sets no max_tokens: capped at the default output allowance, asked for no more,
so a budget of a few cents runs a cheap call of a model that could write 64,000 tokens, and the
estimate is still an upper bound on what the call costs."""

from decimal import Decimal

import pytest
from django.core.management import call_command

from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, drive, wire  # noqa: F401 - fixtures
from tests.providers.wire import anthropic_message, anthropic_usage
from workflows.models import Event, LedgerEntry, Price
from workflows.services.credentials import credential_set
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

# No max_tokens on the agent or the runtime, as in most of conductor's examples.
DEFINITION = """
workflow:
  name: brief
  entry_point: writer
  runtime: {provider: anthropic, default_model: claude-sonnet-4-5}
agents:
  - name: writer
    prompt: "Say yes."
"""
TEXT = [{"type": "text", "text": "Yes."}]


@pytest.fixture
def shipped_prices(db):
    call_command("loadprices", stdout=None)
    # The shipped table knows the model can write 64,000 tokens: that is not what a step is held to.
    assert Price.objects.get(model="claude-sonnet-4-5").max_output_tokens == 64000


def start(team, wire, *, budget_usd: str):
    credential_set(team=team, provider="anthropic", api_key=SECRET_KEY_FOR_TESTS, base_url=wire.url)
    workflow_create(team=team, definition=DEFINITION)
    return run_start(team=team, workflow="brief", limits={"budget_usd": budget_usd, "budget_mode": "enforce"})


def test_a_few_cents_under_enforce_run_a_cheap_step_asked_for_no_more_than_the_allowance(team, wire, shipped_prices):
    wire.script(anthropic_message(TEXT, anthropic_usage(input_tokens=12, output_tokens=3)))
    run = drive(start(team, wire, budget_usd="0.07"))

    assert run.status == "completed", run.error
    assert wire.received[0].body["max_tokens"] == 4096
    step = run.steps.get()
    # 3 input tokens at the cache-write rate ($3.75) + 4,096 output tokens at $15, per 1M, rounded up;
    # the whole 64,000 would have been $0.960012, over the budget before anything ran.
    assert step.estimate_usd == Decimal("0.061452")
    entry = LedgerEntry.objects.get(run=run)
    assert entry.cost_usd == Decimal("0.000081")  # 12 x $3 + 3 x $15, per 1M
    assert run.spent_usd == Decimal("0.000081") <= run.budget_usd
    assert_invariants(run)


def test_the_allowance_is_an_upper_bound_a_call_that_uses_all_of_it_stays_within_its_estimate(
    team, wire, shipped_prices
):
    # The model writes until the cap.
    wire.script(anthropic_message(TEXT, anthropic_usage(input_tokens=3, output_tokens=4096)))
    run = drive(start(team, wire, budget_usd="0.07"))

    assert run.status == "completed", run.error
    step = run.steps.get()
    assert run.spent_usd == Decimal("0.061449") <= step.estimate_usd <= run.budget_usd
    assert_invariants(run)


def test_a_budget_below_the_allowance_stops_before_the_call_and_says_what_it_would_take(team, wire, shipped_prices):
    run = drive(start(team, wire, budget_usd="0.05"))

    assert run.status == "budget_exceeded"
    assert wire.received == []
    event = Event.objects.get(run=run, type="budget_exceeded")
    assert event.payload["projected_usd"] == "0.061452"
    assert LedgerEntry.objects.filter(run=run).count() == 0


def test_the_allowance_is_a_setting_and_the_agents_max_tokens_still_wins(team, wire, shipped_prices, settings):
    settings.DEFAULT_MAX_TOKENS = 1024
    wire.script(anthropic_message(TEXT, anthropic_usage(input_tokens=12, output_tokens=3)))
    run = drive(start(team, wire, budget_usd="0.02"))

    assert run.status == "completed", run.error
    assert wire.received[0].body["max_tokens"] == 1024
    assert run.steps.get().estimate_usd == Decimal("0.015372")  # 3 x $3.75 + 1,024 x $15, per 1M, rounded up

    wire.script(anthropic_message(TEXT, anthropic_usage(input_tokens=12, output_tokens=3)))
    workflow_create(team=team, definition=DEFINITION.replace("claude-sonnet-4-5}", "claude-sonnet-4-5, max_tokens: 200}"))
    drive(run_start(team=team, workflow="brief", limits={"budget_usd": "0.02", "budget_mode": "enforce"}))
    assert wire.received[1].body["max_tokens"] == 200
