"""Tool calling with the anthropic provider: the real SDK against a wire-compatible server, streamed
and not. A call of a tool loop sends the tools and the loop's turns, and comes back as the tool calls
the model asked for, with its message to send back as it came (signed thinking included), or as the
answer, read as ever: text, or the answer tool's input for an output schema."""

import json

import pytest

from tests.providers.conftest import SECRET_KEY_FOR_TESTS
from tests.providers.wire import anthropic_message, anthropic_stream, anthropic_stream_blocks, anthropic_usage
from workflows.providers import AssistantTurn, CompletionRequest, Credentials, ProviderError, ToolCall, ToolResult, ToolSpec
from workflows.providers.anthropic import UNTAKEN_ANSWER, AnthropicProvider

WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city.",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CLOCK = ToolSpec(name="clock", description="The time now.", input_schema={"type": "object", "properties": {}})
OUTPUT = {"summary": {"type": "string"}}
THINKING = {"type": "thinking", "thinking": "The user wants the weather first.", "signature": "sig_abc=="}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"}


def request(*, stream: bool, **fields) -> CompletionRequest:
    defaults = {
        "model": "claude-sonnet-4-5",
        "system_prompt": "Be brief.",
        "prompt": "Plan the day.",
        "max_tokens": 1000,
        "tools": (WEATHER, CLOCK),
    }
    return CompletionRequest(**{**defaults, **fields}, stream=stream)


def complete(wire, req: CompletionRequest):
    return AnthropicProvider().complete(req, credentials=Credentials(api_key=SECRET_KEY_FOR_TESTS, base_url=wire.url))


def tool_use(id_: str, name: str, input_: dict) -> dict:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


def message(blocks: list[dict], usage: dict, *, stream: bool, json_texts: dict[int, str] | None = None):
    """The same message, unstreamed or streamed as Anthropic streams it: text and thinking in
    pieces, the signature in a delta of its own, each tool's input as pieces of JSON text
    (`json_texts` gives, by block index, the text to stream in place of the input's own JSON)."""
    if not stream:
        return anthropic_message(blocks, usage)
    streamed = []
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            text = block["text"]
            streamed.append(
                ({"type": "text", "text": ""}, [{"type": "text_delta", "text": text[i : i + 4]} for i in range(0, len(text), 4)])
            )
        elif block["type"] == "thinking":
            pieces = [
                {"type": "thinking_delta", "thinking": block["thinking"][i : i + 7]} for i in range(0, len(block["thinking"]), 7)
            ]
            streamed.append(
                ({"type": "thinking", "thinking": ""}, [*pieces, {"type": "signature_delta", "signature": block["signature"]}])
            )
        elif block["type"] == "tool_use":
            text = (json_texts or {}).get(index, json.dumps(block["input"]))
            size = max(5, -(-len(text) // 8))
            pieces = [{"type": "input_json_delta", "partial_json": text[i : i + size]} for i in range(0, len(text), size)]
            streamed.append(({**block, "input": {}}, pieces))
        else:
            streamed.append((block, []))
    output_tokens = usage["output_tokens"]
    return anthropic_stream_blocks(streamed, start_usage={**usage, "output_tokens": 1}, final_output_tokens=output_tokens)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_come_back_with_the_whole_message_to_replay_signed_thinking_included_and_the_usage(wire, stream):
    blocks = [
        THINKING,
        REDACTED,
        {"type": "text", "text": "Let me check."},
        tool_use("toolu_1", "weather", {"city": "Oslo"}),
        tool_use("toolu_2", "clock", {}),
    ]
    wire.script(message(blocks, anthropic_usage(1000, 80, cache_write=2000, cache_read=10_000), stream=stream))

    result = complete(wire, request(stream=stream, reasoning_effort="low"))

    assert result.output is None
    assert result.tool_calls == (ToolCall("toolu_1", "weather", {"city": "Oslo"}), ToolCall("toolu_2", "clock", {}))
    assert result.replay == {"role": "assistant", "content": blocks}
    usage = (result.input_tokens, result.cache_write_tokens, result.cached_input_tokens, result.output_tokens)
    assert usage == (1000, 2000, 10_000, 80)
    sent = wire.received[0].body
    assert sent["tools"] == [
        {"name": "weather", "description": "The weather in a city.", "input_schema": WEATHER.input_schema},
        {"name": "clock", "description": "The time now.", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert sent["tool_choice"] == {"type": "auto"} and sent["thinking"]["type"] == "enabled"


@pytest.mark.parametrize("stream", [False, True])
def test_a_transcript_replays_each_answer_as_it_came_then_one_message_of_its_tool_results(wire, stream):
    first = {
        "role": "assistant",
        "content": [THINKING, tool_use("toolu_1", "weather", {"city": "Oslo"}), tool_use("toolu_2", "clock", {})],
    }
    second = {"role": "assistant", "content": [REDACTED, tool_use("toolu_3", "weather", {"city": "Bergen"})]}
    transcript = (
        AssistantTurn(calls=(ToolCall("toolu_1", "weather", {"city": "Oslo"}), ToolCall("toolu_2", "clock", {})), replay=first),
        ToolResult(call_id="toolu_1", name="weather", content="Rain, 9 C."),
        ToolResult(call_id="toolu_2", name="clock", content="clock is down", is_error=True),
        AssistantTurn(calls=(ToolCall("toolu_3", "weather", {"city": "Bergen"}),), replay=second),
        ToolResult(call_id="toolu_3", name="weather", content="Sun, 14 C."),
    )
    wire.script(message([{"type": "text", "text": "Take an umbrella."}], anthropic_usage(300, 10), stream=stream))

    result = complete(wire, request(stream=stream, transcript=transcript, reasoning_effort="low"))

    assert result.output == "Take an umbrella." and result.tool_calls == () and result.replay is None
    assert wire.received[0].body["messages"] == [
        {"role": "user", "content": "Plan the day."},
        first,
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rain, 9 C.", "is_error": False},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "clock is down", "is_error": True},
            ],
        },
        second,
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_3", "content": "Sun, 14 C.", "is_error": False}],
        },
    ]


@pytest.mark.parametrize("stream", [False, True])
def test_with_an_output_schema_the_answer_tool_is_offered_beside_the_tools_and_not_forced(wire, stream):
    answer = [THINKING, tool_use("toolu_9", "output", {"summary": "Umbrella."})]
    wire.script(message(answer, anthropic_usage(300, 10), stream=stream))

    result = complete(wire, request(stream=stream, output_schema=OUTPUT))

    assert result.output == {"summary": "Umbrella."} and result.tool_calls == () and result.replay is None
    sent = wire.received[0].body
    assert [tool["name"] for tool in sent["tools"]] == ["weather", "clock", "output"]
    assert sent["tools"][2]["input_schema"]["required"] == ["summary"]
    assert sent["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_tools_input_that_does_not_fit_the_schema_fails_carrying_its_usage(wire, stream):
    wire.script(message([tool_use("toolu_9", "output", {"summary": 3})], anthropic_usage(300, 10), stream=stream))

    with pytest.raises(ProviderError) as error:
        complete(wire, request(stream=stream, output_schema=OUTPUT))

    assert "does not fit the agent's output schema" in error.value.message
    assert not error.value.retryable and error.value.usage.output_tokens == 10


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_win_over_an_answer_beside_them_which_is_told_it_was_not_taken_next_time(wire, stream):
    blocks = [
        {"type": "text", "text": "Checking."},
        tool_use("toolu_1", "weather", {"city": "Oslo"}),
        tool_use("toolu_9", "output", {"summary": "Guess."}),
    ]
    wire.script(
        message(blocks, anthropic_usage(300, 10), stream=stream),
        anthropic_message([tool_use("toolu_10", "output", {"summary": "Rain."})], anthropic_usage(400, 10)),
    )

    result = complete(wire, request(stream=stream, output_schema=OUTPUT))

    assert result.tool_calls == (ToolCall("toolu_1", "weather", {"city": "Oslo"}),)
    assert result.replay == {"role": "assistant", "content": blocks}
    transcript = (
        AssistantTurn(calls=result.tool_calls, replay=result.replay),
        ToolResult(call_id="toolu_1", name="weather", content="Rain."),
    )
    assert complete(wire, request(stream=False, output_schema=OUTPUT, transcript=transcript)).output == {"summary": "Rain."}
    # Every tool_use of a turn needs its tool_result, the answer tool's too.
    assert wire.received[1].body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Rain.", "is_error": False},
        {"type": "tool_result", "tool_use_id": "toolu_9", "content": UNTAKEN_ANSWER, "is_error": True},
    ]


def test_a_tool_named_as_the_answer_tool_beside_an_output_schema_is_refused_before_any_call(wire):
    clash = ToolSpec(name="output", description="Writes a file.", input_schema={"type": "object"})

    with pytest.raises(ProviderError) as error:
        complete(wire, request(stream=False, output_schema=OUTPUT, tools=(clash,)))

    assert "cannot have a tool named 'output'" in error.value.message
    assert not error.value.retryable and error.value.usage is None and wire.received == []


def test_without_an_output_schema_a_tool_may_be_named_output_and_the_answer_is_text(wire):
    named_output = ToolSpec(name="output", description="Writes a file.", input_schema={"type": "object"})
    wire.script(
        anthropic_message([tool_use("toolu_1", "output", {"path": "a.txt"})], anthropic_usage(10, 10)),
        anthropic_message([{"type": "text", "text": "Written."}], anthropic_usage(10, 10)),
    )

    assert complete(wire, request(stream=False, tools=(named_output,))).tool_calls == (
        ToolCall("toolu_1", "output", {"path": "a.txt"}),
    )
    assert complete(wire, request(stream=False, tools=(named_output,))).output == "Written."
    assert "tool_choice" in wire.received[0].body and wire.received[0].body["tool_choice"] == {"type": "auto"}


def test_a_streamed_tool_without_arguments_gets_an_empty_object(wire):
    # Anthropic streams such a tool's input as one empty piece of JSON.
    wire.script(message([tool_use("toolu_1", "clock", {})], anthropic_usage(10, 10), stream=True, json_texts={0: ""}))

    assert complete(wire, request(stream=True)).tool_calls == (ToolCall("toolu_1", "clock", {}),)


@pytest.mark.parametrize("text", ['{"city": "Os', '["Oslo"]', "[" * 60_000])
def test_streamed_arguments_that_are_no_json_object_come_back_as_written_under_unparsed(wire, text):
    wire.script(message([tool_use("toolu_1", "weather", {})], anthropic_usage(10, 10), stream=True, json_texts={0: text}))

    result = complete(wire, request(stream=True))

    assert result.tool_calls == (ToolCall("toolu_1", "weather", {"_unparsed": text}),)
    # Messages takes an object as a tool's input: the replay sends the arguments as the call has them.
    assert result.replay["content"] == [tool_use("toolu_1", "weather", {"_unparsed": text})]


def test_an_unstreamed_input_that_is_no_object_comes_back_as_its_json_under_unparsed(wire):
    wire.script(anthropic_message([tool_use("toolu_1", "weather", ["Oslo"])], anthropic_usage(10, 10)))

    assert complete(wire, request(stream=False)).tool_calls == (ToolCall("toolu_1", "weather", {"_unparsed": '["Oslo"]'}),)


@pytest.mark.parametrize("stream", [False, True])
def test_a_message_may_ask_for_64_tool_calls_and_no_more(wire, stream):
    usage = anthropic_usage(100, 2000, cache_read=50)
    many = [tool_use(f"toolu_{n}", "clock", {}) for n in range(65)]
    wire.script(message(many[:64], usage, stream=stream), message(many, usage, stream=stream))

    assert len(complete(wire, request(stream=stream)).tool_calls) == 64
    with pytest.raises(ProviderError) as error:
        complete(wire, request(stream=stream))

    assert error.value.message == "Anthropic's answer asked for 65 tool calls, more than PROVIDER_TOOL_CALLS_MAX (64)."
    assert not error.value.retryable
    assert (error.value.usage.input_tokens, error.value.usage.cached_input_tokens, error.value.usage.output_tokens) == (
        100,
        50,
        2000,
    )


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_calls_arguments_may_be_64_kib_and_no_more(wire, stream):
    def arguments(size: int) -> dict:
        return {"text": "x" * (size - len('{"text": ""}'))}

    usage = anthropic_usage(100, 30_000)
    wire.script(
        message([tool_use("toolu_1", "weather", arguments(65_536))], usage, stream=stream),
        message([tool_use("toolu_1", "clock", {}), tool_use("toolu_2", "weather", arguments(65_537))], usage, stream=stream),
    )

    assert len(complete(wire, request(stream=stream)).tool_calls[0].arguments["text"]) == 65_536 - 12
    with pytest.raises(ProviderError) as error:
        complete(wire, request(stream=stream))

    assert error.value.message == (
        "Anthropic's answer has a tool call whose arguments are 65537 bytes, more than PROVIDER_TOOL_ARGUMENTS_MAX_BYTES (65536)."
    )
    assert not error.value.retryable and error.value.usage.output_tokens == 30_000


def test_a_request_without_tools_is_sent_and_read_as_before(wire):
    wire.script(
        anthropic_stream(tool_json_pieces=['{"summary": "Fine."}'], start_usage=anthropic_usage(10, 1), final_output_tokens=10)
    )

    result = complete(wire, request(stream=True, tools=(), output_schema=OUTPUT))

    assert result.output == {"summary": "Fine."} and result.tool_calls == () and result.replay is None
    sent = wire.received[0].body
    assert [tool["name"] for tool in sent["tools"]] == ["output"] and sent["tool_choice"] == {"type": "tool", "name": "output"}
