"""Real MCP servers for tests, built with the SDK's own MCPServer: the same tools over streamable
HTTP, SSE and stdio. Reuse them in integration tests:

    with http_server() as url:                 # streamable HTTP (stateless, JSON answers) at url
        ServerConnection(name="tools", transport="http", url=url, timeout_seconds=10)
    with http_server(transport="sse") as url:  # the older SSE transport
        ...
    ServerConnection(name="tools", transport="stdio", command=sys.executable,
                     args=(STDIO_SERVER,), timeout_seconds=10)

Each HTTP server runs under uvicorn in a thread of the test process on 127.0.0.1 (an ephemeral
port), which tests/settings.py lets outbound requests reach. The path /moved on the same server
answers every request with a redirect to the server's own endpoint (/mcp or /sse).

The tools: echo (read-only, idempotent), add (structured result), fail (the tool reports an error),
slow (sleeps), huge (a result of `chars` characters), structured_only (structured content and no
text), picture (an image and a caption). The stdio server adds environment (its environment, working
directory, pid and address-space limit); run with `--babble N` it is no server but writes N bytes
and no newline to its standard output, then waits."""

import os
import resource
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from starlette.responses import PlainTextResponse, RedirectResponse

STDIO_SERVER = str(Path(__file__).with_name("mcp_stdio_server.py"))
_START_SECONDS = 10


def tool_server(name: str = "test-tools") -> MCPServer:
    """A server with the tools the module lists (but environment and babble, which are stdio's)."""
    server = MCPServer(name)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
    def echo(text: str) -> str:
        """Say the text back."""
        return text

    @server.tool()
    def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    @server.tool()
    def fail(reason: str) -> str:
        """Fail, saying why."""
        raise ToolError(reason)

    @server.tool()
    async def slow(seconds: float) -> str:
        """Answer after a while."""
        await anyio.sleep(seconds)
        return "done"

    @server.tool()
    def huge(chars: int) -> str:
        """A long answer."""
        return "x" * chars

    @server.tool()
    def structured_only() -> CallToolResult:
        """Structured content and no text."""
        return CallToolResult(content=[], structured_content={"city": "Oslo", "celsius": -3})

    @server.tool()
    def picture() -> CallToolResult:
        """An image and its caption."""
        return CallToolResult(
            content=[ImageContent(data="aGVsbG8=", mime_type="image/png"), TextContent(text="a small picture")]
        )

    return server


@contextmanager
def http_server(
    transport: str = "http", server: MCPServer | None = None, *, required: Mapping[str, str] | None = None, seen: list | None = None
) -> Iterator[str]:
    """Serve `server` (a new `tool_server()` by default; one server serves once) over streamable
    HTTP ("http") or SSE ("sse"); yields its URL. With `required` headers, a request without each of
    them answers 401, as a server behind an API token does; `seen` collects every request's headers."""
    server = server or tool_server()
    if transport == "http":
        app, path = server.streamable_http_app(stateless_http=True, json_response=True), "/mcp"
    else:
        app, path = server.sse_app(), "/sse"
    if required is not None or seen is not None:
        app = _authenticated(app, required=required or {}, seen=seen if seen is not None else [])
    with _serving(_redirecting(app, to=path)) as base:
        yield base + path


def _authenticated(app, *, required: Mapping[str, str], seen: list):
    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
            seen.append(headers)
            if any(headers.get(name.lower()) != value for name, value in required.items()):
                await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    return wrapped


def _redirecting(app, *, to: str):
    """`app`, with /moved answering 307 to `to` on the same server (a redirect the SDK itself
    would follow, being within the server's origin)."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/moved":
            await RedirectResponse(to, status_code=307)(scope, receive, send)
        else:
            await app(scope, receive, send)

    return wrapped


@contextmanager
def _serving(app) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, name="mcp-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The test MCP server did not start.")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(_START_SECONDS)


def stdio_tool_server() -> MCPServer:
    """`tool_server()`, with the tools only a stdio server can answer about itself."""
    server = tool_server("test-stdio-tools")

    @server.tool()
    def environment() -> dict:
        """The server's environment, working directory, pid and address-space limit."""
        return {
            "env": dict(os.environ),
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "memory_limit": resource.getrlimit(resource.RLIMIT_AS)[0],
        }

    return server
