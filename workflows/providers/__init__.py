"""LLM providers behind one small interface; `get_provider` picks one by the definition's name."""

from workflows.providers.base import CompletionRequest, CompletionResult, Provider, ProviderError
from workflows.providers.fake import FakeProvider

_PROVIDERS: dict[str, Provider] = {FakeProvider.name: FakeProvider()}


def get_provider(name: str) -> Provider:
    return _PROVIDERS[name]


def known_providers() -> frozenset[str]:
    return frozenset(_PROVIDERS)


__all__ = [
    "CompletionRequest",
    "CompletionResult",
    "Provider",
    "ProviderError",
    "get_provider",
    "known_providers",
]
