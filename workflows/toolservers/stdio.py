"""Stdio servers: the command started as a script step's is (workflows/processes.py) in a scratch
directory of its own, JSON-RPC messages one a line on its standard input and output, and the
process group killed when the exchange ends.

The SDK's stdio_client is not used: it reads a line of any length (a server that never writes a
newline would fill the worker's memory), passes the worker's HOME, PATH, USER and others under the
environment given, and lets the server's standard error into the worker's. Here a line is read up
to MCP_MAX_RESPONSE_BYTES, the environment is the scrubbed one, and standard error is discarded (it
may print what the team's environment holds)."""

import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from django.conf import settings
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter

from workflows import processes
from workflows.toolservers import ToolServerError
from workflows.toolservers.exchange import Exchange

# How long a server that closed its output is given to exit, for its exit status to be told.
_EXIT_WAIT_SECONDS = 1
# How long a killed server is waited for before it is left to the kernel and its new parent.
_REAP_SECONDS = 5


@asynccontextmanager
async def stdio_streams(exchange: Exchange) -> AsyncIterator[tuple]:
    server = exchange.server
    try:
        executable = processes.program(server.command)
    except processes.ProgramRefused as exc:
        raise ToolServerError(f"{server.name} could not be started: {exc}") from None
    with tempfile.TemporaryDirectory(prefix="budgetsvc-mcp-", ignore_cleanup_errors=True) as scratch:
        process = await anyio.open_process(
            processes.launcher_arguments(executable, list(server.args), timeout=server.timeout_seconds),
            cwd=scratch,
            env=processes.scrubbed_environment(dict(server.env), scratch=scratch),
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: whatever it starts is stopped with it
        )
        try:
            async with _message_streams(process, exchange) as streams:
                yield streams
        finally:
            await _stop(process)


@asynccontextmanager
async def _message_streams(process: Process, exchange: Exchange) -> AsyncIterator[tuple]:
    received, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, to_send = anyio.create_memory_object_stream[SessionMessage](0)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_read, process, received, exchange)
        tasks.start_soon(_write, process, to_send)
        try:
            yield read_stream, write_stream
        finally:
            tasks.cancel_scope.cancel()


async def _read(process: Process, received: MemoryObjectSendStream, exchange: Exchange) -> None:
    max_bytes = settings.MCP_MAX_RESPONSE_BYTES
    lines = BufferedByteReceiveStream(process.stdout)
    async with received:
        while True:
            try:
                line = await lines.receive_until(b"\n", max_bytes)
            except anyio.DelimiterNotFound:
                exchange.stop(
                    f"{exchange.server.name} wrote a message of more than {max_bytes} bytes (MCP_MAX_RESPONSE_BYTES)."
                )
                return
            except (anyio.IncompleteRead, anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                exchange.stop(await _ended(process, exchange.server.name))
                return
            if line.strip():
                try:
                    await received.send(_message(line))
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return  # the session is over


def _message(line: bytes) -> SessionMessage | Exception:
    """A line as a message, or the error that it is not one, which the session hands to its message
    handler (a server that logs to its standard output is not cut off for it)."""
    try:
        return SessionMessage(jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as exc:
        return exc


async def _write(process: Process, to_send: MemoryObjectReceiveStream) -> None:
    async with to_send:
        async for message in to_send:
            line = message.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"
            try:
                await process.stdin.send(line.encode())
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                return  # the reader sees the server end, and says so


async def _ended(process: Process, name: str) -> str:
    with anyio.move_on_after(_EXIT_WAIT_SECONDS):
        await process.wait()
    status = "" if process.returncode is None else f" (exit status {process.returncode})"
    return f"{name} ended before it answered{status}."


async def _stop(process: Process) -> None:
    """Kill the server and what it started, and reap it, even when the exchange was cancelled."""
    processes.kill_group(process.pid)
    with anyio.move_on_after(_REAP_SECONDS, shield=True):
        await process.aclose()
