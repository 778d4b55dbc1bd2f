"""Chat Completions on OpenAI or any server that speaks it (vLLM, Ollama, OpenRouter, Azure-style
gateways), through the official SDK with its own retries off: every attempt is the step's to count."""

import logging
import time
from typing import Any

import openai

from workflows.definition import json_schema
from workflows.errors import OutboundRefused
from workflows.providers._calls import (
    call_timeout,
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
    structured_answer,
    tool_arguments,
    uncached,
    unreadable_answer,
    worst_case_usage,
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

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Chat Completions has no error flag for a tool's result: the model is told so in its text.
TOOL_ERROR_PREFIX = "Error: "


def client_for(credentials: Credentials, *, timeout: float) -> openai.OpenAI:
    return sdk_client(openai.OpenAI, credentials, default_base_url=DEFAULT_BASE_URL, timeout=timeout)


class OpenAIProvider:
    name = "openai"
    needs_credentials = True

    def complete(self, request: CompletionRequest, *, credentials: Credentials | None) -> CompletionResult:
        if credentials is None:
            raise missing_credentials(self.name)
        client = client_for(credentials, timeout=call_timeout(request))
        try:
            raw = client.chat.completions.with_raw_response.create(**_params(request))
            request_id = raw.headers.get("x-request-id", "")
            try:
                response = raw.parse()
                if request.stream:
                    reply, usage = _read_stream(response, request_id=request_id, request=request, credentials=credentials)
                else:
                    reply = _reply(response, request)
                    usage = _usage(response.usage, request_id=request_id or response.id, request=request)
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - the call returned: whatever its answer holds, it is billed
                raise unreadable_answer(provider="OpenAI", error=exc, request=request, request_id=request_id) from None
        except openai.APIStatusError as exc:
            raise status_error(
                provider="OpenAI",
                response=exc.response,
                message=_error_message(exc),
                credentials=credentials,
                usage=_usage_in_error(exc.response, request_id=exc.response.headers.get("x-request-id", "")),
            ) from None
        except openai.APITimeoutError as exc:
            raise timeout_error(provider="OpenAI", error=exc, request=request, credentials=credentials) from None
        except (openai.APIConnectionError, OutboundRefused) as exc:
            raise connection_error(provider="OpenAI", error=exc, credentials=credentials) from None
        if reply["tool_calls"]:
            # Tool calls win over any text beside them, which stays in the replay.
            return _tool_calls(reply, usage=usage)
        text = reply["content"] or ""
        output = structured_answer(text, request, usage=usage) if request.output_schema else text
        return CompletionResult(output=output, **vars(usage))


def _tool_calls(reply: dict[str, Any], *, usage: Usage) -> CompletionResult:
    """The tool calls an answer asked for, and the answer's message for the loop's next call."""
    checked_tool_calls("OpenAI", [call["function"]["arguments"] for call in reply["tool_calls"]], usage=usage)
    calls = tuple(
        ToolCall(id=call["id"], name=call["function"]["name"], arguments=tool_arguments(call["function"]["arguments"]))
        for call in reply["tool_calls"]
    )
    return CompletionResult(output=None, tool_calls=calls, replay=reply, **vars(usage))


def _reply(response, request: CompletionRequest) -> dict[str, Any]:
    """An unstreamed answer as the assistant message a replay sends back: its text (None when it has
    none) and, for a call with tools, the calls it asked for."""
    if not response.choices:
        return {"role": "assistant", "content": None, "tool_calls": []}
    message = response.choices[0].message
    calls = (message.tool_calls or ()) if request.tools else ()
    return {
        "role": "assistant",
        "content": message.content,
        "tool_calls": [_tool_call(call.id, call.function.name, call.function.arguments) for call in calls],
    }


def _tool_call(id_: str, name: str, arguments: str | None) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments or ""}}


def _params(request: CompletionRequest) -> dict[str, Any]:
    messages = [*history_messages(request), {"role": "user", "content": request.prompt}]
    if request.system_prompt:
        messages.insert(0, {"role": "system", "content": request.system_prompt})
    messages += [_transcript_message(item) for item in request.transcript]
    params: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        # The cap the gate's estimate assumed; reasoning tokens count against it too.
        "max_completion_tokens": request.max_tokens,
    }
    if request.reasoning_effort is not None:
        # Conductor's five levels are Chat Completions' own names for them.
        params["reasoning_effort"] = request.reasoning_effort
    elif request.temperature is not None:
        # Not with reasoning: reasoning models refuse any temperature but their default.
        params["temperature"] = request.temperature
    if request.output_schema:
        params["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": json_schema(request.output_schema), "strict": True},
        }
    if request.tools:
        params["tools"] = [
            {
                "type": "function",
                "function": {"name": tool.name, "description": tool.description, "parameters": tool.input_schema},
            }
            for tool in request.tools
        ]
        params["tool_choice"] = "auto"
    if request.stream:
        # Without this a streamed call reports no usage at all.
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
    return params


def _transcript_message(item: AssistantTurn | ToolResult) -> dict[str, Any]:
    """A turn of the tool loop as Chat Completions takes it: an earlier answer as it came, or a
    tool's result."""
    if isinstance(item, AssistantTurn):
        return item.replay
    content = TOOL_ERROR_PREFIX + item.content if item.is_error else item.content
    return {"role": "tool", "tool_call_id": item.call_id, "content": content}


def _read_stream(
    stream, *, request_id: str, request: CompletionRequest, credentials: Credentials
) -> tuple[dict[str, Any], Usage]:
    """The answer (as _reply gives it) and usage of a streamed completion. The stream ended properly
    only when a choice finished and the body ended: that is decided here from the chunks seen, never
    from which exception an SDK version raises when a stream stops early."""
    deadline = time.monotonic() + call_timeout(request)
    parts: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    reported = None
    received = finished = False
    problem = None
    try:
        for chunk in stream:
            received = True
            request_id = request_id or chunk.id
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.choices and request.tools:
                _take_tool_call_pieces(calls, chunk.choices[0].delta.tool_calls or ())
            if chunk.choices and chunk.choices[0].finish_reason:
                finished = True
            if chunk.usage is not None:
                reported = chunk.usage  # the last chunk, with no choices
            if time.monotonic() > deadline:
                problem = deadline_passed(request)
                break
    except Exception as exc:  # noqa: BLE001 - an error event, a lost connection, a client error
        problem = deadline_passed(request) if time.monotonic() > deadline else f"stopped early: {exc}"
    finally:
        stream.close()
    if problem is None and not finished:
        # The body ended as if complete (a proxy closing early looks just like the end), but the
        # answer never did: what arrived is not the answer.
        problem = "ended before the answer finished"
    if problem is None:
        reply = {
            "role": "assistant",
            "content": "".join(parts) or None,
            "tool_calls": [
                _tool_call(call["id"], call["name"], "".join(call["arguments"])) for _, call in sorted(calls.items())
            ],
        }
        return reply, _usage(reported, request_id=request_id, request=request)
    # Usage comes only in the last chunk. A stream stopped after it started may have been billed for
    # up to the whole output cap, so without reported usage it is billed at the worst case.
    usage = _usage(reported, request_id=request_id, request=request) if received else None
    raise ProviderError(
        redact(f"OpenAI's stream {problem}", credentials),
        retryable=stream_retryable(request, timed_out=time.monotonic() > deadline),
        usage=usage,
        # The answer's headers came: the request was sent, and may be billed without a word of usage.
        outcome_unknown=usage is None,
    )


def _take_tool_call_pieces(calls: dict[int, dict[str, Any]], pieces) -> None:
    """Adds a chunk's pieces of tool calls to the calls they belong to, by index. The arguments
    arrive in pieces; the id and the name arrive whole, and are kept as first given: some servers
    (Fireworks, NVIDIA NIM) repeat them in every chunk, which added up would name no tool."""
    for piece in pieces:
        call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": []})
        call["id"] = call["id"] or piece.id or ""
        if piece.function is not None:
            call["name"] = call["name"] or piece.function.name or ""
            call["arguments"].append(piece.function.arguments or "")


def _usage(reported, *, request_id: str, request: CompletionRequest) -> Usage:
    if reported is None:
        logger.warning("OpenAI-compatible server reported no usage for %s; billing the estimate's worst case.", request.model)
        return worst_case_usage(request, request_id=request_id)
    details = getattr(reported, "prompt_tokens_details", None)
    cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
    prompt = getattr(reported, "prompt_tokens", None)
    return Usage(
        input_tokens=uncached(prompt, cached),
        cached_input_tokens=cached,
        output_tokens=getattr(reported, "completion_tokens", None),
        request_id=request_id,
    )


def _usage_in_error(response, *, request_id: str) -> Usage | None:
    """Usage a server reported beside an error, as some gateways do for calls they bill."""
    try:
        body = response.json()
    except ValueError:
        return None
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict) or "prompt_tokens" not in usage:
        return None
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") if isinstance(details, dict) else None) or 0
    return Usage(
        input_tokens=uncached(usage["prompt_tokens"], cached),
        cached_input_tokens=cached,
        output_tokens=usage.get("completion_tokens") or 0,
        request_id=request_id,
    )


def _error_message(exc: openai.APIStatusError) -> str | None:
    """The message of an OpenAI-shaped JSON error body; None for any other body."""
    body = exc.body
    return body.get("message") if isinstance(body, dict) else None
