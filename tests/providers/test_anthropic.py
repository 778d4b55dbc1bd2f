"""The anthropic provider: the real SDK against a wire-compatible server, charged to the micro-dollar."""

import json
from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, drive, everything_recorded_about, ledger, start
from tests.providers.wire import anthropic_error, anthropic_message, anthropic_stream, anthropic_usage
from workflows.providers.anthropic import client_for
from workflows.providers.base import Credentials

pytestmark = pytest.mark.django_db

TOOL_ANSWER = [{"type": "tool_use", "id": "toolu_1", "name": "output", "input": {"summary": "Budgets hold.", "score": 7}}]


def test_cache_writes_and_reads_are_each_billed_at_their_own_rate(team, wire, priced):
    usage = anthropic_usage(input_tokens=1000, output_tokens=500, cache_write=2000, cache_read=10_000)
    wire.script(anthropic_message(TOOL_ANSWER, usage, request_id="req_claude"))
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test"))

    assert run.status == "completed", run.error
    # 1,000 x $3 + 2,000 x $3.75 + 10,000 x $0.30 + 500 x $15, per 1M
    assert ledger(run) == [(1, 1000, 10_000, 2000, 500, Decimal("0.021000"), "req_claude")]
    assert run.steps.get().output == {"summary": "Budgets hold.", "score": 7}
    assert_invariants(run)


def test_structured_output_is_asked_for_as_the_one_tool_the_model_must_call(team, wire, priced):
    wire.script(anthropic_message(TOOL_ANSWER, anthropic_usage(10, 10)))
    drive(start(team, wire, provider="anthropic", model="claude-wire-test"))

    sent = wire.received[0]
    assert sent.path == "/v1/messages"
    assert SECRET_KEY_FOR_TESTS in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "").removeprefix("Bearer "))
    assert sent.body["system"] == "Be brief." and sent.body["max_tokens"] == 1000
    assert sent.body["tool_choice"] == {"type": "tool", "name": "output"}
    assert sorted(sent.body["tools"][0]["input_schema"]["required"]) == ["score", "summary"]


def test_a_text_answer_without_an_output_schema(team, wire, priced):
    wire.script(anthropic_message([{"type": "text", "text": "Budgets hold."}], anthropic_usage(100, 20)))
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", output=False))

    assert run.steps.get().output == "Budgets hold."
    assert ledger(run)[0][5] == Decimal("0.000600")


def test_a_stream_takes_input_counts_from_message_start_and_output_from_message_delta(team, wire, priced):
    pieces = ['{"summary": "Budgets', ' hold.", "score"', ": 7}"]
    start_usage = anthropic_usage(input_tokens=1000, output_tokens=1, cache_write=2000, cache_read=10_000)
    wire.script(anthropic_stream(tool_json_pieces=pieces, start_usage=start_usage, final_output_tokens=500))
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", stream=True))

    assert run.status == "completed", run.error
    assert wire.received[0].body["stream"] is True
    # message_delta's output count is cumulative: 500 in all, not 501.
    assert ledger(run) == [(1, 1000, 10_000, 2000, 500, Decimal("0.021000"), "req_anthropic_stream")]
    assert run.steps.get().output == {"summary": "Budgets hold.", "score": 7}


def test_an_overload_mid_stream_is_billed_its_input_and_the_whole_output_cap_then_retried(team, wire, priced):
    wire.script(
        anthropic_stream(start_usage=anthropic_usage(1000, 1), final_output_tokens=0, error_after_start=True),
        anthropic_stream(
            tool_json_pieces=['{"summary": "Budgets hold.", "score": 7}'],
            start_usage=anthropic_usage(1000, 1),
            final_output_tokens=500,
        ),
    )
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", stream=True))

    assert run.status == "completed", run.error
    # The error event came before message_delta's totals, so the model may have made the whole cap:
    # 1,000 x $3 + 1,000 x $15 for the failed attempt; 1,000 x $3 + 500 x $15 for the retry, per 1M
    assert [(entry[0], entry[5]) for entry in ledger(run)] == [(1, Decimal("0.018000")), (2, Decimal("0.010500"))]
    assert_invariants(run)


def test_a_stream_cut_off_mid_answer_is_billed_its_input_and_the_whole_output_cap_then_retried(
    team, wire, priced
):
    answer = ['{"summary": "Budgets hold.", ', '"score": 7}']
    cut = anthropic_stream(tool_json_pieces=answer, start_usage=anthropic_usage(1000, 1), final_output_tokens=500)
    cut.cut_after = 3  # message_start, the block's start and one delta: no message_delta
    whole = anthropic_stream(tool_json_pieces=answer, start_usage=anthropic_usage(1000, 1), final_output_tokens=500)
    wire.script(cut, whole)
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", stream=True))

    assert run.status == "completed", run.error
    # The cut-off attempt: 1,000 x $3 + the 1,000-token cap x $15; the retry: 1,000 x $3 + 500 x $15, per 1M
    assert [(entry[0], entry[4], entry[5]) for entry in ledger(run)] == [
        (1, 1000, Decimal("0.018000")),
        (2, 500, Decimal("0.010500")),
    ]
    retry = run.events.get(type="provider_retry")
    assert "stopped early" in retry.payload["error"]["message"]
    assert_invariants(run)


def test_a_stream_that_ends_without_message_delta_is_billed_the_whole_output_cap_then_retried(team, wire, priced):
    answer = ['{"summary": "Budgets hold.", ', '"score": 7}']
    early = anthropic_stream(tool_json_pieces=answer, start_usage=anthropic_usage(1000, 1), final_output_tokens=500)
    early.events = early.events[:3]  # the body ends cleanly after one delta: no message_delta, no message_stop
    whole = anthropic_stream(tool_json_pieces=answer, start_usage=anthropic_usage(1000, 1), final_output_tokens=500)
    wire.script(early, whole)
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", stream=True))

    assert run.status == "completed", run.error
    # 1,000 x $3 + the 1,000-token cap x $15, not message_start's 1 output token; then the retry
    assert [(entry[0], entry[4], entry[5]) for entry in ledger(run)] == [
        (1, 1000, Decimal("0.018000")),
        (2, 500, Decimal("0.010500")),
    ]


def test_a_stream_cut_off_after_its_totals_is_billed_the_totals_then_retried(team, wire, priced):
    answer = ['{"summary": "Budgets hold.", ', '"score": 7}']
    cut = anthropic_stream(tool_json_pieces=answer, start_usage=anthropic_usage(1000, 1), final_output_tokens=500)
    cut.cut_after = len(cut.events) - 1  # message_delta's totals arrive, message_stop never does
    whole = anthropic_stream(tool_json_pieces=answer, start_usage=anthropic_usage(1000, 1), final_output_tokens=500)
    wire.script(cut, whole)
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", stream=True))

    assert run.status == "completed", run.error
    # Both attempts: 1,000 x $3 + 500 x $15 per 1M; the first is not taken as an answer
    assert [(entry[0], entry[4], entry[5]) for entry in ledger(run)] == [
        (1, 500, Decimal("0.010500")),
        (2, 500, Decimal("0.010500")),
    ]
    assert_invariants(run)


def test_a_teams_key_never_goes_to_the_base_url_the_operators_environment_sets(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://operator-gateway.internal")

    assert str(client_for(Credentials(api_key="team-key"), timeout=60).base_url) == "https://api.anthropic.com"
    assert str(client_for(Credentials(api_key="team-key", base_url="http://team.example"), timeout=60).base_url) == (
        "http://team.example"
    )


def test_a_529_overload_is_retried(team, wire, priced):
    wire.script(anthropic_error(529, "Overloaded"), anthropic_message(TOOL_ANSWER, anthropic_usage(10, 10)))
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test"))

    assert run.status == "completed", run.error
    assert [entry[0] for entry in ledger(run)] == [2]


def test_a_401_fails_the_run_with_the_key_redacted(team, wire, priced):
    wire.script(anthropic_error(401, f"invalid x-api-key {SECRET_KEY_FOR_TESTS}"))
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test"))

    assert run.status == "failed" and run.error["status_code"] == 401
    assert SECRET_KEY_FOR_TESTS not in everything_recorded_about(run)
    assert "[redacted]" in run.error["message"]
    assert json.dumps(run.error).count("invalid x-api-key") == 1
