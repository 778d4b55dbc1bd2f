"""A tool loop against a real MCP server behind an API token, which an operator registered for the
team: the workflow, uploaded as conductor writes it (`Bearer ${SEARCH_TOKEN}`), reaches the server
with the registered token, and the token is kept nowhere the service records a run."""

import json

import pytest
import yaml

from tests.invariants import assert_invariants
from tests.mcp_servers import http_server
from tests.providers.conftest import everything_recorded_about
from tests.services.test_tool_loop import LOOKUP, Tools, drive, loop, source, start
from workflows.models import Checkpoint, Event, LedgerEntry, Run, Step
from workflows.services.runs import run_resume
from workflows.services.tool_servers import tool_server_set, tool_server_update

pytestmark = pytest.mark.django_db

TOKEN = "Bearer sk-search-0123456789abcdef-SECRET"
WRITTEN = "Bearer ${SEARCH_TOKEN}"


@pytest.fixture
def guarded():
    """The counted tools of test_tool_loop, answering 401 without the token."""
    tools, seen = Tools(), []
    with http_server(server=tools.server, required={"Authorization": TOKEN}, seen=seen) as url:
        tools.url, tools.seen = url, seen
        yield tools


def conductor_source(url: str, **options) -> str:
    document = yaml.safe_load(source(url, **options))
    server = document["workflow"]["runtime"]["mcp_servers"]["travel"]
    server["headers"] = {"Authorization": WRITTEN, "X-Client": "budgetsvc"}
    return yaml.safe_dump(document)


def register(team, url: str, token: str = TOKEN):
    return tool_server_set(team=team, name="travel", transport="http", url=url, headers={"Authorization": token})


def recorded(run: Run) -> str:
    """`everything_recorded_about` the run, and every column of its steps, ledger rows and checkpoints."""
    rows = [
        list(Step.objects.filter(run=run).values()),
        list(LedgerEntry.objects.filter(run=run).values()),
        list(Checkpoint.objects.filter(run=run).values()),
        list(Event.objects.filter(run=run).values()),
    ]
    return everything_recorded_about(run) + json.dumps(rows, default=str)


def test_a_loop_reaches_a_registered_server_with_its_token_and_records_it_nowhere(team, guarded):
    register(team, guarded.url)

    run = drive(start(team, conductor_source(guarded.url, tool_calls=[[LOOKUP], [LOOKUP]])))

    assert run.status == "completed", run.error
    assert [role for role, _ in loop(run)] == ["", "model_call", "tool_call", "model_call", "tool_call", "model_call"]
    assert guarded.calls == [("lookup", {"city": "Oslo"})] * 2
    assert all(headers["authorization"] == TOKEN for headers in guarded.seen)
    assert all(headers["x-client"] == "budgetsvc" for headers in guarded.seen)  # the workflow's own
    assert TOKEN not in recorded(run) and "sk-search" not in recorded(run)
    assert_invariants(run)


def test_without_the_registration_the_server_refuses_and_the_variable_is_never_sent(team, guarded):
    server = register(team, guarded.url)
    run = start(team, conductor_source(guarded.url, tool_calls=[[LOOKUP]]))
    server.delete()

    run = drive(run)

    assert run.status == "failed"
    assert run.error["type"] == "ToolServerError" and "'travel' could not list its tools" in run.error["message"]
    assert guarded.seen and all("authorization" not in headers for headers in guarded.seen)
    assert all("${" not in json.dumps(headers) for headers in guarded.seen)

    # Registered again, the resumed run reaches the server.
    register(team, guarded.url)
    run_resume(run=run, reason="registered")
    assert drive(run).status == "completed", run.error
    assert TOKEN not in recorded(run)
    assert_invariants(run)


def test_a_registration_changed_after_the_upload_is_used_as_it_is_at_each_call(team, guarded):
    server = register(team, guarded.url, token="Bearer an-old-token-0000")
    run = start(team, conductor_source(guarded.url, tool_calls=[[LOOKUP]]))
    tool_server_update(server=server, name="travel", transport="http", url=guarded.url, headers={"Authorization": TOKEN})

    assert drive(run).status == "completed", run.error
    assert guarded.calls == [("lookup", {"city": "Oslo"})]


def test_a_tool_call_refused_by_the_server_is_an_error_the_model_reads_naming_no_header(team, guarded):
    server = register(team, guarded.url)
    run = start(team, conductor_source(guarded.url, tool_calls=[[LOOKUP]]))
    drive(run, max_steps=2)  # the listing and the model call that asks for the lookup
    tool_server_update(
        server=server, name="travel", transport="http", url=guarded.url, headers={"Authorization": "Bearer wrong-token-1234"}
    )

    run = drive(run)

    assert run.status == "completed", run.error
    [result] = Step.objects.filter(run=run, role="tool_call").values_list("output", flat=True)
    assert result["is_error"] and "could not be called" in result["content"]
    assert "wrong-token" not in recorded(run) and TOKEN not in recorded(run)
    assert guarded.calls == []
