"""An agent's validator where a tenant's workflow pushes at its edges: a rendered prompt the database
cannot store as it is, a validator's call that fails with usage and routes on, and an agent whose
output cap is too small for a verdict."""

from decimal import Decimal

import pytest

from tests.invariants import assert_invariants
from tests.steps import next_step
from workflows.models import StepStatus
from workflows.providers import ProviderError, Usage
from workflows.services.runs import run_start
from workflows.services.steps import step_execute
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db


# The agent's rendered prompt is kept for its validator in the transaction that settles the agent's
# call. A rendered prompt can hold a NUL, which PostgreSQL's jsonb refuses: were it kept as it is, the
# settlement would roll back, and the call made would go uncharged, again at every takeover.
NUL_PROMPT = """
workflow:
  name: nul-prompt
  entry_point: writer
  runtime: {provider: fake, default_model: sim}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 1000}}}
agents:
  - name: writer
    prompt: "Write a summary.{{ '%c' | format(0) }}"
    max_tokens: 100
    mock: {output: {summary: short}, output_tokens: 10}
    validator:
      criteria: "Short."
      mock: {output: {passed: true, issues: []}, output_tokens: 5}
"""


def test_an_agent_call_whose_prompt_holds_a_nul_is_charged_once_per_call(team, monkeypatch):
    """On PostgreSQL, where jsonb refuses a NUL (SQLite's JSON text takes it)."""
    from django.db import DataError

    from workflows.providers.fake import FakeProvider

    calls = []

    class CountingFake(FakeProvider):
        def complete(self, request, *, credentials=None):
            calls.append(request.prompt)
            return super().complete(request, credentials=credentials)

    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: CountingFake())
    workflow_create(team=team, definition=NUL_PROMPT)
    run = run_start(team=team, workflow="nul-prompt", inputs={})
    writer = next_step(run)

    # The task's first delivery, then the sweeper's resends, each taking the crashed attempt over.
    for _ in range(3):
        try:
            step_execute(step_id=writer.pk)
        except DataError:
            pass  # "unsupported Unicode escape sequence": the settlement rolled back

    writer.refresh_from_db()
    assert len(calls) == run.ledger_entries.count(), f"{len(calls)} calls made, {run.ledger_entries.count()} charged"
    assert writer.status == StepStatus.SUCCEEDED
    assert next_step(run).role == "validator"
    assert_invariants(run)


# A validator's call that fails with usage is charged in the transaction that then routes on
# (fail-open): what is rendered ahead must count that charge, or a route reading `budget.*` is
# rendered again, under the run's locks, on every try.
BUDGET_ROUTE = """
workflow:
  name: budget-route
  entry_point: writer
  runtime: {provider: fake, default_model: sim}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 1000}}}
agents:
  - name: writer
    prompt: "Write a summary."
    max_tokens: 100
    mock: {output: {summary: short}, output_tokens: 10}
    validator:
      criteria: "Short."
    routes:
      - to: $end
        when: "{{ budget.spent_usd < 100 }}"
"""


class OffSchemaGrader:
    name = "fake"
    needs_credentials = False

    def complete(self, request, *, credentials=None):
        raise ProviderError("The model's answer is not JSON: 'Looks good'", usage=Usage(input_tokens=50, output_tokens=5))


def test_a_validator_that_failed_with_usage_routes_from_what_was_rendered_ahead(team, monkeypatch):
    from workflows.services.steps import execute

    workflow_create(team=team, definition=BUDGET_ROUTE)
    run = run_start(team=team, workflow="budget-route", inputs={})
    step_execute(step_id=next_step(run).pk)
    validator = next_step(run)
    assert validator.role == "validator"

    transactions = []
    locked = execute._provider_failed_under_locks

    def counted(**kwargs):
        transactions.append(1)
        return locked(**kwargs)

    monkeypatch.setattr(execute, "_provider_failed_under_locks", counted)
    monkeypatch.setattr("workflows.services.steps.kinds.agent.get_provider", lambda name: OffSchemaGrader())
    step_execute(step_id=validator.pk)

    run.refresh_from_db()
    assert run.status == "completed"
    assert run.spent_usd == Decimal("0.015000")  # 10 + 5 output tokens at $1,000 per million
    assert len(transactions) == 1, f"the settling transaction ran {len(transactions)} times (StaleRender)"
    assert_invariants(run)


# A validator's call has its own output cap, as conductor's validator does: an agent with a short
# answer (a label) must not leave its validator too little room for a verdict, which it would cut off
# mid-JSON and fail-open would then pass.
SHORT_ANSWER = """
workflow:
  name: short-answer
  entry_point: labeler
  runtime: {provider: fake, default_model: sim}
  cost: {pricing: {sim: {input_per_mtok: 0, output_per_mtok: 1000}}}
agents:
  - name: labeler
    prompt: "Label this ticket: spam or ham."
    output: {label: {type: string, enum: [spam, ham]}}
    max_tokens: 8
    mock: {output: {label: spam}, output_tokens: 4}
    validator:
      criteria: "Only newsletters are spam."
"""


def test_a_validator_s_call_has_room_for_a_verdict_whatever_its_agent_s_cap(team):
    from workflows.definition import count_tokens
    from workflows.services.steps import step_begin

    workflow_create(team=team, definition=SHORT_ANSWER)
    run = run_start(team=team, workflow="short-answer", inputs={})
    step_execute(step_id=next_step(run).pk)
    validator = next_step(run)

    attempt = step_begin(step_id=validator.pk, worker="host:1")

    shortest_failing_verdict = '{"passed": false, "issues": ["Newsletters only."]}'
    assert attempt.prepared.request.max_tokens >= count_tokens(shortest_failing_verdict), (
        f"the validator may answer {attempt.prepared.request.max_tokens} tokens: its agent's cap"
    )
