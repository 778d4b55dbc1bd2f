"""Anthropic's Messages API through the official SDK, with its own retries off: every attempt is the
step's to count. A structured answer is asked for as the input of a tool, the answer tool: the one the
model must call, or, beside a tool loop's tools, the one whose call is the answer."""

import json
import time
from typing import Any

import anthropic

from workflows.definition import is_count, json_schema, thinking_budget
from workflows.errors import OutboundRefused
from workflows.providers._calls import (
    call_timeout,
    checked_answer,
    checked_tool_calls,
    connection_error,
    deadline_passed,
    history_messages,
    missing_credentials,
    redact,
    sdk_client,
    status_error,
    stream_retryable,
    timeout_error,
    tool_arguments,
    unreadable_answer,
)
from workflows.providers.base import (
    AssistantTurn,
    CompletionRequest,
    CompletionResult,
    Credentials,
    ProviderError,
    ToolCall,
    ToolResult,
    Usage,
)

OUTPUT_TOOL = "output"
# What the model is told of an answer tool's call that came beside calls of other tools: every
# tool_use of a turn must have its tool_result, and the answer is asked for again after the tools ran.
UNTAKEN_ANSWER = "Not taken: it came with calls of other tools. Answer once you have their results."
# Where each streamed delta goes: the block's field it extends, and the delta's field it extends it
# with. A tool's input streams as pieces of JSON text.
_DELTA_FIELDS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "signature_delta": ("signature", "signature"),
    "input_json_delta": ("input", "partial_json"),
}
_USAGE_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
_REQUIRED_COUNTS = ("input_tokens", "output_tokens")

DEFAULT_BASE_URL = "https://api.anthropic.com"


def client_for(credentials: Credentials, *, timeout: float) -> anthropic.Anthropic:
    return sdk_client(anthropic.Anthropic, credentials, default_base_url=DEFAULT_BASE_URL, timeout=timeout)


class AnthropicProvider:
    name = "anthropic"
    needs_credentials = True

    def complete(self, request: CompletionRequest, *, credentials: Credentials | None) -> CompletionResult:
        if credentials is None:
            raise missing_credentials(self.name)
        _check_tool_names(request)
        client = client_for(credentials, timeout=call_timeout(request))
        try:
            raw = client.messages.with_raw_response.create(**_params(request))
            request_id = raw.headers.get("request-id", "")
            try:
                response = raw.parse()
                if request.stream:
                    blocks, counts, request_id = _read_stream(
                        response, request_id=request_id, request=request, credentials=credentials
                    )
                else:
                    blocks = [_block(content) for content in response.content]
                    counts = _reported_counts(response.usage)
                    request_id = request_id or response.id
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - the call returned: whatever its answer holds, it is billed
                raise unreadable_answer(provider="Anthropic", error=exc, request=request, request_id=request_id) from None
        except anthropic.APIStatusError as exc:
            raise status_error(
                provider="Anthropic",
                response=exc.response,
                message=_error_message(exc),
                credentials=credentials,
                usage=None,
            ) from None
        except anthropic.APITimeoutError as exc:
            raise timeout_error(provider="Anthropic", error=exc, request=request, credentials=credentials) from None
        except (anthropic.APIConnectionError, OutboundRefused) as exc:
            raise connection_error(provider="Anthropic", error=exc, credentials=credentials) from None
        usage = _usage(counts, request_id=request_id)
        if any(_is_tool_call(block, request) for block in blocks):
            # Tool calls win over an answer beside them, which stays in the replay.
            return _tool_calls(blocks, request, usage=usage)
        return CompletionResult(output=_answer(blocks, request, usage=usage), **vars(usage))


def _check_tool_names(request: CompletionRequest) -> None:
    """Refuses a tool of the answer tool's name beside an output schema: a call of it could not be
    told from the answer."""
    if request.output_schema and any(tool.name == OUTPUT_TOOL for tool in request.tools):
        raise ProviderError(
            f"An agent with an output schema cannot have a tool named '{OUTPUT_TOOL}' with Anthropic, "
            "which is asked for the answer as the input of a tool of that name; rename the tool."
        )


def _params(request: CompletionRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [
            # Anthropic refuses a message with no content before the last, and combines consecutive
            # turns of one role: an earlier execution that answered nothing is sent as its prompt.
            *(message for message in history_messages(request) if message["content"]),
            {"role": "user", "content": request.prompt},
            *_transcript_messages(request.transcript),
        ],
    }
    if request.system_prompt:
        params["system"] = request.system_prompt
    if request.reasoning_effort is not None:
        # Conductor's extended thinking, fitted inside the cap the gate priced (thinking is output).
        budget = thinking_budget(request.reasoning_effort, request.max_tokens)
        params["thinking"] = {"type": "enabled", "budget_tokens": budget}
    elif request.temperature is not None:
        # Not with thinking, which takes no temperature but 1, the default. Anthropic's range is 0-1;
        # a definition may say up to 2 (OpenAI's range).
        params["temperature"] = min(request.temperature, 1.0)
    tools = [{"name": tool.name, "description": tool.description, "input_schema": tool.input_schema} for tool in request.tools]
    if request.output_schema:
        tools.append(
            {
                "name": OUTPUT_TOOL,
                "description": "Give your answer by calling this tool.",
                "input_schema": json_schema(request.output_schema),
            }
        )
    if tools:
        params["tools"] = tools
        # The answer tool alone is forced, unless thinking is on, which cannot be combined with a
        # forced tool. Beside a tool loop's tools it is not either: the model calls them first.
        forced = request.output_schema and not request.tools and request.reasoning_effort is None
        params["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL} if forced else {"type": "auto"}
    if request.stream:
        params["stream"] = True
    return params


def _transcript_messages(transcript: tuple[AssistantTurn | ToolResult, ...]) -> list[dict]:
    """A tool loop's turns as Messages takes them: each earlier answer as it came (its thinking
    blocks too, which Anthropic requires back as they were signed), then one user message with a
    tool_result for every tool_use of it."""
    messages: list[dict] = []
    for turn, results in _turns(transcript):
        messages += [turn.replay, {"role": "user", "content": _tool_results(turn, results)}]
    return messages


def _turns(transcript: tuple[AssistantTurn | ToolResult, ...]) -> list[tuple[AssistantTurn, list[ToolResult]]]:
    """The transcript as its turns, each with the results that follow it."""
    turns: list[tuple[AssistantTurn, list[ToolResult]]] = []
    for item in transcript:
        if isinstance(item, AssistantTurn):
            turns.append((item, []))
        elif turns:
            turns[-1][1].append(item)
        else:
            raise ValueError("A tool loop's transcript starts with a tool result, which answers no turn.")
    return turns


def _tool_results(turn: AssistantTurn, results: list[ToolResult]) -> list[dict]:
    """The turn's tool results, then one for an answer tool's call that came beside them, which was
    not taken (UNTAKEN_ANSWER)."""
    blocks = [
        {"type": "tool_result", "tool_use_id": result.call_id, "content": result.content, "is_error": result.is_error}
        for result in results
    ]
    answered = {result.call_id for result in results}
    blocks += [
        {"type": "tool_result", "tool_use_id": block["id"], "content": UNTAKEN_ANSWER, "is_error": True}
        for block in turn.replay["content"]
        if block["type"] == "tool_use" and block["name"] == OUTPUT_TOOL and block["id"] not in answered
    ]
    return blocks


def _read_stream(
    stream, *, request_id: str, request: CompletionRequest, credentials: Credentials
) -> tuple[list[dict], dict[str, int], str]:
    """The content blocks (as _block gives them, but a tool's input as the JSON text it streamed
    as) and usage of a streamed message.

    message_start carries the input-side counts; each message_delta carries counts that are
    cumulative, not increments, so the latest value of each count is the total. The stream ended
    properly only when message_stop came after a message_delta: that is decided here from the
    events seen, never from which exception an SDK version raises when a stream stops early.
    """
    deadline = time.monotonic() + call_timeout(request)
    blocks: dict[int, dict] = {}
    pieces: dict[tuple[int, str], list[str]] = {}  # by block index and field, joined once at the end
    counts = dict.fromkeys(_USAGE_FIELDS, 0)
    started = usage_complete = stopped = False
    problem = None
    events = iter(stream)
    try:
        while not stopped:
            try:
                event = next(events)
            except StopIteration:
                break
            except Exception as exc:  # noqa: BLE001 - an error event, a lost connection, a client error
                problem = deadline_passed(request) if time.monotonic() > deadline else f"stopped early: {exc}"
                break
            if event.type == "message_start":
                started = True
                request_id = request_id or event.message.id
                _take_counts(counts, event.message.usage)
            elif event.type == "message_delta":
                usage_complete = True
                _take_counts(counts, event.usage)
            elif event.type == "message_stop":
                stopped = True
            elif event.type == "content_block_start":
                blocks[event.index] = _block(event.content_block)
            elif event.type == "content_block_delta" and event.delta.type in _DELTA_FIELDS:
                blocks.setdefault(event.index, {"type": "text", "text": ""})
                field, delta_field = _DELTA_FIELDS[event.delta.type]
                pieces.setdefault((event.index, field), []).append(getattr(event.delta, delta_field))
            if time.monotonic() > deadline:
                problem = deadline_passed(request)
                break
    finally:
        stream.close()
    if problem is None and not (stopped and usage_complete):
        # The body ended as if complete (a proxy closing early looks just like the end), but the
        # message never did.
        problem = "ended before the message finished"
    if problem is not None:
        usage = _stopped_usage(counts, started=started, usage_complete=usage_complete, request=request, request_id=request_id)
        raise ProviderError(
            redact(f"Anthropic's stream {problem}", credentials),
            retryable=stream_retryable(request, timed_out=time.monotonic() > deadline),
            usage=usage,
            # The answer's headers came: the request was sent, and may be billed without a word of usage.
            outcome_unknown=usage is None,
        )
    for (index, field), parts in pieces.items():
        _extend(blocks[index], field, "".join(parts))
    return [blocks[index] for index in sorted(blocks)], counts, request_id


def _extend(block: dict, field: str, text: str) -> None:
    """Adds a block's streamed text to the field it extends. A tool's input is the JSON text, read
    once the tool is known (_input_text); none, for a tool without arguments, leaves its {}."""
    if field != "input":
        block[field] = (block.get(field) or "") + text
    elif text:
        block["input"] = text


def _stopped_usage(
    counts: dict[str, int], *, started: bool, usage_complete: bool, request: CompletionRequest, request_id: str
) -> Usage | None:
    """What a stream that stopped early is billed: nothing if the message never started; the totals
    if a message_delta gave them; otherwise message_start's input with the whole output cap, since
    the model may have made that many tokens before the stream stopped, whatever stopped it."""
    if not started:
        return None
    if not usage_complete:
        return _usage({**counts, "output_tokens": request.max_tokens}, request_id=request_id)
    return _usage(counts, request_id=request_id)


def _reported_counts(reported) -> dict[str, object]:
    """An unstreamed message's counts. Anthropic always reports input and output: a server that
    leaves one out gets it passed on as None, which bills the call at its worst case (steps._charge)."""
    return {
        field: value if (value := getattr(reported, field, None)) is not None or field in _REQUIRED_COUNTS else 0
        for field in _USAGE_FIELDS
    }


def _take_counts(counts: dict[str, object], reported) -> None:
    # Counts are cumulative: a later event never lowers one (some gateways send 0 for the input
    # side in message_delta). A count that is no number is kept as reported, and stays so.
    for field in _USAGE_FIELDS:
        value, current = getattr(reported, field, None), counts[field]
        if value is not None and is_count(current):
            counts[field] = max(current, value) if is_count(value) else value


def _block(content) -> dict:
    """A content block as Messages takes it back in a replay, and as the answer is read from it."""
    if content.type == "text":
        return {"type": "text", "text": content.text or ""}
    if content.type == "tool_use":
        return {"type": "tool_use", "id": content.id, "name": content.name, "input": content.input}
    if content.type == "thinking":
        return {"type": "thinking", "thinking": content.thinking, "signature": content.signature}
    if content.type == "redacted_thinking":
        return {"type": "redacted_thinking", "data": content.data}
    return content.to_dict(mode="json")


def _usage(counts: dict[str, int], *, request_id: str) -> Usage:
    return Usage(
        input_tokens=counts["input_tokens"],
        cache_write_tokens=counts["cache_creation_input_tokens"],
        cached_input_tokens=counts["cache_read_input_tokens"],
        output_tokens=counts["output_tokens"],
        request_id=request_id,
    )


def _is_tool_call(block: dict, request: CompletionRequest) -> bool:
    """Whether a block is a call of a tool loop's tool: any tool_use but the answer tool's."""
    return (
        block["type"] == "tool_use"
        and bool(request.tools)
        and not (request.output_schema and block["name"] == OUTPUT_TOOL)
    )


def _tool_calls(blocks: list[dict], request: CompletionRequest, *, usage: Usage) -> CompletionResult:
    """The tool calls a message asked for, and the message for the loop's next call: its blocks as
    they came, thinking and text included, each tool's input as its call's arguments."""
    checked_tool_calls("Anthropic", [_input_text(block) for block in blocks if _is_tool_call(block, request)], usage=usage)
    content = [
        {**block, "input": tool_arguments(_input_text(block))} if block["type"] == "tool_use" else block for block in blocks
    ]
    calls = tuple(
        ToolCall(id=block["id"], name=block["name"], arguments=block["input"])
        for block in content
        if _is_tool_call(block, request)
    )
    return CompletionResult(output=None, tool_calls=calls, replay={"role": "assistant", "content": content}, **vars(usage))


def _input_text(block: dict) -> str:
    """A tool's input as JSON text: as it streamed, or as the object the unstreamed message held."""
    value = block["input"]
    return value if isinstance(value, str) else json.dumps(value)


def _answer(blocks: list[dict], request: CompletionRequest, *, usage: Usage) -> Any:
    if not request.output_schema:
        return "".join(block["text"] for block in blocks if block["type"] == "text")
    tool_use = next((block for block in blocks if block["type"] == "tool_use"), None)
    if tool_use is None:
        raise ProviderError("The model answered without calling the output tool.", usage=usage)
    answer = tool_use["input"]
    if isinstance(answer, str):
        # Streamed, the tool's input arrives as pieces of JSON text.
        try:
            answer = json.loads(answer)
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python reads
            raise ProviderError("The model's tool input is not JSON.", usage=usage) from None
    return checked_answer(answer, request, usage=usage)


def _error_message(exc: anthropic.APIStatusError) -> str | None:
    """The message of an Anthropic-shaped JSON error body; None for any other body."""
    body = exc.body
    return body["error"].get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
