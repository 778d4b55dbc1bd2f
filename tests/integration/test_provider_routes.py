"""A conductor workflow that names no provider, run as its author wrote it: conductor's default
(copilot) reaches OpenAI through the team's route, and an agent's own `provider: claude` reaches
Anthropic, each a wire-compatible server, on a real worker."""

import json
from datetime import date
from decimal import Decimal

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from tests.providers.wire import (
    WireServer,
    anthropic_message,
    anthropic_usage,
    openai_completion,
    openai_usage,
)
from workflows.models import LedgerEntry, Price

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

CONDUCTOR_WORKFLOW = """
workflow:
  name: reviewed-research
  entry_point: researcher
  input: {topic: {type: string, required: true}}
  runtime: {default_model: gpt-4o, max_tokens: 500}
  limits: {budget_usd: 1, budget_mode: enforce}
agents:
  - name: researcher
    prompt: "Research {{ workflow.input.topic }}."
    output: {findings: {type: string}}
    routes: [{to: reviewer}]
  - name: reviewer
    provider: claude
    model: claude-sonnet-4.5
    prompt: "Review {{ researcher.output.findings }}."
"""


@pytest.fixture
def servers(settings):
    with WireServer() as openai, WireServer() as anthropic:
        settings.OPENAI_API_KEY = "sk-test-openai-0123456789"
        settings.OPENAI_BASE_URL = f"{openai.url}/v1"
        settings.ANTHROPIC_API_KEY = "sk-test-anthropic-0123456789"
        settings.ANTHROPIC_BASE_URL = anthropic.url
        yield openai, anthropic


def test_a_workflow_without_a_provider_runs_through_the_teams_route_and_an_agent_on_its_own(
    api, team, servers, celery_worker
):
    openai, anthropic = servers
    Price.objects.create(model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", valid_from=date(2024, 1, 1))
    Price.objects.create(model="claude-sonnet-4.5", input_per_mtok="3", output_per_mtok="15", valid_from=date(2024, 1, 1))
    openai.script(openai_completion(json.dumps({"findings": "caps hold"}), openai_usage(prompt=100, completion=20)))
    anthropic.script(anthropic_message([{"type": "text", "text": "Sound."}], anthropic_usage(input_tokens=50, output_tokens=10)))

    refused = api.post("/api/v1/workflows", {"definition": CONDUCTOR_WORKFLOW}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["details"][0]["path"] == "workflow.runtime.provider"

    routes = api.put("/api/v1/team/provider-routes", {"routes": {"copilot": "openai"}}, format="json")
    assert routes.status_code == 200, routes.json()
    assert api.post("/api/v1/workflows", {"definition": CONDUCTOR_WORKFLOW}, format="json").status_code == 201
    response = api.post("/api/v1/runs", {"workflow": "reviewed-research", "inputs": {"topic": "caps"}}, format="json")
    assert response.status_code == 202, response.json()

    run = wait_for_run(response.json()["id"], *TERMINAL)

    assert run.status == "completed", run.error
    assert run.provider_routes == {"copilot": "openai", "claude": "anthropic"}
    assert [(r.body["model"], r.path) for r in openai.received] == [("gpt-4o", "/v1/chat/completions")]
    # Copilot's name for the model, asked of Anthropic by Anthropic's; the ledger keeps the name written.
    assert [r.body["model"] for r in anthropic.received] == ["claude-sonnet-4-5"]
    entries = LedgerEntry.objects.filter(run=run).order_by("id")
    assert [(e.agent, e.provider, e.model) for e in entries] == [
        ("researcher", "openai", "gpt-4o"),
        ("reviewer", "anthropic", "claude-sonnet-4.5"),
    ]
    # 100 x $2.50 + 20 x $10, then 50 x $3 + 10 x $15, per million tokens
    assert run.spent_usd == Decimal("0.000750") == sum(e.cost_usd for e in entries)
    assert_invariants(run)
