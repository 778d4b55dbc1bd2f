"""LLM providers behind one small interface; `get_provider` picks one by the definition's name."""

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
]
