"""What a step of a keyed agent keeps of its call for the later calls of its session."""

from workflows.providers import CompletionRequest
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
