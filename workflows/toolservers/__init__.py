"""MCP servers, the tool servers an agent's tool loop calls: listing their tools and calling one,
through the official `mcp` SDK, over streamable HTTP, SSE or stdio. Pure of the ORM: the engine
(services/steps/kinds/tools.py) decides what to call and records what came back."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServerConnection:
    """How to reach one MCP server. `transport` is "http" (streamable HTTP), "sse" or "stdio";
    `url` and `headers` are for the first two, `command`, `args` and `env` for stdio."""

    name: str
    transport: str
    timeout_seconds: float
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ListedTool:
    """A tool as its server lists it: its own name, what it does, the JSON Schema of its arguments,
    and the server's hints that calling it twice is harmless."""

    name: str
    description: str
    input_schema: dict[str, Any]
    read_only: bool = False
    idempotent: bool = False


@dataclass(frozen=True)
class ToolOutcome:
    """What a call returned, as text for the model, and whether the tool reported an error."""

    content: str
    is_error: bool = False


class ToolServerError(Exception):
    """The server could not be reached, or answered out of protocol or past a bound; the message
    is safe to show to the run's owner (no header or environment value in it).

    `sent` says whether the request may have reached the server: False when the exchange failed
    before the request was handed to the session (the server not started or reached, refused, its
    initialization failed or timed out), True once it was, whatever came back or did not. A call
    that was `sent` may have been made, and what a server charges for was perhaps charged."""

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


from workflows.toolservers.client import tool_call, tools_list  # noqa: E402  (they use the types above)

__all__ = ["ListedTool", "ServerConnection", "ToolOutcome", "ToolServerError", "tool_call", "tools_list"]
