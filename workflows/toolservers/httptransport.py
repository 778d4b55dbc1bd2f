"""Streamable HTTP and SSE servers, reached through an httpx2 client that connects only where
workflows/outbound.py allows, follows no redirect, reads no proxy or .netrc from the environment, and
reads at most MCP_MAX_RESPONSE_BYTES of each response (an SSE stream is one response)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from django.conf import settings
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from workflows import outbound
from workflows.errors import OutboundRefused, OutboundUnresolved
from workflows.toolservers import ToolServerError
from workflows.toolservers.exchange import Exchange


@asynccontextmanager
async def streamable_http_streams(exchange: Exchange) -> AsyncIterator[tuple]:
    max_bytes = settings.MCP_MAX_RESPONSE_BYTES
    async with (
        _http_client(exchange) as client,
        # One SSE event may be as large as a whole answer: only the answer's bound applies.
        streamable_http_client(exchange.server.url, http_client=client, max_sse_event_size=max_bytes) as streams,
    ):
        yield streams


@asynccontextmanager
async def sse_streams(exchange: Exchange) -> AsyncIterator[tuple]:
    def client_factory(**_ignored) -> httpx2.AsyncClient:
        return _http_client(exchange)  # the SDK's own headers, timeout and auth are not used

    timeout = exchange.server.timeout_seconds
    async with sse_client(
        exchange.server.url, timeout=timeout, sse_read_timeout=timeout, httpx_client_factory=client_factory
    ) as streams:
        yield streams


def _http_client(exchange: Exchange) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=GuardedTransport(exchange, max_bytes=settings.MCP_MAX_RESPONSE_BYTES),
        headers=dict(exchange.server.headers),
        timeout=exchange.server.timeout_seconds,
        follow_redirects=False,
        # The SDK follows a redirect within the server's origin itself, up to this many times.
        max_redirects=0,
        trust_env=False,  # as outbound.http_client: no proxy and no .netrc credentials
    )


class GuardedTransport(httpx2.AsyncBaseTransport):
    """outbound.AsyncCheckedTransport, with each response body read uncompressed (a compressed one
    would be decoded past the cap) and capped; the first failure stops the exchange."""

    def __init__(self, exchange: Exchange, *, max_bytes: int):
        self._transport = outbound.AsyncCheckedTransport()
        self._exchange = exchange
        self._max_bytes = max_bytes

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.headers["accept-encoding"] = "identity"
        try:
            response = await self._transport.handle_async_request(request)
        except Exception as exc:
            self._exchange.stop(_failure(self._exchange, exc))
            raise
        if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
            await response.aclose()
            self._exchange.stop(f"{self._exchange.server.name} answered with a compressed body, which is not read.")
            raise ToolServerError(self._exchange.reason)
        response.stream = _CappedStream(response.stream, exchange=self._exchange, max_bytes=self._max_bytes)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


class _CappedStream(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream, *, exchange: Exchange, max_bytes: int):
        self._stream = stream
        self._exchange = exchange
        self._max_bytes = max_bytes

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in self._stream:
                received += len(chunk)
                if received > self._max_bytes:
                    self._exchange.stop(
                        f"{self._exchange.server.name} sent an answer of more than {self._max_bytes} bytes "
                        "(MCP_MAX_RESPONSE_BYTES)."
                    )
                    raise ToolServerError(self._exchange.reason)
                yield chunk
        except httpx2.TransportError as exc:
            self._exchange.stop(_failure(self._exchange, exc))
            raise

    async def aclose(self) -> None:
        await self._stream.aclose()


def _failure(exchange: Exchange, error: Exception) -> str:
    """What a request's failure tells the run's owner: the outbound check's own words, or the kind
    of failure only (an error's text can carry the URL, and so a token in its query)."""
    name = exchange.server.name
    if isinstance(error, OutboundUnresolved):
        return f"{name} could not be reached: {error.message}"
    if isinstance(error, OutboundRefused):
        return f"{name} was not called: {error.message}"
    if isinstance(error, httpx2.TimeoutException):
        return exchange.timed_out()
    return f"{name} could not be reached ({type(error).__name__})."
