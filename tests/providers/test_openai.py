"""The openai provider: the real SDK against a wire-compatible server, charged to the micro-dollar."""

import json
import logging
from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, drive, everything_recorded_about, ledger, start
from tests.providers.wire import openai_completion, openai_error, openai_stream, openai_usage
from workflows.models import EventType
from workflows.providers.base import Credentials
from workflows.providers.openai import client_for

pytestmark = pytest.mark.django_db

ANSWER = json.dumps({"summary": "Budgets hold.", "score": 7})


def test_a_completion_is_charged_at_its_reported_usage(team, wire, priced):
    wire.script(openai_completion(ANSWER, openai_usage(prompt=1200, completion=300), request_id="req_abc"))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "completed", run.error
    # 1,200 input at $2.50 + 300 output at $10 per 1M
    assert ledger(run) == [(1, 1200, 0, 0, 300, Decimal("0.006000"), "req_abc")]
    assert run.spent_usd == Decimal("0.006000")
    assert run.steps.get().output == {"summary": "Budgets hold.", "score": 7}
    assert_invariants(run)


def test_the_request_carries_the_key_the_cap_and_the_output_schema(team, wire, priced):
    wire.script(openai_completion(ANSWER, openai_usage(prompt=10, completion=10)))
    drive(start(team, wire, provider="openai", model="gpt-4o"))

    sent = wire.received[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET_KEY_FOR_TESTS}"
    assert sent.body["max_completion_tokens"] == 1000
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Write about budgets."},
    ]
    schema = sent.body["response_format"]["json_schema"]["schema"]
    # Sorted: on PostgreSQL the stored schema keeps jsonb's key order, not the order written.
    assert sorted(schema["required"]) == ["score", "summary"] and schema["additionalProperties"] is False
    assert "stream" not in sent.body


def test_cached_input_is_billed_at_the_cached_rate_and_only_once(team, wire, priced):
    # prompt_tokens includes the 1,000 cached ones; reasoning tokens are inside completion_tokens.
    usage = openai_usage(prompt=1200, completion=300, cached=1000, reasoning=120)
    wire.script(openai_completion(ANSWER, usage))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    # 200 uncached at $2.50 + 1,000 cached at $1.25 + 300 output at $10 per 1M
    assert ledger(run)[0][1:6] == (200, 1000, 0, 300, Decimal("0.004750"))
    entry = run.ledger_entries.get()
    assert (entry.cached_input_per_mtok, entry.cache_write_per_mtok) == (Decimal("1.25"), None)


def test_a_streamed_completion_asks_for_usage_and_is_charged_like_any_other(team, wire, priced):
    pieces = ['{"summary": "Budg', 'ets hold.", ', '"score": 7}']
    usage = openai_usage(prompt=1200, completion=300, cached=1000)
    wire.script(openai_stream(pieces, usage, request_id="req_stream"))
    run = drive(start(team, wire, provider="openai", model="gpt-4o", stream=True))

    assert run.status == "completed", run.error
    assert wire.received[0].body["stream"] is True
    assert wire.received[0].body["stream_options"] == {"include_usage": True}
    assert ledger(run) == [(1, 200, 1000, 0, 300, Decimal("0.004750"), "req_stream")]
    assert run.steps.get().output == {"summary": "Budgets hold.", "score": 7}


def test_a_stream_without_usage_is_billed_at_its_worst_case_never_at_zero(team, wire, priced):
    answer = openai_stream([ANSWER], openai_usage(1, 1))
    answer.events = [event for event in answer.events if '"usage": {' not in json.dumps(event[1])]
    wire.script(answer)
    run = drive(start(team, wire, provider="openai", model="gpt-4o", stream=True))

    entry = run.ledger_entries.get()
    assert entry.output_tokens == 1000  # the cap it was called with
    assert entry.cost_usd >= Decimal("0.010000")


def test_a_stream_cut_off_before_its_usage_is_billed_at_its_worst_case_then_retried(team, wire, priced):
    cut = openai_stream(['{"summary": "Budg', 'ets hold.", '], openai_usage(1200, 300))
    cut.cut_after = 2  # the role chunk and one piece of the answer; the usage chunk never comes
    wire.script(cut, openai_stream([ANSWER], openai_usage(prompt=1200, completion=300), request_id="req_ok"))
    run = drive(start(team, wire, provider="openai", model="gpt-4o", stream=True))

    assert run.status == "completed", run.error
    cut_off, retried = ledger(run)
    attempt, input_tokens, _, _, output_tokens, cost, _ = cut_off
    # The local count of the prompt at $2.50 and the 1,000-token cap it was called with at $10, per 1M
    worst_case = (input_tokens * Decimal("2.5") + 1000 * Decimal("10")) / 1_000_000
    assert (attempt, output_tokens, cost) == (1, 1000, worst_case.quantize(Decimal("0.000001")))
    assert input_tokens > 0
    assert retried == (2, 1200, 0, 0, 300, Decimal("0.006000"), "req_ok")
    assert "stopped early" in run.events.get(type=EventType.PROVIDER_RETRY).payload["error"]["message"]
    assert_invariants(run)


def test_a_stream_that_ends_before_the_answer_finished_is_billed_at_its_worst_case_then_retried(team, wire, priced):
    early = openai_stream(['{"summary": "Budg'], openai_usage(1200, 300))
    early.events = early.events[:2]  # the body ends cleanly after one piece: no finish, no usage, no [DONE]
    wire.script(early, openai_stream([ANSWER], openai_usage(prompt=1200, completion=300), request_id="req_ok"))
    run = drive(start(team, wire, provider="openai", model="gpt-4o", stream=True))

    assert run.status == "completed", run.error
    (_, _, _, _, output_tokens, _, _), retried = ledger(run)
    assert output_tokens == 1000  # the cap: the truncated answer was neither taken nor billed at $0
    assert retried == (2, 1200, 0, 0, 300, Decimal("0.006000"), "req_ok")
    assert run.steps.get().output == {"summary": "Budgets hold.", "score": 7}


def test_an_error_event_mid_stream_is_billed_at_its_worst_case_then_retried(team, wire, priced):
    failed = openai_stream(['{"summary": "Budg'], openai_usage(1200, 300))
    # The server stops the answer with an error in the stream: the SDK raises, whatever class its
    # version picks, and no usage ever came.
    failed.events = failed.events[:2] + [(None, {"error": {"message": "The server had an error", "type": "server_error"}})]
    wire.script(failed, openai_stream([ANSWER], openai_usage(prompt=1200, completion=300), request_id="req_ok"))
    run = drive(start(team, wire, provider="openai", model="gpt-4o", stream=True))

    assert run.status == "completed", run.error
    (attempt, _, _, _, output_tokens, _, _), retried = ledger(run)
    assert (attempt, output_tokens) == (1, 1000)  # the cap, never the 0 tokens reported so far
    assert retried == (2, 1200, 0, 0, 300, Decimal("0.006000"), "req_ok")
    assert_invariants(run)


def test_a_teams_key_never_goes_to_the_base_url_the_operators_environment_sets(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://operator-gateway.internal/v1")

    assert str(client_for(Credentials(api_key="team-key"), timeout=60).base_url) == "https://api.openai.com/v1/"
    assert str(client_for(Credentials(api_key="team-key", base_url="http://team.example/v1"), timeout=60).base_url) == (
        "http://team.example/v1/"
    )


def test_a_429_is_retried_and_only_the_success_is_charged(team, wire, priced):
    wire.script(
        openai_error(429, "Rate limit reached", headers={"retry-after": "0"}),
        openai_completion(ANSWER, openai_usage(prompt=1200, completion=300), request_id="req_ok"),
    )
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "completed", run.error
    assert ledger(run) == [(2, 1200, 0, 0, 300, Decimal("0.006000"), "req_ok")]
    retry = run.events.get(type=EventType.PROVIDER_RETRY)
    assert (retry.payload["attempt"], retry.payload["error"]["status_code"], retry.payload["cost_usd"]) == (1, 429, None)
    assert (run.steps.get().attempts, run.steps.get().error) == (2, None)
    assert_invariants(run)


def test_a_500_that_reports_usage_is_charged_and_so_is_the_retry(team, wire, priced):
    wire.script(
        openai_error(500, "The server had an error", usage=openai_usage(prompt=1200, completion=100)),
        openai_completion(ANSWER, openai_usage(prompt=1200, completion=300), request_id="req_ok"),
    )
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "completed", run.error
    assert ledger(run) == [
        (1, 1200, 0, 0, 100, Decimal("0.004000"), "req_err_500"),
        (2, 1200, 0, 0, 300, Decimal("0.006000"), "req_ok"),
    ]
    assert run.spent_usd == Decimal("0.010000")
    assert_invariants(run)


def test_retries_give_up_after_the_configured_limit_and_the_run_can_be_resumed(team, wire, priced, settings):
    settings.PROVIDER_MAX_RETRIES = 2
    wire.script(*[openai_error(503, "Service unavailable") for _ in range(3)])
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "failed"
    assert run.error["message"].startswith("The provider failed 3 times in a row")
    assert run.ledger_entries.count() == 0 and run.reserved_usd == 0
    assert_invariants(run)

    from workflows.services.runs import run_resume

    wire.script(openai_completion(ANSWER, openai_usage(prompt=10, completion=10)))
    run_resume(run=run, reason="provider is back")
    assert drive(run).status == "completed"


def test_a_401_fails_the_run_at_once_with_the_key_redacted_everywhere(team, wire, priced, caplog):
    caplog.set_level(logging.DEBUG)
    wire.script(openai_error(401, f"Incorrect API key provided: {SECRET_KEY_FOR_TESTS}. Find yours elsewhere."))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "failed"
    assert run.error["type"] == "ProviderError" and run.error["status_code"] == 401
    assert "Incorrect API key provided: [redacted]" in run.error["message"]
    assert len(wire.received) == 1  # never retried
    assert SECRET_KEY_FOR_TESTS not in everything_recorded_about(run)
    assert SECRET_KEY_FOR_TESTS not in caplog.text
    assert run.ledger_entries.count() == 0 and run.reserved_usd == 0
    assert_invariants(run)


def test_an_answer_that_does_not_fit_the_schema_fails_the_step_but_is_still_charged(team, wire, priced):
    wire.script(openai_completion(json.dumps({"summary": 3}), openai_usage(prompt=1000, completion=100)))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "failed"
    assert "output.summary must be a string" in run.error["message"]
    assert "output.score is missing" in run.error["message"]
    assert ledger(run)[0][5] == Decimal("0.003500")
    assert_invariants(run)


def test_an_answer_nested_deeper_than_python_reads_fails_the_step_and_is_still_charged(team, wire, priced):
    wire.script(openai_completion("[" * 100_000 + "]" * 100_000, openai_usage(prompt=1000, completion=100)))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "failed"
    assert "not JSON" in run.error["message"]
    assert ledger(run)[0][5] == Decimal("0.003500")
    assert_invariants(run)


def test_a_server_that_cannot_be_reached_is_a_transient_error(team, wire, priced, settings):
    settings.PROVIDER_MAX_RETRIES = 1
    run = start(team, wire, provider="openai", model="gpt-4o")
    wire.httpd.shutdown()
    wire.httpd.server_close()
    run = drive(run)

    assert run.status == "failed"
    assert "could not be reached" in run.error["message"]
    assert run.events.filter(type=EventType.PROVIDER_RETRY).count() == 1
