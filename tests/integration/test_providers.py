"""A workflow with `provider: openai` on a real worker, its endpoint from OPENAI_BASE_URL: the real SDK
against a wire-compatible server, a rate limit retried through Celery, spend equal to the usage served."""

import json
from datetime import date
from decimal import Decimal

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from tests.providers.wire import WireServer, openai_completion, openai_error, openai_stream, openai_usage
from workflows.models import EventType, LedgerEntry, Price, Run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

WORKFLOW = """
workflow:
  name: openai-pipeline
  entry_point: researcher
  input: {topic: {type: string, required: true}}
  runtime: {provider: openai, default_model: gpt-4o, max_tokens: 1000}
  limits: {budget_usd: 1, budget_mode: enforce}
agents:
  - name: researcher
    prompt: "Research {{ workflow.input.topic }}."
    output: {findings: {type: string}}
    routes: [{to: writer}]
  - name: writer
    stream: true
    prompt: "Write up {{ researcher.output.findings }}."
    output: {draft: {type: string}}
"""


@pytest.fixture
def openai_server(settings):
    with WireServer() as server:
        settings.OPENAI_API_KEY = "sk-test-env-0123456789"
        settings.OPENAI_BASE_URL = f"{server.url}/v1"
        yield server


def test_an_openai_workflow_runs_on_a_worker_and_spends_exactly_what_the_server_reported(
    api, team, openai_server, celery_worker
):
    Price.objects.create(
        model="gpt-4o", input_per_mtok="2.5", cached_input_per_mtok="1.25", output_per_mtok="10", valid_from=date(2024, 1, 1)
    )
    openai_server.script(
        openai_error(429, "Rate limit reached", headers={"retry-after": "0"}),
        openai_completion(json.dumps({"findings": "caps hold"}), openai_usage(prompt=1500, completion=200), request_id="r1"),
        openai_stream(['{"draft": ', '"Budgets hold."}'], openai_usage(prompt=2000, completion=400, cached=1024), request_id="r2"),
    )
    assert api.post("/api/v1/workflows", {"definition": WORKFLOW}, format="json").status_code == 201
    response = api.post("/api/v1/runs", {"workflow": "openai-pipeline", "inputs": {"topic": "caps"}}, format="json")
    assert response.status_code == 202, response.json()

    run = wait_for_run(response.json()["id"], *TERMINAL)

    assert run.status == "completed", run.error
    assert run.steps.get(agent="writer").output == {"draft": "Budgets hold."}
    entries = list(LedgerEntry.objects.filter(run=run).order_by("id"))
    assert [(e.agent, e.attempt, e.request_id) for e in entries] == [("researcher", 2, "r1"), ("writer", 1, "r2")]
    # researcher: 1,500 x $2.50 + 200 x $10; writer: 976 x $2.50 + 1,024 x $1.25 + 400 x $10 (per 1M)
    expected = (Decimal(1500 * 2.5 + 200 * 10) + Decimal(976) * Decimal("2.5") + 1024 * Decimal("1.25") + 4000) / 10**6
    assert run.spent_usd == expected.quantize(Decimal("0.000001")) == sum(e.cost_usd for e in entries)
    assert run.events.filter(type=EventType.PROVIDER_RETRY).count() == 1
    assert openai_server.received[2].body["stream_options"] == {"include_usage": True}
    assert_invariants(run)
    assert Run.objects.get(pk=run.pk).reserved_usd == 0


def test_a_step_whose_provider_reports_absurd_usage_runs_once_on_a_worker_and_is_charged_its_worst_case(
    api, team, openai_server, celery_worker
):
    """3·10^9 tokens once failed the settlement (integer out of range on PostgreSQL): the step was
    redelivered until it was parked, called four times and charged nothing."""
    Price.objects.create(model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", valid_from=date(2024, 1, 1))
    absurd = {"prompt_tokens": 3_000_000_000, "completion_tokens": 200}
    openai_server.script(
        openai_completion(json.dumps({"findings": "caps hold"}), absurd, request_id="r1"),
        openai_stream(['{"draft": "Budgets hold."}'], openai_usage(prompt=2000, completion=400), request_id="r2"),
    )
    assert api.post("/api/v1/workflows", {"definition": WORKFLOW}, format="json").status_code == 201
    response = api.post("/api/v1/runs", {"workflow": "openai-pipeline", "inputs": {"topic": "caps"}}, format="json")

    run = wait_for_run(response.json()["id"], *TERMINAL)

    assert run.status == "completed", run.error
    assert len(openai_server.received) == 2  # each step called once
    researcher = LedgerEntry.objects.get(run=run, agent="researcher")
    assert (researcher.attempt, researcher.output_tokens, researcher.request_id) == (1, 1000, "r1")
    assert researcher.cost_usd == run.steps.get(agent="researcher").estimate_usd
    assert run.events.filter(type=EventType.USAGE_REJECTED).count() == 1
    assert run.spent_usd == researcher.cost_usd + Decimal("0.009000")  # 2,000 x $2.50 + 400 x $10 per 1M
    assert_invariants(run)
