"""What a step of a keyed agent keeps of its call for the later calls of its session."""

import pytest

from tests.conductor.test_group_validator_steps import begin, run_step
from tests.factories import workflow_version
from workflows.definition import tokens
from workflows.providers import CompletionRequest
from workflows.services import renders
from workflows.services.runs import run_start
from workflows.services.steps.kinds import agent
from workflows.services.steps.kinds import PreparedStep
from workflows.services.steps.sessions import session_kept


def prepared(prompt: str, *, session: dict | None = None) -> PreparedStep:
    request = CompletionRequest(model="m", system_prompt="", prompt=prompt, max_tokens=10)
    return PreparedStep(kind="agent", estimate_usd=None, request=request, session=session)


def test_the_answering_call_keeps_its_prompt_and_one_that_asked_for_tools_keeps_only_the_count():
    call = prepared("Plan it.", session={"key": "trip", "exchanges": 1})

    assert session_kept(prepared=call, role="", output={"plan": "x"}) == {"key": "trip", "exchanges": 1, "prompt": "Plan it."}
    assert session_kept(prepared=call, role="model_call", output={"answer": "x"})["prompt"] == "Plan it."
    assert session_kept(prepared=call, role="model_call", output={"tool_calls": [], "replay": {}}) == {
        "key": "trip",
        "exchanges": 1,
    }


def test_a_call_that_continues_no_session_keeps_nothing():
    assert session_kept(prepared=prepared("Plan it."), role="", output={"plan": "x"}) is None


def test_a_prompt_is_kept_as_the_database_can_store_it():
    kept = session_kept(prepared=prepared("a\x00b\ud800", session={"key": "k", "exchanges": 0}), role="", output="x")

    assert kept["prompt"] == "ab?"


KEYED = """
workflow:
  name: keyed
  entry_point: ask
  runtime: {provider: fake, default_model: sim, max_tokens: 1000}
  cost: {pricing: {sim: {input_per_mtok: 1, output_per_mtok: 100}}}
agents:
  - name: ask
    session_key: notes
    prompt: "Ask once more."
    routes:
      - {to: ask, when: "{{ ask.output.text.startswith('again') }}"}
      - {to: $end}
"""


@pytest.mark.django_db
def test_a_keyed_call_counts_its_sessions_tokens_before_its_transaction_not_under_its_locks(team, monkeypatch):
    counted = []

    def count_tokens(text: str) -> int:
        kept = renders._kept.get()
        counted.append("under the locks" if kept is not None and not kept.recording else "ahead")
        return tokens.count_tokens(text)

    monkeypatch.setattr(agent, "count_tokens", count_tokens)
    version = workflow_version(team=team, source=KEYED)
    run = run_start(team=team, workflow=version.workflow_id, inputs={})
    run_step(run.steps.get(), {"text": "again" * 10_000})
    counted.clear()

    second = begin(run.steps.get(status="pending"))

    assert len(second.prepared.request.history) == 1
    assert counted == ["ahead"]
