"""An offline, deterministic provider: a cost simulator priced as whatever model it stands in for."""

import json
import time
from dataclasses import asdict
from typing import Any

from workflows.definition import MAX_CALL_TOKENS, fake_token_count
from workflows.providers.base import AssistantTurn, CompletionRequest, CompletionResult, Credentials, ToolCall

_PLACEHOLDERS: dict[str, Any] = {"number": 0, "integer": 0, "boolean": True, "array": [], "object": {}}


class FakeProvider:
    name = "fake"
    needs_credentials = False

    def complete(self, request: CompletionRequest, *, credentials: Credentials | None = None) -> CompletionResult:
        mock = request.options.get("mock") or {}
        if mock.get("latency_ms"):
            time.sleep(mock["latency_ms"] / 1000)
        calls = _scripted_calls(request, mock)
        output = None if calls else mock["output"] if mock.get("output") is not None else synthesise(request.output_schema)
        output_tokens = mock.get("output_tokens")
        if output_tokens is None:
            written = [asdict(call) for call in calls] if calls else output
            output_tokens = fake_token_count(written if isinstance(written, str) else json.dumps(written))
        input_tokens = mock.get("input_tokens")
        if input_tokens is None:
            input_tokens = fake_token_count(request.input_text())
        # The step's estimate counts the mock's input tokens, up to the same bound (steps.step_prepare),
        # so the fake never costs more than its estimate.
        return CompletionResult(
            output=output,
            input_tokens=min(input_tokens, MAX_CALL_TOKENS),
            # A real model stops at max_tokens, and so does its stand-in.
            output_tokens=min(output_tokens, request.max_tokens),
            tool_calls=calls,
            replay={"role": "assistant", "tool_calls": [asdict(call) for call in calls]} if calls else None,
        )


def _scripted_calls(request: CompletionRequest, mock: dict) -> tuple[ToolCall, ...]:
    """The calls the mock scripts for this model call of a tool loop (the loop's turns so far say
    which it is); none once its script is used up, or for a call without tools."""
    if not request.tools:
        return ()
    turn = sum(1 for entry in request.transcript if isinstance(entry, AssistantTurn))
    script = mock.get("tool_calls") or []
    if turn >= len(script):
        return ()
    return tuple(
        ToolCall(id=f"call_{turn + 1}_{index + 1}", name=call["name"], arguments=call["arguments"])
        for index, call in enumerate(script[turn])
    )


def synthesise(schema: dict[str, dict] | None) -> Any:
    """A value of the right shape for each field of the agent's output schema."""
    if not schema:
        return {"result": "fake output"}
    return {name: _placeholder(name, field) for name, field in schema.items()}


def _placeholder(name: str, field: dict) -> Any:
    kind = field.get("type", "string")
    if field.get("enum"):
        return field["enum"][0]
    if kind == "object" and field.get("properties"):
        return synthesise(field["properties"])
    return _PLACEHOLDERS.get(kind, f"fake {name}")
