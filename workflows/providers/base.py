from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    system_prompt: str
    prompt: str
    max_tokens: int
    temperature: float | None = None
    output_schema: dict[str, dict] | None = None
    # Provider-specific settings from the agent, e.g. the fake provider's `mock` block.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompletionResult:
    output: Any
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    request_id: str = ""


class ProviderError(Exception):
    """A provider call failed; the message is safe to show to the run's owner."""


class Provider(Protocol):
    name: str

    def complete(self, request: CompletionRequest) -> CompletionResult: ...
