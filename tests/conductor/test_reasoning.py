"""Conductor's reasoning effort and context tier on a real worker, against wire-compatible OpenAI and
Anthropic servers: the runtime's default effort and an agent's templated one reach each API as its own
parameter, within the output cap the gate priced; a templated effort that renders to no level fails
its step before the call; the context tier is checked as conductor checks it and changes nothing on
the wire."""

import json
from datetime import date
from decimal import Decimal

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from tests.providers.wire import WireServer, anthropic_message, anthropic_usage, openai_completion, openai_usage
from workflows.definition import count_tokens
from workflows.models import LedgerEntry, Price

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

INCIDENT_REVIEW = """
workflow:
  name: incident-review
  description: Triage an incident, then find its cause as deeply as the run asks
  entry_point: triage
  runtime:
    provider: copilot
    default_model: o4-mini
    temperature: 0.2
    default_reasoning_effort: low
    default_context_tier: default
  input:
    incident: {type: string, required: true}
    depth: {type: string, required: false, default: high}
    window: {type: string, required: false, default: long_context}
  limits: {budget_usd: 2, budget_mode: enforce}

agents:
  - name: triage
    prompt: "Triage this incident: {{ workflow.input.incident }}"
    output:
      severity: {type: string, enum: [minor, major]}
    routes:
      - to: analyse
        when: "{{ output.severity == 'major' }}"
      - to: $end

  - name: analyse
    provider: claude
    model: claude-sonnet-4.5
    context_tier: "{{ workflow.input.window }}"
    reasoning:
      effort: "{{ workflow.input.depth }}"
    input: [workflow.input.incident, triage.output.severity]
    prompt: "Find the root cause of this {{ triage.output.severity }} incident: {{ workflow.input.incident }}"
    output:
      cause: {type: string}

output:
  severity: "{{ triage.output.severity }}"
  cause: "{% if analyse is defined %}{{ analyse.output.cause }}{% endif %}"
"""


@pytest.fixture
def servers(settings):
    with WireServer() as openai, WireServer() as anthropic:
        settings.OPENAI_API_KEY = "sk-test-openai-0123456789"
        settings.OPENAI_BASE_URL = f"{openai.url}/v1"
        settings.ANTHROPIC_API_KEY = "sk-test-anthropic-0123456789"
        settings.ANTHROPIC_BASE_URL = anthropic.url
        yield openai, anthropic


@pytest.fixture
def uploaded(api, team, db):
    Price.objects.create(
        model="o4-mini", input_per_mtok="1.1", output_per_mtok="4.4", max_output_tokens=100_000, valid_from=date(2025, 1, 1)
    )
    Price.objects.create(
        model="claude-sonnet-4.5", input_per_mtok="3", output_per_mtok="15", max_output_tokens=64_000, valid_from=date(2025, 1, 1)
    )
    assert api.put("/api/v1/team/provider-routes", {"routes": {"copilot": "openai"}}, format="json").status_code == 200
    response = api.post("/api/v1/workflows", {"definition": INCIDENT_REVIEW}, format="json")
    assert response.status_code == 201, response.json()


def run_review(api, **inputs):
    response = api.post("/api/v1/runs", {"workflow": "incident-review", "inputs": inputs}, format="json")
    assert response.status_code == 202, response.json()
    return wait_for_run(response.json()["id"], *TERMINAL)


def estimate(prompt: str, *, input_rate: str, output_rate: str, max_tokens: int) -> Decimal:
    usd = (count_tokens(prompt) * Decimal(input_rate) + max_tokens * Decimal(output_rate)) / 1_000_000
    return usd.quantize(Decimal("0.000001"), rounding="ROUND_UP")


def test_each_api_is_sent_the_effort_as_its_own_parameter_within_the_cap_the_gate_priced(
    api, uploaded, servers, celery_worker
):
    openai, anthropic = servers
    openai.script(openai_completion(json.dumps({"severity": "major"}), openai_usage(prompt=30, completion=700, reasoning=600)))
    thought = {"type": "thinking", "thinking": "The pool was exhausted.", "signature": "sig_1"}
    answer = {"type": "tool_use", "id": "toolu_1", "name": "output", "input": {"cause": "connection pool exhausted"}}
    anthropic.script(anthropic_message([thought, answer], anthropic_usage(input_tokens=60, output_tokens=9000)))

    run = run_review(api, incident="checkout timeouts", depth="max")

    assert run.status == "completed", run.error
    assert run.output == {"severity": "major", "cause": "connection pool exhausted"}
    [to_openai], [to_anthropic] = openai.received, anthropic.received
    # The runtime's default effort, by conductor's name; reasoning models take no temperature.
    assert to_openai.body["reasoning_effort"] == "low" and "temperature" not in to_openai.body
    assert to_openai.body["max_completion_tokens"] == 4096 + 2048
    # The agent's templated effort, rendered: conductor's thinking budget for max, in the model's cap.
    assert to_anthropic.body["thinking"] == {"type": "enabled", "budget_tokens": 59904}
    assert to_anthropic.body["max_tokens"] == 64000 and "temperature" not in to_anthropic.body
    # The context tier reaches no API: no long-context window is asked for, at any price.
    assert "anthropic-beta" not in to_anthropic.headers
    assert not any("context_tier" in json.dumps(request.body) for request in (to_openai, to_anthropic))

    triage, analyse = run.steps.get(agent="triage"), run.steps.get(agent="analyse")
    assert triage.estimate_usd == estimate(
        to_openai.body["messages"][0]["content"], input_rate="1.1", output_rate="4.4", max_tokens=6144
    )
    assert analyse.estimate_usd == estimate(
        to_anthropic.body["messages"][0]["content"], input_rate="3", output_rate="15", max_tokens=64000
    )
    costs = dict(LedgerEntry.objects.filter(run=run).values_list("agent", "cost_usd"))
    # 30 x $1.10 + 700 x $4.40; 60 x $3 + 9,000 x $15 (the thinking is output), per 1M
    assert costs == {"triage": Decimal("0.003113"), "analyse": Decimal("0.135180")}
    assert all(costs[step.agent] <= step.estimate_usd for step in (triage, analyse))
    assert_invariants(run)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"depth": "ultra"}, "reasoning.effort failed: rendered 'ultra', which is not one of low, medium, high, xhigh, max"),
        ({"window": "1m"}, "context_tier failed: rendered '1m', which is not one of default, long_context"),
    ],
)
def test_an_effort_or_tier_that_renders_to_none_of_its_values_fails_its_step_before_the_call(
    api, uploaded, servers, celery_worker, inputs, message
):
    openai, anthropic = servers
    openai.script(openai_completion(json.dumps({"severity": "major"}), openai_usage(prompt=30, completion=100)))

    run = run_review(api, incident="checkout timeouts", **inputs)

    assert run.status == "failed"
    assert run.error["type"] == "TemplateError"
    assert run.error["message"] == f"template agent 'analyse' {message}"
    assert anthropic.received == []  # never called
    analyse = run.steps.get(agent="analyse")
    assert analyse.estimate_usd is None and analyse.attempts == 0  # never passed the gate
    assert list(LedgerEntry.objects.filter(run=run).values_list("agent", flat=True)) == ["triage"]
    assert_invariants(run)
