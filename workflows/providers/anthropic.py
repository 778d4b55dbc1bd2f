"""Anthropic's Messages API through the official SDK, with its own retries off: every attempt is the
step's to count. A structured answer is asked for as the input of the one tool the model must call."""

import json
import time
from typing import Any

import anthropic

from workflows.definition import is_count, json_schema, thinking_budget
from workflows.errors import OutboundRefused
from workflows.providers._calls import (
    call_timeout,
    checked_answer,
    connection_error,
    deadline_passed,
    missing_credentials,
    redact,
    sdk_client,
    status_error,
    stream_retryable,
    timeout_error,
    unreadable_answer,
)
from workflows.providers.base import CompletionRequest, CompletionResult, Credentials, ProviderError, Usage

OUTPUT_TOOL = "output"
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
        return CompletionResult(output=_answer(blocks, request, usage=usage), **vars(usage))


def _params(request: CompletionRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": [{"role": "user", "content": request.prompt}],
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
    if request.output_schema:
        params["tools"] = [
            {
                "name": OUTPUT_TOOL,
                "description": "Give your answer by calling this tool.",
                "input_schema": json_schema(request.output_schema),
            }
        ]
        # Thinking cannot be combined with a forced tool: the model is asked, not made, to call it.
        forced = {"type": "tool", "name": OUTPUT_TOOL}
        params["tool_choice"] = {"type": "auto"} if request.reasoning_effort is not None else forced
    if request.stream:
        params["stream"] = True
    return params


def _read_stream(
    stream, *, request_id: str, request: CompletionRequest, credentials: Credentials
) -> tuple[list[dict], dict[str, int], str]:
    """The content blocks and usage of a streamed message.

    message_start carries the input-side counts; each message_delta carries counts that are
    cumulative, not increments, so the latest value of each count is the total. The stream ended
    properly only when message_stop came after a message_delta: that is decided here from the
    events seen, never from which exception an SDK version raises when a stream stops early.
    """
    deadline = time.monotonic() + call_timeout(request)
    blocks: dict[int, dict] = {}
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
            elif event.type == "content_block_delta":
                block = blocks.setdefault(event.index, {"type": "text", "text": "", "json": ""})
                if event.delta.type == "text_delta":
                    block["text"] += event.delta.text
                elif event.delta.type == "input_json_delta":
                    block["json"] += event.delta.partial_json
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
        raise ProviderError(
            redact(f"Anthropic's stream {problem}", credentials),
            retryable=stream_retryable(request, timed_out=time.monotonic() > deadline),
            usage=_stopped_usage(counts, started=started, usage_complete=usage_complete, request=request, request_id=request_id),
        )
    return [blocks[index] for index in sorted(blocks)], counts, request_id


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
    if content.type == "tool_use":
        return {"type": "tool_use", "input": content.input, "text": "", "json": ""}
    return {"type": content.type, "text": getattr(content, "text", "") or "", "json": ""}


def _usage(counts: dict[str, int], *, request_id: str) -> Usage:
    return Usage(
        input_tokens=counts["input_tokens"],
        cache_write_tokens=counts["cache_creation_input_tokens"],
        cached_input_tokens=counts["cache_read_input_tokens"],
        output_tokens=counts["output_tokens"],
        request_id=request_id,
    )


def _answer(blocks: list[dict], request: CompletionRequest, *, usage: Usage) -> Any:
    if not request.output_schema:
        return "".join(block["text"] for block in blocks if block["type"] == "text")
    tool_use = next((block for block in blocks if block["type"] == "tool_use"), None)
    if tool_use is None:
        raise ProviderError("The model answered without calling the output tool.", usage=usage)
    answer = tool_use["input"]
    if tool_use["json"]:
        # Streamed, the tool's input arrives as pieces of JSON text.
        try:
            answer = json.loads(tool_use["json"])
        except ValueError:
            raise ProviderError("The model's tool input is not JSON.", usage=usage) from None
    return checked_answer(answer, request, usage=usage)


def _error_message(exc: anthropic.APIStatusError) -> str | None:
    """The message of an Anthropic-shaped JSON error body; None for any other body."""
    body = exc.body
    return body["error"].get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
