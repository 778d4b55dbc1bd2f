"""LLM providers behind one small interface; `get_provider` picks one by the definition's name, and
`provider_complete` makes a call with it, timed and counted (workflows/metrics.py)."""

from workflows.metrics import provider_call_observed
from workflows.providers.anthropic import AnthropicProvider
from workflows.providers.base import (
    AssistantTurn,
    CompletionRequest,
    CompletionResult,
    Credentials,
    Provider,
    ProviderError,
    SessionExchange,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)
from workflows.providers.fake import FakeProvider
from workflows.providers.openai import OpenAIProvider

_PROVIDERS: dict[str, Provider] = {
    provider.name: provider for provider in (FakeProvider(), OpenAIProvider(), AnthropicProvider())
}


def get_provider(name: str) -> Provider:
    return _PROVIDERS[name]


def provider_complete(provider: Provider, request: CompletionRequest, *, credentials: Credentials | None) -> CompletionResult:
    with provider_call_observed(provider=provider.name):
        return provider.complete(request, credentials=credentials)


__all__ = [
    "AssistantTurn",
    "CompletionRequest",
    "CompletionResult",
    "Credentials",
    "Provider",
    "ProviderError",
    "SessionExchange",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "get_provider",
    "provider_complete",
]
