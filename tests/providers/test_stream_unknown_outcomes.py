"""A streamed call that the provider accepted (HTTP 200, headers sent) but whose stream stopped before
its first chunk: the request reached the provider, which bills what it generated, and no usage says
what. The attempt is charged its reservation as an estimate."""

import json

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import drive, start
from tests.providers.wire import anthropic_stream, anthropic_usage, openai_stream, openai_usage

pytestmark = pytest.mark.django_db

ANSWER = json.dumps({"summary": "Budgets hold.", "score": 7})


def test_an_openai_stream_cut_before_its_first_chunk_is_charged_as_an_estimate(team, wire, priced):
    cut = openai_stream([ANSWER], openai_usage(1200, 300))
    cut.cut_after = 0  # 200 and headers, then the connection drops: the model is already generating
    wire.script(cut, openai_stream([ANSWER], openai_usage(prompt=1200, completion=300), request_id="req_ok"))
    run = drive(start(team, wire, provider="openai", model="gpt-4o", stream=True))

    assert run.status == "completed", run.error
    assert len(wire.received) == 2  # two calls reached the provider
    entries = list(run.ledger_entries.order_by("id").values_list("attempt", "basis", "cost_usd"))
    assert [(attempt, basis) for attempt, basis, _ in entries] == [(1, "estimated"), (2, "reported")], entries
    assert_invariants(run)


def test_an_anthropic_stream_cut_before_message_start_is_charged_as_an_estimate(team, wire, priced):
    cut = anthropic_stream(tool_json_pieces=[ANSWER], start_usage=anthropic_usage(1200, 1), final_output_tokens=300)
    cut.cut_after = 0
    wire.script(cut, anthropic_stream(tool_json_pieces=[ANSWER], start_usage=anthropic_usage(1200, 1), final_output_tokens=300))
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", stream=True))

    assert run.status == "completed", run.error
    assert len(wire.received) == 2
    entries = list(run.ledger_entries.order_by("id").values_list("attempt", "basis", "cost_usd"))
    assert [(attempt, basis) for attempt, basis, _ in entries] == [(1, "estimated"), (2, "reported")], entries
    assert_invariants(run)
