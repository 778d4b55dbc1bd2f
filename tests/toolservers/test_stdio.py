"""A stdio MCP server is started as a script step's command is: found on SCRIPT_PATH or by absolute
path, in a scratch directory, with only the environment the workflow sets, under the script limits,
and killed with whatever it started when the exchange ends."""

import json
import os
import sys
import time

import pytest

from tests.mcp_servers import STDIO_SERVER
from tests.services.test_scripts import running
from workflows.toolservers import ServerConnection, ToolServerError, tool_call, tools_list


def stdio(**changes) -> ServerConnection:
    fields = {"name": "local", "transport": "stdio", "command": sys.executable, "args": (STDIO_SERVER,)}
    return ServerConnection(**{**fields, "timeout_seconds": 20, **changes})


def reported(server: ServerConnection) -> dict:
    return json.loads(tool_call(server, name="environment", arguments={}).content)


def test_its_tools_are_listed_and_called():
    assert {"echo", "environment"} <= {tool.name for tool in tools_list(stdio())}
    assert tool_call(stdio(), name="echo", arguments={"text": "hi"}).content.splitlines()[0] == "hi"


def test_it_sees_only_the_environment_the_workflow_sets_in_a_scratch_directory_that_goes(monkeypatch, settings):
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/prod")
    monkeypatch.setenv("USER", "worker")

    report = reported(stdio(env={"API_TOKEN": "t0ken"}))

    assert set(report["env"]) == {"LANG", "PATH", "HOME", "TMPDIR", "API_TOKEN"}
    assert report["env"]["API_TOKEN"] == "t0ken" and report["env"]["PATH"] == settings.SCRIPT_PATH
    assert report["env"]["HOME"] == report["env"]["TMPDIR"] == report["cwd"]
    assert "/budgetsvc-mcp-" in report["cwd"]


def test_the_server_is_killed_and_its_scratch_directory_removed_when_the_call_ends():
    report = reported(stdio())

    assert not running(report["pid"])
    assert not os.path.exists(report["cwd"])


def test_it_runs_under_the_script_memory_limit(settings):
    settings.SCRIPT_MAX_MEMORY_MB = 1024

    assert reported(stdio())["memory_limit"] == 1024 * 1024 * 1024


def test_a_server_that_runs_past_the_timeout_is_killed_at_the_timeout():
    started = time.monotonic()
    with pytest.raises(ToolServerError, match=r"^local did not answer within 3 seconds\.$"):
        tool_call(stdio(timeout_seconds=3), name="slow", arguments={"seconds": 30})
    assert time.monotonic() - started < 6


def test_a_line_past_the_byte_cap_stops_the_exchange(settings):
    settings.MCP_MAX_RESPONSE_BYTES = 64 * 1024

    started = time.monotonic()
    with pytest.raises(ToolServerError, match=r"^local wrote a message of more than 65536 bytes"):
        tools_list(stdio(args=(STDIO_SERVER, "--babble", "200000")))
    assert time.monotonic() - started < 5


def test_a_server_that_exits_at_once_is_told_with_its_exit_status():
    with pytest.raises(ToolServerError, match=r"^local ended before it answered \(exit status 1\)\.$"):
        tools_list(stdio(command="false", args=()))


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("bin/sh", "is a relative path"),
        ("no-such-mcp-server", "is not an executable on the worker's SCRIPT_PATH"),
    ],
)
def test_a_command_not_on_the_script_path_is_not_started(command, message):
    with pytest.raises(ToolServerError, match=f"^local could not be started: '{command}' {message}"):
        tools_list(stdio(command=command, env={"API_TOKEN": "t0ken"}))


def test_an_environment_value_is_never_in_a_message():
    with pytest.raises(ToolServerError) as failed:
        tools_list(stdio(command="mcp-server-t0kenvalue", env={"API_TOKEN": "t0kenvalue"}))

    assert "t0kenvalue" not in str(failed.value) and "mcp-server-[redacted]" in str(failed.value)
