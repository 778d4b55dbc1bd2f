"""A validator's verdict from a real provider, read as conductor reads it: `passed` as text, `issues`
as one text or absent. The verdict's schema only steers the model; a verdict that fails the output
sends the agent back, whatever its form, and is never taken for a failed call (which fail-open would
turn into a pass)."""

import pytest

from tests.invariants import assert_invariants
from tests.providers.conftest import SECRET_KEY_FOR_TESTS, _base_url, drive
from tests.providers.wire import anthropic_message, anthropic_usage
from workflows.models import EventType
from workflows.services.credentials import credential_set
from workflows.services.runs import run_start
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

DEFINITION = """
workflow:
  name: graded
  entry_point: writer
  runtime: {provider: anthropic, default_model: claude-wire-test, max_tokens: 1000}
agents:
  - name: writer
    prompt: "Write a one-line summary."
    output: {summary: {type: string}}
    validator:
      criteria: "The summary names the product."
"""


def tool(answer: dict) -> list[dict]:
    return [{"type": "tool_use", "id": "toolu_1", "name": "output", "input": answer}]


@pytest.mark.parametrize(
    "verdict",
    [
        {"passed": False},  # no issues at all
        {"passed": False, "issues": "The summary does not name the product."},  # issues as one text (documented)
        {"passed": "false", "issues": ["The summary does not name the product."]},  # quoted boolean (documented)
    ],
    ids=["no-issues", "issues-as-text", "quoted-false"],
)
def test_a_failing_verdict_from_a_real_provider_sends_the_agent_back(team, wire, priced, verdict):
    credential_set(team=team, provider="anthropic", api_key=SECRET_KEY_FOR_TESTS, base_url=_base_url("anthropic", wire))
    workflow_create(team=team, definition=DEFINITION)
    run = run_start(team=team, workflow="graded", inputs={})
    wire.script(anthropic_message(tool({"summary": "It is fast."}), anthropic_usage(10, 10)))
    wire.script(anthropic_message(tool(verdict), anthropic_usage(10, 10)))
    wire.script(anthropic_message(tool({"summary": "Budgetsvc is fast."}), anthropic_usage(10, 10)))

    run = drive(run)

    assert run.status == "completed", run.error
    # The validator failed the output: the agent must be sent back with the feedback.
    assert list(run.steps.order_by("sequence").values_list("role", flat=True)) == ["", "validator", "rerun"]
    assert not run.events.filter(type=EventType.AGENT_VALIDATION_PASSED).exists()
    assert run.steps.get(role="rerun").output == {"summary": "Budgetsvc is fast."}
    assert_invariants(run)
