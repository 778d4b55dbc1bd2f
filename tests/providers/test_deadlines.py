"""An agent's deadline (timeout_seconds, max_session_seconds) bounds its call within the operator's
PROVIDER_TIMEOUT_SECONDS: a call past the agent's deadline fails its step and is not tried again, as
conductor's agent timeouts are not; past the operator's, it is retried as before."""

import json
import socket
import time
from datetime import date
from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, drive, ledger
from tests.providers.wire import anthropic_stream, anthropic_usage, openai_completion, openai_error, openai_usage
from workflows.models import EventType, Price, Run, RunStatus
from workflows.services.credentials import credential_set
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

ANSWER = json.dumps({"summary": "Budgets hold."})


@pytest.fixture
def prices(db):
    Price.objects.create(model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", valid_from=date(2024, 1, 1))
    Price.objects.create(model="claude-sonnet-4-5", input_per_mtok="3", output_per_mtok="15", valid_from=date(2024, 1, 1))


def start(team, wire, *, provider: str, model: str, runtime: str = "", agent: str = "") -> Run:
    credential_set(
        team=team, provider=provider, api_key=SECRET_KEY_FOR_TESTS, base_url=f"{wire.url}/v1" if provider == "openai" else wire.url
    )
    workflow_create(
        team=team,
        definition=f"""
workflow:
  name: timed
  entry_point: writer
  runtime: {{provider: {provider}, default_model: {model}, max_tokens: 1000{runtime}}}
agents:
  - name: writer
    prompt: "Write about budgets."
    output: {{summary: {{type: string}}}}
{agent}""",
    )
    return run_start(team=team, workflow="timed", inputs={})


def test_a_call_past_the_agents_deadline_fails_its_step_at_the_deadline_and_is_not_tried_again(team, wire, prices):
    wire.script(openai_completion(ANSWER, openai_usage(prompt=10, completion=10)), openai_completion(ANSWER, openai_usage(10, 10)))
    wire.answers[0].delay_seconds = 3
    run = start(team, wire, provider="openai", model="gpt-4o", agent="    timeout_seconds: 1\n")

    began = time.monotonic()
    run = drive(run)

    assert time.monotonic() - began < 2.5  # abandoned at the deadline, not when the answer came
    assert run.status == RunStatus.FAILED
    assert run.error["type"] == "ProviderError"
    assert run.error["message"].startswith("OpenAI took longer than the agent's deadline of 1 s (its timeout_seconds or max_session_seconds)")
    assert len(wire.received) == 1 and not run.events.filter(type=EventType.PROVIDER_RETRY).exists()
    # The request was sent, and no answer says what it cost: charged its reservation as an estimate.
    assert ledger(run) == [(1, 0, 0, 0, 0, Decimal("0.010018"), "")]
    assert run.ledger_entries.get().basis == "estimated"
    assert_invariants(run)


def test_the_runtimes_max_session_seconds_is_every_agents_deadline(team, wire, prices):
    wire.script(openai_completion(ANSWER, openai_usage(prompt=10, completion=10)))
    wire.answers[0].delay_seconds = 2.5
    run = drive(start(team, wire, provider="openai", model="gpt-4o", runtime=", max_session_seconds: 1"))

    assert run.status == RunStatus.FAILED
    assert "deadline of 1 s" in run.error["message"]


def test_past_the_operators_timeout_the_call_is_retried_as_before(team, wire, prices, settings):
    settings.PROVIDER_TIMEOUT_SECONDS = 1
    wire.script(openai_completion(ANSWER, openai_usage(prompt=10, completion=10)), openai_completion(ANSWER, openai_usage(10, 10)))
    wire.answers[0].delay_seconds = 2.5
    # The agent's deadline is longer than the operator's timeout, which bounds every call anyway.
    run = drive(start(team, wire, provider="openai", model="gpt-4o", agent="    timeout_seconds: 30\n"))

    assert run.status == RunStatus.COMPLETED, run.error
    assert len(wire.received) == 2
    assert run.events.filter(type=EventType.PROVIDER_RETRY).count() == 1
    # The call that timed out is charged its estimate; the retry, what it reported.
    assert list(run.ledger_entries.values_list("attempt", "basis", "output_tokens")) == [
        (1, "estimated", 0),
        (2, "reported", 10),
    ]
    assert_invariants(run)


def test_a_stream_that_runs_past_the_agents_deadline_is_billed_its_worst_case_and_not_tried_again(team, wire, prices):
    slow = anthropic_stream(
        tool_json_pieces=['{"summary": ', '"Budgets ', 'hold."}'], start_usage=anthropic_usage(40, 1), final_output_tokens=30
    )
    slow.pause_seconds = 0.4  # eight events: the answer would take 3.2 s
    wire.script(slow)
    run = drive(start(team, wire, provider="anthropic", model="claude-sonnet-4-5", runtime=", stream: true", agent="    max_session_seconds: 1\n"))

    assert run.status == RunStatus.FAILED
    assert run.error["message"].startswith("Anthropic's stream took longer than the agent's deadline of 1 s")
    assert len(wire.received) == 1
    # It started: message_start's input and the whole 1,000-token cap, as any stream stopped early.
    assert [(entry[1], entry[4]) for entry in ledger(run)] == [(40, 1000)]
    assert_invariants(run)


def test_a_call_refused_while_connecting_was_never_sent_and_costs_nothing(team, prices, settings):
    settings.PROVIDER_MAX_RETRIES = 1
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    credential_set(team=team, provider="openai", api_key=SECRET_KEY_FOR_TESTS, base_url=f"http://127.0.0.1:{closed_port}/v1")
    workflow_create(
        team=team,
        definition="""
workflow:
  name: refused
  entry_point: writer
  runtime: {provider: openai, default_model: gpt-4o, max_tokens: 1000}
agents:
  - name: writer
    prompt: "Write about budgets."
""",
    )
    run = drive(run_start(team=team, workflow="refused", inputs={}))

    assert run.status == RunStatus.FAILED
    assert "could not be reached" in run.error["message"]
    assert run.events.filter(type=EventType.PROVIDER_RETRY).count() == 1
    assert ledger(run) == []
    assert_invariants(run)


@pytest.mark.parametrize(
    "status,charged",
    [
        # A gateway gave up waiting for the provider, which may have answered and billed.
        (504, [(1, "estimated"), (2, "reported")]),
        # The provider refused the call: it bills nothing.
        (503, [(2, "reported")]),
    ],
)
def test_an_error_answer_without_usage_is_charged_an_estimate_only_when_the_provider_may_have_billed(
    team, wire, prices, status, charged
):
    wire.script(openai_error(status, "upstream"), openai_completion(ANSWER, openai_usage(prompt=10, completion=10)))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == RunStatus.COMPLETED, run.error
    assert list(run.ledger_entries.order_by("id").values_list("attempt", "basis")) == charged
    assert_invariants(run)
