"""Listing and calling the tools of real MCP servers over streamable HTTP and SSE: what the model is
shown, and every way an exchange can fail told as a ToolServerError, quickly and without secrets."""

import time
from dataclasses import replace

import pytest
from mcp.server.mcpserver import MCPServer

from tests.mcp_servers import http_server
from workflows.toolservers import ServerConnection, ToolOutcome, ToolServerError, tool_call, tools_list
from workflows.toolservers.results import MAX_RESULT_CHARS, MAX_TOOLS


def test_the_tools_are_listed_with_their_schemas_and_hints(remote):
    tools = {tool.name: tool for tool in tools_list(remote)}

    assert {"echo", "add", "fail", "slow", "huge", "structured_only", "picture"} <= set(tools)
    assert tools["add"].description == "Add two numbers."
    assert tools["add"].input_schema["type"] == "object"
    assert set(tools["add"].input_schema["properties"]) == {"a", "b"}
    assert (tools["echo"].read_only, tools["echo"].idempotent) == (True, True)
    assert (tools["add"].read_only, tools["add"].idempotent) == (False, False)


def test_a_call_returns_the_tools_text(remote):
    outcome = tool_call(remote, name="echo", arguments={"text": "hello"})

    assert outcome.content.splitlines()[0] == "hello"
    assert outcome.is_error is False


def test_structured_content_is_shown_as_json_only_where_no_text_says_it(remote):
    assert tool_call(remote, name="add", arguments={"a": 2, "b": 3}).content == "5.0"
    assert tool_call(remote, name="structured_only", arguments={}).content == '{"city": "Oslo", "celsius": -3}'


def test_an_image_is_named_and_its_bytes_are_not_shown(remote):
    outcome = tool_call(remote, name="picture", arguments={})

    assert outcome.content == "[image content, image/png, not shown]\na small picture"


def test_a_tool_that_reports_an_error_is_an_outcome_not_a_failure(remote):
    outcome = tool_call(remote, name="fail", arguments={"reason": "the disk is full"})

    assert outcome == ToolOutcome(content="Error executing tool fail: the disk is full", is_error=True)


def test_a_result_longer_than_the_model_is_shown_is_cut_saying_so(remote):
    content = tool_call(remote, name="huge", arguments={"chars": MAX_RESULT_CHARS + 10}).content

    assert len(content) < MAX_RESULT_CHARS + 100
    assert content.endswith("more characters]")


def test_a_server_slower_than_the_timeout_is_abandoned_at_the_timeout(remote):
    started = time.monotonic()
    with pytest.raises(ToolServerError, match=r"^tools did not answer within 1 seconds\.$"):
        tool_call(replace(remote, timeout_seconds=1), name="slow", arguments={"seconds": 5})
    assert time.monotonic() - started < 3


def test_an_answer_past_the_byte_cap_stops_the_exchange(remote, settings):
    settings.MCP_MAX_RESPONSE_BYTES = 64 * 1024
    started = time.monotonic()

    with pytest.raises(ToolServerError, match=r"sent an answer of more than 65536 bytes \(MCP_MAX_RESPONSE_BYTES\)"):
        tool_call(remote, name="huge", arguments={"chars": 200_000})
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_a_loopback_url_is_not_called_unless_the_operator_allows_it(transport, settings):
    settings.OUTBOUND_ALLOWED_HOSTS = []
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    headers = {"Authorization": "Bearer s3cret-token"}
    with http_server(transport) as url:
        server = ServerConnection(name="tools", transport=transport, url=url, headers=headers, timeout_seconds=10)
        started = time.monotonic()
        with pytest.raises(ToolServerError) as refused:
            tools_list(server)

    assert str(refused.value).startswith("tools was not called: The address 127.0.0.1 is a loopback address")
    assert "OUTBOUND_ALLOWED_HOSTS" in str(refused.value) and "s3cret" not in str(refused.value)
    assert time.monotonic() - started < 5


def test_a_redirect_is_not_followed_even_within_the_servers_origin(remote):
    moved = replace(remote, url=remote.url.rsplit("/", 1)[0] + "/moved")

    with pytest.raises(ToolServerError, match="not followed"):
        tools_list(moved)


def test_a_server_that_is_not_there_could_not_be_reached():
    with http_server() as url:
        pass  # stopped: its port now refuses connections
    with pytest.raises(ToolServerError, match=r"^tools could not be reached \(ConnectError\)\.$"):
        tools_list(ServerConnection(name="tools", transport="http", url=url, timeout_seconds=10))


def test_a_server_that_lists_too_many_tools_is_refused():
    server = MCPServer("many")
    for number in range(MAX_TOOLS + 1):
        server.add_tool(lambda: "", name=f"tool_{number}")
    with http_server(server=server) as url, pytest.raises(ToolServerError, match=f"lists more than {MAX_TOOLS} tools"):
        tools_list(ServerConnection(name="many", transport="http", url=url, timeout_seconds=10))


def test_an_unknown_transport_is_refused():
    with pytest.raises(ToolServerError, match="it must be http, sse or stdio"):
        tools_list(ServerConnection(name="tools", transport="websocket", url="wss://example.com", timeout_seconds=5))


def test_a_call_abandoned_at_the_timeout_may_have_been_made_one_never_sent_was_not(remote, settings):
    # What a priced call is charged by: one the server may have made, whatever it answered.
    with pytest.raises(ToolServerError) as abandoned:
        tool_call(replace(remote, timeout_seconds=1), name="slow", arguments={"seconds": 5})
    assert abandoned.value.sent is True

    with http_server() as url:
        pass  # stopped: its port now refuses connections
    with pytest.raises(ToolServerError) as unreached:
        tool_call(ServerConnection(name="tools", transport="http", url=url, timeout_seconds=10), name="echo", arguments={})
    assert unreached.value.sent is False

    settings.OUTBOUND_ALLOWED_NETWORKS = []
    with pytest.raises(ToolServerError, match="was not called") as refused:
        tool_call(remote, name="echo", arguments={"text": "hi"})
    assert refused.value.sent is False
