"""Conductor's agent timeouts on a real worker, against a wire-compatible OpenAI server: the runtime's
max_session_seconds and an agent's own timeout_seconds bound its one call; a call past its agent's
deadline fails the run at the deadline, uncharged and not tried again, and a resume runs it anew."""

import json
from datetime import date

import pytest

from tests.conftest import wait_for_run
from tests.invariants import assert_invariants
from tests.providers.wire import WireServer, openai_completion, openai_usage
from workflows.models import EventType, LedgerEntry, Price

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed", "budget_exceeded", "iteration_limit", "timed_out", "cancelled")

SUPPORT_REPLY = """
workflow:
  name: support-reply
  description: Draft a reply to a ticket, then polish it quickly or not at all
  entry_point: draft
  runtime:
    provider: openai
    default_model: gpt-4o
    max_tokens: 400
    max_session_seconds: 30
  input:
    ticket: {type: string, required: true}
  limits: {budget_usd: 1, budget_mode: enforce}

agents:
  - name: draft
    prompt: "Draft a reply to this ticket: {{ workflow.input.ticket }}"
    output:
      reply: {type: string}
    routes: [{to: polish}]

  - name: polish
    timeout_seconds: 1
    prompt: "Polish this reply: {{ draft.output.reply }}"
"""


@pytest.fixture
def openai_server(settings):
    with WireServer() as server:
        settings.OPENAI_API_KEY = "sk-test-openai-0123456789"
        settings.OPENAI_BASE_URL = f"{server.url}/v1"
        yield server


def test_a_call_past_its_agents_deadline_fails_the_run_charged_its_estimate_and_a_resume_runs_it_anew(
    api, team, openai_server, celery_worker
):
    Price.objects.create(model="gpt-4o", input_per_mtok="2.5", output_per_mtok="10", valid_from=date(2024, 1, 1))
    slow = openai_completion("Dear customer, ...", openai_usage(prompt=40, completion=20))
    slow.delay_seconds = 4
    openai_server.script(
        openai_completion(json.dumps({"reply": "We are on it."}), openai_usage(prompt=30, completion=10)), slow
    )
    assert api.post("/api/v1/workflows", {"definition": SUPPORT_REPLY}, format="json").status_code == 201
    response = api.post("/api/v1/runs", {"workflow": "support-reply", "inputs": {"ticket": "refund"}}, format="json")
    assert response.status_code == 202, response.json()
    run_id = response.json()["id"]

    run = wait_for_run(run_id, *TERMINAL)

    assert run.status == "failed"
    assert run.error["type"] == "ProviderError"
    assert run.error["message"].startswith("OpenAI took longer than the agent's deadline of 1 s")
    polish = run.steps.get(agent="polish")
    assert (polish.finished_at - polish.started_at).total_seconds() < 3  # at the deadline, not the answer
    assert len(openai_server.received) == 2  # the draft, and polish once: not tried again
    assert not run.events.filter(type=EventType.PROVIDER_RETRY).exists()
    # The abandoned call was sent, and may be billed: charged its reservation as an estimate.
    assert list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "basis")) == [
        ("draft", "reported"),
        ("polish", "estimated"),
    ]
    assert_invariants(run)

    openai_server.script(openai_completion("Dear customer, your refund is on its way.", openai_usage(prompt=40, completion=20)))
    resumed = api.post(f"/api/v1/runs/{run_id}/resume", {"reason": "the model is quick again"}, format="json")
    assert resumed.status_code == 202, resumed.json()

    run = wait_for_run(run_id, "completed", "failed")

    assert run.status == "completed", run.error
    assert run.steps.filter(agent="draft").count() == 1  # the draft is not run again
    assert list(LedgerEntry.objects.filter(run=run).order_by("id").values_list("agent", "attempt", "basis")) == [
        ("draft", 1, "reported"),
        ("polish", 1, "estimated"),
        ("polish", 2, "reported"),
    ]
    assert_invariants(run)
