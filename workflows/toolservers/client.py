"""Listing an MCP server's tools and calling one: each a whole exchange of its own (start or
connect, initialize, the request, close), run to completion from a synchronous Celery step with
`anyio.run`, under the connection's timeout as a whole and as the session's read timeout.

Whatever goes wrong is a ToolServerError whose message names the server by the name the workflow
gave it and never carries a header or environment value: the failures the SDK raises (often in an
ExceptionGroup) are told by kind, the server's own error messages are cut short, and any header or
environment value a message might still hold is redacted."""

import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import anyio
import httpx2
import mcp_types as types
import pydantic
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError

from workflows import outbound
from workflows.toolservers import ListedTool, ServerConnection, ToolOutcome, ToolServerError, results
from workflows.toolservers.exchange import Exchange
from workflows.toolservers.httptransport import sse_streams, streamable_http_streams
from workflows.toolservers.stdio import stdio_streams

logger = logging.getLogger(__name__)

T = TypeVar("T")
TRANSPORTS = {"http": streamable_http_streams, "sse": sse_streams, "stdio": stdio_streams}
_CLIENT_INFO = types.Implementation(name="budgetsvc", version="1")
# How much of a server's own error message is shown, on one line.
MAX_SERVER_MESSAGE_CHARS = 300
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")
REDACTED = "[redacted]"
# Header and environment values shorter than this are not redacted: "1" or "yes" would be
# replaced wherever it occurs, and is no secret.
_MIN_REDACTED_LENGTH = 4


def tools_list(server: ServerConnection) -> list[ListedTool]:
    """The tools `server` lists, following its pages, within the bounds of results.py."""
    return _run(server, partial(_listing, server_name=server.name))


def tool_call(server: ServerConnection, *, name: str, arguments: dict) -> ToolOutcome:
    """Call the tool `name` of `server` with `arguments`; its result as text for the model. A tool
    that reports an error is an outcome (`is_error`), not a ToolServerError."""
    return _run(server, partial(_calling, name=name, arguments=arguments))


async def _listing(session: ClientSession, *, server_name: str) -> list[ListedTool]:
    tools: list[types.Tool] = []
    cursor = None
    for _ in range(results.MAX_LISTING_PAGES):
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools += page.tools
        if len(tools) > results.MAX_TOOLS:
            raise results.too_many_tools(server_name=server_name)
        cursor = page.next_cursor
        if not cursor:
            return [results.listed_tool(tool, server_name=server_name) for tool in tools]
    raise results.too_many_pages(server_name=server_name)


async def _calling(session: ClientSession, *, name: str, arguments: dict) -> ToolOutcome:
    return results.outcome(await session.call_tool(name, arguments))


def _run(server: ServerConnection, work: Callable[[ClientSession], Awaitable[T]]) -> T:
    if server.transport not in TRANSPORTS:
        raise ToolServerError(f"{server.name} has the transport '{server.transport}'; it must be http, sse or stdio.")
    if not server.timeout_seconds > 0:
        raise ToolServerError(f"{server.name} has no time left to be called.")
    try:
        return anyio.run(_exchange, server, work)
    except ToolServerError as exc:
        raise ToolServerError(_redacted(str(exc), server), sent=exc.sent) from None


async def _exchange(server: ServerConnection, work: Callable[[ClientSession], Awaitable[T]]) -> T:
    exchange = Exchange(server)
    answered: list[T] = []
    sent = False  # whether the request was handed to the session: from then on it may have been made
    try:
        with exchange.scope:
            async with _session(exchange) as session:
                sent = True
                answered.append(await work(session))
    except Exception as exc:  # an ExceptionGroup too
        if not answered:
            error = _error(exchange, exc)
            raise ToolServerError(str(error), sent=sent) from None
        # The answer is in: a server that fails to close cleanly does not undo it.
        logger.info("Closing MCP server %s failed after it answered (%s).", server.name, type(exc).__name__)
    if answered:
        return answered[0]
    raise ToolServerError(exchange.why_cancelled(), sent=sent)


@asynccontextmanager
async def _session(exchange: Exchange):
    server = exchange.server
    async with (
        TRANSPORTS[server.transport](exchange) as (read_stream, write_stream),
        ClientSession(
            read_stream, write_stream, read_timeout_seconds=server.timeout_seconds, client_info=_CLIENT_INFO
        ) as session,
    ):
        await session.initialize()
        yield session


def _error(exchange: Exchange, error: Exception) -> ToolServerError:
    """The error to tell for a failed exchange: what stopped it, when a transport said, else the
    first failure of a kind known here."""
    if exchange.reason is not None:
        return ToolServerError(exchange.reason)
    name = exchange.server.name
    failures = list(_leaves(error))
    if found := _first(failures, ToolServerError):
        return found
    if found := _first(failures, MCPError):
        return ToolServerError(f"{name} answered with an error: {_shown(found.message)}")
    if found := _first(failures, httpx2.HTTPStatusError):
        return ToolServerError(_status_message(name, found.response))
    if _first(failures, pydantic.ValidationError):
        return ToolServerError(f"{name} answered out of protocol: its answer does not fit the MCP schema.")
    if found := _first(failures, RuntimeError):  # the SDK's word for an answer it cannot use
        return ToolServerError(f"{name} answered out of protocol: {_shown(str(found))}")
    if found := _first(failures, OSError):
        return ToolServerError(f"{name} could not be started or reached ({type(found).__name__}).")
    logger.warning("MCP server %s failed.", name, exc_info=error)
    return ToolServerError(f"{name} failed ({type(failures[0]).__name__}).")


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions an exception group holds, however deeply; the error itself otherwise."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _first(failures: list[BaseException], kind: type[Any]) -> Any:
    return next((failure for failure in failures if isinstance(failure, kind)), None)


def _status_message(name: str, response: httpx2.Response) -> str:
    code = response.status_code
    if 300 <= code < 400:
        return f"{name} answered {code}, a redirect, which is not followed; give the URL it points to instead."
    return f"{name} answered {code} {outbound.status_phrase(code)}."


def _shown(message: str) -> str:
    """A server's own message on one line, cut short."""
    return _CONTROL_CHARACTERS.sub(" ", message).strip()[:MAX_SERVER_MESSAGE_CHARS]


def _redacted(message: str, server: ServerConnection) -> str:
    for value in (*server.headers.values(), *server.env.values()):
        if len(value) >= _MIN_REDACTED_LENGTH:
            message = message.replace(value, REDACTED)
    return message
