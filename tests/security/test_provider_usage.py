"""Usage no call can have had is still charged: at the step's worst-case estimate, with its ledger row
and a `usage_rejected` event that says why, and the step is called once, not redelivered."""

import json
from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import drive, ledger, priced, start, wire  # noqa: F401 - fixtures
from tests.providers.wire import Answer, anthropic_message, openai_completion, openai_error
from workflows.models import Event, EventType, LedgerEntry, Run, StepStatus, Workflow, WorkflowVersion
from workflows.services.runs import run_start
from workflows.services.steps import step_execute

pytestmark = pytest.mark.django_db

ANSWER = json.dumps({"summary": "Budgets hold.", "score": 7})
# The step's worst case: "Be brief." + "Write about budgets." is 11 tokens locally, at gpt-4o's $2.50,
# and the whole 1,000-token output cap at $10 per 1M: $0.0100275, rounded up.
WORST_CASE_USD = Decimal("0.010028")


def usage(*, prompt, completion, cached=0) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "prompt_tokens_details": {"cached_tokens": cached}}


def rejections(run: Run) -> list[dict]:
    return list(Event.objects.filter(run=run, type=EventType.USAGE_REJECTED).values_list("payload", flat=True))


@pytest.mark.parametrize(
    ("reported", "reason", "shown"),
    [
        (usage(prompt=3_000_000_000, completion=300), "input_tokens is above 10,000,000 tokens", 3_000_000_000),
        (usage(prompt=2**64, completion=300), "input_tokens is above 10,000,000 tokens", repr(2**64)),
        (usage(prompt=1200, completion=-5), "output_tokens is negative", 1200),
        (usage(prompt=10, completion=300, cached=20), "input_tokens is negative", -10),
        (usage(prompt=6_000_000, completion=5_000_000), "the counts add up to more than 10,000,000 tokens", 6_000_000),
        (usage(prompt="1200", completion=300), "input_tokens is not a whole number", "'1200'"),
        (usage(prompt=1200.5, completion=300), "input_tokens is not a whole number", "1200.5"),
        ({"prompt_tokens": 1200}, "output_tokens is not a whole number", 1200),
    ],
)
def test_absurd_usage_is_charged_the_worst_case_once_with_its_ledger_row_and_an_event(
    team, wire, priced, reported, reason, shown
):
    wire.script(openai_completion(ANSWER, reported, request_id="req_absurd"))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "completed", run.error
    assert len(wire.received) == 1  # called once: never redelivered, never retried
    # The worst case: the local input count and the whole output cap, at the estimate's cost.
    assert ledger(run) == [(1, 11, 0, 0, 1000, WORST_CASE_USD, "req_absurd")]
    assert run.steps.get().estimate_usd == WORST_CASE_USD
    assert run.spent_usd == WORST_CASE_USD
    [event] = rejections(run)
    assert event["reason"] == reason
    assert event["reported"]["input_tokens"] == shown
    assert event["billed"] == {"input_tokens": 11, "output_tokens": 1000, "cached_input_tokens": 0, "cache_write_tokens": 0}
    assert event["cost_usd"] == "0.010028"
    completed = Event.objects.get(run=run, type=EventType.AGENT_COMPLETED).payload
    assert (completed["input_tokens"], completed["output_tokens"], completed["cost_usd"]) == (11, 1000, "0.010028")
    assert_invariants(run)


def test_usage_within_bounds_is_charged_as_reported_without_an_event(team, wire, priced):
    wire.script(openai_completion(ANSWER, usage(prompt=1200, completion=300)))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert ledger(run)[0][1:6] == (1200, 0, 0, 300, Decimal("0.006000"))
    assert rejections(run) == []


def test_the_bound_is_a_setting(team, wire, priced, settings):
    settings.PROVIDER_USAGE_MAX_TOKENS = 1000
    wire.script(openai_completion(ANSWER, usage(prompt=1001, completion=0)))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert ledger(run)[0][5] == WORST_CASE_USD
    assert rejections(run)[0]["reason"] == "input_tokens is above 1,000 tokens"


def test_a_failed_call_with_absurd_usage_is_charged_the_worst_case_then_retried(team, wire, priced):
    wire.script(
        openai_error(500, "Internal error", usage=usage(prompt=-1, completion=40), headers={"retry-after": "0"}),
        openai_completion(ANSWER, usage(prompt=100, completion=50)),
    )
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "completed", run.error
    assert [row[5] for row in ledger(run)] == [WORST_CASE_USD, Decimal("0.000750")]
    assert rejections(run)[0]["attempt"] == 1
    assert run.spent_usd == WORST_CASE_USD + Decimal("0.000750")
    assert_invariants(run)


def test_an_anthropic_answer_without_its_counts_is_charged_the_worst_case(team, wire, priced):
    body = anthropic_message([{"type": "text", "text": ANSWER}], {"input_tokens": 10}).body
    wire.script(Answer(body={**body, "usage": {"input_tokens": 10}}))
    run = drive(start(team, wire, provider="anthropic", model="claude-wire-test", output=False))

    assert run.status == "completed", run.error
    # 11 local input tokens at the dearest input-side rate, the cache write's $3.75, billed as such,
    # and the 1,000-token cap at $15: $0.01504125, rounded up.
    assert ledger(run)[0][1:6] == (0, 0, 11, 1000, Decimal("0.015042"))
    assert rejections(run)[0]["reason"] == "output_tokens is not a whole number"
    assert_invariants(run)


def test_an_unpriced_models_absurd_usage_gets_its_row_at_the_worst_case_counts(team, wire):
    wire.script(openai_completion(ANSWER, usage(prompt=3_000_000_000, completion=300)))
    run = drive(start(team, wire, provider="openai", model="unpriced-model"))

    assert run.status == "completed", run.error
    assert ledger(run) == [(1, 11, 0, 0, 1000, None, "req_openai_1")]
    assert (run.spent_usd, run.unpriced_steps) == (Decimal("0"), 1)
    assert rejections(run)[0]["cost_usd"] is None
    assert_invariants(run)


FAKE_YAML = """
workflow:
  name: mocked
  entry_point: only
  runtime: {provider: fake, default_model: sim-model, max_tokens: 100}
  cost:
    pricing:
      sim-model: {input_per_mtok: 1, output_per_mtok: 2}
agents:
  - name: only
    prompt: "Go"
    mock: {input_tokens: 5000, output_tokens: 80}
"""


def test_a_fake_step_never_costs_more_than_its_estimate(team, api):
    assert api.post("/api/v1/workflows", {"definition": FAKE_YAML}, format="json").status_code == 201
    run = drive(run_start(team=team, workflow="mocked"))

    entry = LedgerEntry.objects.get(run=run)
    # The mock's 5,000 input tokens are in the estimate: 5,000 at $1 + the 100-token cap at $2.
    assert run.steps.get().estimate_usd == Decimal("0.005200")
    assert (entry.input_tokens, entry.output_tokens, entry.cost_usd) == (5000, 80, Decimal("0.005160"))
    assert entry.cost_usd <= run.steps.get().estimate_usd


@pytest.mark.parametrize(("field", "written"), [("input_tokens", "5000"), ("output_tokens", "80")])
def test_a_fake_mock_count_above_the_bound_is_refused_at_upload(team, api, field, written):
    source = FAKE_YAML.replace(f"{field}: {written}", f"{field}: 3000000000")
    response = api.post("/api/v1/workflows", {"definition": source}, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "definition_invalid"
    assert error["details"] == [
        {"path": f"agents[0].mock.{field}", "message": "must be between 0 and 10000000, not 3000000000"}
    ]
    assert not Workflow.objects.filter(team=team).exists()


def test_a_stored_fake_definition_with_absurd_mock_counts_is_bounded_when_it_runs(team, api):
    """A definition stored before the bound: the step is charged once, within its estimate."""
    assert api.post("/api/v1/workflows", {"definition": FAKE_YAML}, format="json").status_code == 201
    version = WorkflowVersion.objects.get(workflow__team=team)
    version.definition["agents"][0]["mock"].update(input_tokens=3_000_000_000, output_tokens=3_000_000_000)
    version.save(update_fields=["definition"])
    run = run_start(team=team, workflow="mocked")
    step = run.steps.get()
    step_execute(step_id=step.pk)

    run.refresh_from_db()
    step.refresh_from_db()
    entry = LedgerEntry.objects.get(run=run)
    assert (run.status, step.status) == ("completed", StepStatus.SUCCEEDED)
    assert (entry.input_tokens, entry.output_tokens) == (10_000_000, 100)
    assert entry.cost_usd == step.estimate_usd == Decimal("10.000200")
    assert_invariants(run)


@pytest.mark.parametrize(("answer", "held"), [("a\u0000b", "a NUL character"), ("a\ud800b", "a lone surrogate")])
def test_an_answer_no_database_can_store_is_charged_and_fails_the_step(team, wire, priced, answer, held):
    completion = openai_completion(answer, usage(prompt=1200, completion=300))
    # No request id header: the body's id stands in, and it holds a NUL too.
    completion.headers, completion.body["id"] = {}, "req_\u0000nul"
    wire.script(completion)
    run = drive(start(team, wire, provider="openai", model="gpt-4o", output=False))

    assert len(wire.received) == 1
    assert run.status == "failed"
    assert run.error == {
        "type": "ProviderError",
        "message": f"The provider's answer cannot be stored: it holds {held}.",
        "status_code": None,
    }
    assert ledger(run) == [(1, 1200, 0, 0, 300, Decimal("0.006000"), "req_nul")]
    assert_invariants(run)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_an_answer_holding_a_number_json_cannot_store_is_charged_and_fails_the_step(team, wire, priced, number):
    # Python's JSON parser takes these; PostgreSQL's jsonb and SQLite's JSON_VALID refuse them, which
    # failed the settlement and left the call uncharged and run again.
    answer = '{"summary": "Budgets hold.", "score": 7, "notes": {"confidence": %s}}' % number
    wire.script(openai_completion(answer, usage(prompt=1200, completion=300)))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert len(wire.received) == 1
    assert run.status == "failed"
    assert run.error["message"].startswith("The provider's answer cannot be stored: it holds the number")
    assert ledger(run)[0][5] == Decimal("0.006000")
    assert_invariants(run)


def test_a_provider_error_message_no_database_can_store_is_stored_without_it(team, wire, priced):
    wire.script(openai_error(400, "bad\u0000 request \ud800", usage=usage(prompt=100, completion=0)))
    run = drive(start(team, wire, provider="openai", model="gpt-4o"))

    assert run.status == "failed"
    # The NUL is shown as a space, as every control character of a provider's message is.
    assert run.error["message"] == "OpenAI answered 400: bad  request ?"
    assert ledger(run)[0][5] == Decimal("0.000250")
    assert_invariants(run)


@pytest.mark.parametrize(
    ("provider", "model", "body"),
    [
        # The SDK builds these without validating them; reading the message then raises.
        ("openai", "gpt-4o", {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                              "choices": [{"index": 0, "message": None, "finish_reason": "stop"}]}),
        ("anthropic", "claude-wire-test", {"id": "msg_1", "type": "message", "role": "assistant", "content": None,
                                           "model": "claude-wire-test", "usage": None}),
    ],
)
def test_an_answer_that_came_back_but_cannot_be_read_is_charged_its_worst_case(team, wire, priced, provider, model, body):
    wire.script(Answer(body=body, headers={"x-request-id": "req_odd", "request-id": "req_odd"}))
    run = drive(start(team, wire, provider=provider, model=model))

    assert len(wire.received) == 1  # not tried again: the same answer would come back
    assert run.status == "failed"
    assert "answer could not be read (" in run.error["message"]
    assert run.error["message"].endswith("it is billed at its worst case.")
    # The local count of the prompt and the whole 1,000-token output cap, never $0.
    [(attempt, input_tokens, _, _, output_tokens, cost, request_id)] = ledger(run)
    assert (attempt, output_tokens, request_id) == (1, 1000, "req_odd")
    assert input_tokens > 0
    assert Decimal("0.010000") < cost <= run.steps.get().estimate_usd  # the cap alone costs $0.01 or more
    assert_invariants(run)
