"""An offline, deterministic provider: a cost simulator priced as whatever model it stands in for."""

import json
import time
from typing import Any

from workflows.definition import MAX_CALL_TOKENS, fake_token_count
from workflows.providers.base import CompletionRequest, CompletionResult, Credentials

_PLACEHOLDERS: dict[str, Any] = {"number": 0, "integer": 0, "boolean": True, "array": [], "object": {}}


class FakeProvider:
    name = "fake"
    needs_credentials = False

    def complete(self, request: CompletionRequest, *, credentials: Credentials | None = None) -> CompletionResult:
        mock = request.options.get("mock") or {}
        if mock.get("latency_ms"):
            time.sleep(mock["latency_ms"] / 1000)
        output = mock["output"] if mock.get("output") is not None else synthesise(request.output_schema)
        output_tokens = mock.get("output_tokens")
        if output_tokens is None:
            output_tokens = fake_token_count(output if isinstance(output, str) else json.dumps(output))
        input_tokens = mock.get("input_tokens")
        if input_tokens is None:
            input_tokens = fake_token_count(request.system_prompt + request.prompt)
        # The step's estimate counts the mock's input tokens, up to the same bound (steps.step_prepare),
        # so the fake never costs more than its estimate.
        return CompletionResult(
            output=output,
            input_tokens=min(input_tokens, MAX_CALL_TOKENS),
            # A real model stops at max_tokens, and so does its stand-in.
            output_tokens=min(output_tokens, request.max_tokens),
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
