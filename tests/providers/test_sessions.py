"""A call that continues a session (conductor's session_key): its earlier exchanges go to each provider
as real user and assistant messages before its prompt, and count in its input wherever input is counted."""

from workflows.definition import count_tokens, fake_token_count
from workflows.providers import CompletionRequest, SessionExchange, get_provider
from workflows.providers._calls import worst_case_usage
from workflows.providers.anthropic import _params as anthropic_params
from workflows.providers.openai import _params as openai_params

HISTORY = (
    SessionExchange(prompt="Why is the suite slow?", answer='{"finding": "a sleep", "confident": false}'),
    SessionExchange(prompt="Go on.", answer='{"finding": "a 2 s sleep in a fixture", "confident": true}'),
)


def request(**overrides) -> CompletionRequest:
    fields = {"model": "m", "system_prompt": "Be brief.", "prompt": "Summarise.", "max_tokens": 100}
    return CompletionRequest(**{**fields, **overrides})


def test_openai_is_sent_the_exchanges_after_the_system_prompt_and_before_the_prompt():
    assert openai_params(request(history=HISTORY))["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Why is the suite slow?"},
        {"role": "assistant", "content": '{"finding": "a sleep", "confident": false}'},
        {"role": "user", "content": "Go on."},
        {"role": "assistant", "content": '{"finding": "a 2 s sleep in a fixture", "confident": true}'},
        {"role": "user", "content": "Summarise."},
    ]


def test_anthropic_is_sent_the_exchanges_before_the_prompt_the_system_prompt_apart():
    params = anthropic_params(request(history=HISTORY[:1]))

    assert params["system"] == "Be brief."
    assert params["messages"] == [
        {"role": "user", "content": "Why is the suite slow?"},
        {"role": "assistant", "content": '{"finding": "a sleep", "confident": false}'},
        {"role": "user", "content": "Summarise."},
    ]


def test_a_call_without_a_session_sends_its_prompt_alone():
    assert openai_params(request())["messages"][1:] == [{"role": "user", "content": "Summarise."}]
    assert anthropic_params(request())["messages"] == [{"role": "user", "content": "Summarise."}]


def test_the_fake_and_the_worst_case_bill_count_the_history():
    continued, alone = request(history=HISTORY), request()
    history = continued.history_text()

    assert history.startswith('[{"user": "Why is the suite slow?", "assistant": ')
    assert get_provider("fake").complete(continued).input_tokens == fake_token_count("Be brief." + history + "Summarise.")
    assert get_provider("fake").complete(continued).input_tokens > get_provider("fake").complete(alone).input_tokens
    assert worst_case_usage(continued, request_id="r").input_tokens == count_tokens("Be brief." + history + "Summarise.")


def test_anthropic_is_sent_no_empty_message_for_an_earlier_execution_that_answered_nothing():
    # Anthropic refuses "all messages must have non-empty content except for the optional final
    # assistant message": an empty answer replayed would fail every later call of the session.
    history = (SessionExchange(prompt="Think it over.", answer=""), *HISTORY[:1])

    assert anthropic_params(request(history=history))["messages"] == [
        {"role": "user", "content": "Think it over."},
        {"role": "user", "content": "Why is the suite slow?"},
        {"role": "assistant", "content": '{"finding": "a sleep", "confident": false}'},
        {"role": "user", "content": "Summarise."},
    ]
