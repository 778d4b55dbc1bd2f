"""Tool calling with the openai provider: the real SDK against a wire-compatible server, streamed and
not. A call of a tool loop sends the tools and the loop's turns, and comes back as the tool calls the
model asked for, with the message to send back next time, or as the answer, read as ever."""

import json

import pytest

from tests.providers.conftest import SECRET_KEY_FOR_TESTS
from tests.providers.wire import openai_completion, openai_message, openai_stream, openai_stream_deltas, openai_usage
from workflows.providers import AssistantTurn, CompletionRequest, Credentials, ProviderError, ToolCall, ToolResult, ToolSpec
from workflows.providers.openai import OpenAIProvider

WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city.",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolSpec(name="clock", description="The time now.", input_schema={"type": "object", "properties": {}})
OUTPUT = {"summary": {"type": "string"}}


def request(*, stream: bool, **fields) -> CompletionRequest:
    defaults = {
        "model": "gpt-4o",
        "system_prompt": "Be brief.",
        "prompt": "Plan the day.",
        "max_tokens": 1000,
        "tools": (WEATHER, CLOCK),
    }
    return CompletionRequest(**{**defaults, **fields}, stream=stream)


def complete(wire, req: CompletionRequest):
    return OpenAIProvider().complete(req, credentials=Credentials(api_key=SECRET_KEY_FOR_TESTS, base_url=f"{wire.url}/v1"))


def call(id_: str, name: str, arguments: str) -> dict:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_calls_answer(calls: list[dict], usage: dict, *, stream: bool, content: str | None = None):
    """The same answer, unstreamed or streamed as OpenAI streams it: the text, then each call's id
    and name whole and its arguments in (at most 8) pieces, by index."""
    if not stream:
        return openai_message({"role": "assistant", "content": content, "tool_calls": calls}, usage)
    deltas = [{"role": "assistant", "content": content}] if content else []
    for index, whole in enumerate(calls):
        arguments = whole["function"]["arguments"]
        size = max(5, -(-len(arguments) // 8))
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": whole["id"],
                        "type": "function",
                        "function": {"name": whole["function"]["name"], "arguments": ""},
                    }
                ]
            }
        )
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + size]}}]}
            for i in range(0, len(arguments), size)
        ]
    return openai_stream_deltas(deltas, usage)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_come_back_with_their_parsed_arguments_the_message_to_replay_and_the_usage(wire, stream):
    calls = [call("call_1", "weather", '{"city": "Oslo"}'), call("call_2", "clock", "{}")]
    wire.script(tool_calls_answer(calls, openai_usage(prompt=1200, completion=40, cached=1000), stream=stream))

    result = complete(wire, request(stream=stream))

    assert result.output is None
    assert result.tool_calls == (ToolCall("call_1", "weather", {"city": "Oslo"}), ToolCall("call_2", "clock", {}))
    assert result.replay == {"role": "assistant", "content": None, "tool_calls": calls}
    assert (result.input_tokens, result.cached_input_tokens, result.output_tokens) == (200, 1000, 40)
    assert result.request_id == ("req_openai_stream" if stream else "req_openai_tools")
    sent = wire.received[0].body
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {"name": "weather", "description": "The weather in a city.", "parameters": WEATHER.input_schema},
        },
        {
            "type": "function",
            "function": {"name": "clock", "description": "The time now.", "parameters": {"type": "object", "properties": {}}},
        },
    ]
    assert sent["tool_choice"] == "auto"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_win_over_text_beside_them_which_stays_in_the_replay(wire, stream):
    calls = [call("call_1", "weather", '{"city": "Oslo"}')]
    wire.script(tool_calls_answer(calls, openai_usage(100, 20), stream=stream, content="Let me look."))

    result = complete(wire, request(stream=stream, output_schema=OUTPUT))

    assert result.output is None and [c.id for c in result.tool_calls] == ["call_1"]
    assert result.replay == {"role": "assistant", "content": "Let me look.", "tool_calls": calls}


def test_a_streamed_calls_id_and_name_are_kept_as_first_given_when_a_server_repeats_them(wire):
    # As Fireworks and NVIDIA NIM stream: id and name in every chunk, the arguments in pieces.
    pieces = ['{"city"', ': "Oslo"}']
    deltas = [
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": piece}}]} for piece in pieces
    ]
    wire.script(openai_stream_deltas(deltas, openai_usage(100, 20)))

    result = complete(wire, request(stream=True))

    assert result.tool_calls == (ToolCall("call_1", "weather", {"city": "Oslo"}),)


@pytest.mark.parametrize("stream", [False, True])
def test_a_transcript_is_sent_as_the_replayed_answers_each_followed_by_its_tool_results(wire, stream):
    first = {
        "role": "assistant",
        "content": None,
        "tool_calls": [call("call_1", "weather", '{"city": "Oslo"}'), call("call_2", "clock", "{}")],
    }
    second = {"role": "assistant", "content": "One more.", "tool_calls": [call("call_3", "weather", '{"city": "Bergen"}')]}
    transcript = (
        AssistantTurn(calls=(ToolCall("call_1", "weather", {"city": "Oslo"}), ToolCall("call_2", "clock", {})), replay=first),
        ToolResult(call_id="call_1", name="weather", content="Rain, 9 C."),
        ToolResult(call_id="call_2", name="clock", content="clock is down", is_error=True),
        AssistantTurn(calls=(ToolCall("call_3", "weather", {"city": "Bergen"}),), replay=second),
        ToolResult(call_id="call_3", name="weather", content="Sun, 14 C."),
    )
    answer = (
        openai_stream(["Take an umbrella."], openai_usage(300, 10))
        if stream
        else openai_completion("Take an umbrella.", openai_usage(300, 10))
    )
    wire.script(answer)

    result = complete(wire, request(stream=stream, transcript=transcript))

    assert result.output == "Take an umbrella." and result.tool_calls == () and result.replay is None
    assert wire.received[0].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Plan the day."},
        first,
        {"role": "tool", "tool_call_id": "call_1", "content": "Rain, 9 C."},
        # Chat Completions has no error flag: the model is told in the text.
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: clock is down"},
        second,
        {"role": "tool", "tool_call_id": "call_3", "content": "Sun, 14 C."},
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_the_answer_after_the_tools_is_read_and_checked_against_the_output_schema_as_ever(wire, stream):
    text = json.dumps({"summary": "Umbrella."})
    answer = (
        openai_stream([text[:10], text[10:]], openai_usage(300, 10)) if stream else openai_completion(text, openai_usage(300, 10))
    )
    wire.script(answer)

    result = complete(wire, request(stream=stream, output_schema=OUTPUT))

    assert result.output == {"summary": "Umbrella."} and result.tool_calls == ()
    sent = wire.received[0].body
    assert sent["response_format"]["json_schema"]["name"] == "output" and sent["tool_choice"] == "auto"


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_after_the_tools_that_does_not_fit_the_schema_fails_carrying_its_usage(wire, stream):
    text = json.dumps({"summary": 3})
    answer = openai_stream([text], openai_usage(300, 10)) if stream else openai_completion(text, openai_usage(300, 10))
    wire.script(answer)

    with pytest.raises(ProviderError) as error:
        complete(wire, request(stream=stream, output_schema=OUTPUT))

    assert "does not fit the agent's output schema" in error.value.message
    assert not error.value.retryable and error.value.usage.output_tokens == 10


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("arguments", ['{"city": "Os', '["Oslo"]', "", "[" * 60_000])
def test_arguments_that_are_no_json_object_come_back_as_written_under_unparsed(wire, stream, arguments):
    calls = [call("call_1", "weather", arguments)]
    wire.script(tool_calls_answer(calls, openai_usage(100, 20), stream=stream))

    result = complete(wire, request(stream=stream))

    assert result.tool_calls == (ToolCall("call_1", "weather", {"_unparsed": arguments}),)
    assert result.replay["tool_calls"] == calls  # sent back as the model wrote them


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_may_ask_for_64_tool_calls_and_no_more(wire, stream):
    usage = openai_usage(100, 2000)
    many = [call(f"call_{n}", "clock", "{}") for n in range(65)]
    wire.script(tool_calls_answer(many[:64], usage, stream=stream), tool_calls_answer(many, usage, stream=stream))

    assert len(complete(wire, request(stream=stream)).tool_calls) == 64
    with pytest.raises(ProviderError) as error:
        complete(wire, request(stream=stream))

    assert error.value.message == "OpenAI's answer asked for 65 tool calls, more than PROVIDER_TOOL_CALLS_MAX (64)."
    assert not error.value.retryable
    assert (error.value.usage.input_tokens, error.value.usage.output_tokens) == (100, 2000)  # billed as reported


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_calls_arguments_may_be_64_kib_and_no_more(wire, stream):
    def arguments(size: int) -> str:
        return json.dumps({"text": "x" * (size - len('{"text": ""}'))})

    usage = openai_usage(100, 30_000)
    wire.script(
        tool_calls_answer([call("call_1", "weather", arguments(65_536))], usage, stream=stream),
        tool_calls_answer([call("call_1", "weather", "{}"), call("call_2", "weather", arguments(65_537))], usage, stream=stream),
    )

    assert len(complete(wire, request(stream=stream)).tool_calls[0].arguments["text"]) == 65_536 - 12
    with pytest.raises(ProviderError) as error:
        complete(wire, request(stream=stream))

    assert error.value.message == (
        "OpenAI's answer has a tool call whose arguments are 65537 bytes, more than PROVIDER_TOOL_ARGUMENTS_MAX_BYTES (65536)."
    )
    assert not error.value.retryable and error.value.usage.output_tokens == 30_000


def test_the_caps_are_the_operators_to_set(wire, settings):
    settings.PROVIDER_TOOL_CALLS_MAX = 1
    wire.script(
        tool_calls_answer([call("call_1", "clock", "{}"), call("call_2", "clock", "{}")], openai_usage(10, 10), stream=False)
    )

    with pytest.raises(ProviderError, match=r"2 tool calls, more than PROVIDER_TOOL_CALLS_MAX \(1\)"):
        complete(wire, request(stream=False))


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_without_tools_sends_none_and_ignores_any_tool_calls_a_server_sends(wire, stream):
    calls = [call("call_1", "weather", "{}")]
    wire.script(tool_calls_answer(calls, openai_usage(10, 10), stream=stream, content="Plain answer."))

    result = complete(wire, request(stream=stream, tools=()))

    assert result.output == "Plain answer." and result.tool_calls == () and result.replay is None
    assert "tools" not in wire.received[0].body and "tool_choice" not in wire.received[0].body
