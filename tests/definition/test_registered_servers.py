"""MCP servers an operator registered for the team: a conductor workflow's `${VAR}` in a header is
accepted only for a server of a registration's name, transport and URL that holds that header, and
what a call sends is the registration's headers, never the `${...}` text."""

import pytest

from tests.definition.test_tools import ROUTES, problems, workflow
from workflows.definition import RegisteredServer, WorkflowDefinition, headers_to_send, load_definition

URL = "https://search.example/mcp"
TOKEN = {"Authorization": "Bearer ${SEARCH_TOKEN}"}
REGISTERED = {"search": RegisteredServer(url=URL, transport="http", header_names=frozenset({"Authorization"}))}
AT = "workflow.runtime.mcp_servers.search.headers.Authorization"


def search(**changes) -> dict:
    return {"search": {"type": "http", "url": URL, "headers": TOKEN, **changes}}


def test_a_header_of_a_matching_registration_may_hold_a_variable_and_is_kept_as_written():
    definition = load_definition(workflow(servers=search()), provider_routes=ROUTES, registered_servers=REGISTERED)

    assert definition.mcp_servers["search"].headers == TOKEN
    assert WorkflowDefinition.from_dict(definition.to_dict()) == definition


def test_header_names_match_whatever_their_case_as_in_http():
    servers = {"search": {"type": "http", "url": URL, "headers": {"authorization": "Bearer ${SEARCH_TOKEN}"}}}

    load_definition(workflow(servers=servers), provider_routes=ROUTES, registered_servers=REGISTERED)


def test_a_server_of_a_registration_may_leave_its_headers_out():
    servers = {"search": {"type": "http", "url": URL}}

    assert load_definition(workflow(servers=servers), provider_routes=ROUTES, registered_servers=REGISTERED).mcp_servers["search"].headers == {}


def test_without_a_registration_the_variable_is_refused_saying_how_to_register_it():
    message = problems(workflow(servers=search()))[AT]

    assert message.startswith("'${SEARCH_TOKEN}' would read the environment variable 'SEARCH_TOKEN'")
    assert "ask an operator to register the MCP server 'search' for the team with its 'Authorization' header" in message


@pytest.mark.parametrize(
    ("server", "says"),
    [
        (search(url="https://collector.example/mcp"), "the registration is for another URL, and its headers go only there"),
        (search(type="sse"), "it is registered as an 'http' server, not 'sse'"),
        (search(headers={"X-Api-Key": "${KEY}"}), "the registration holds no 'X-Api-Key' header (it holds: Authorization)"),
    ],
    ids=["another URL", "another transport", "another header"],
)
def test_a_registration_fills_in_only_its_own_server_and_headers(server, says):
    found = problems(workflow(servers=server), registered_servers=REGISTERED)

    [(path, message)] = found.items()
    assert path.startswith("workflow.runtime.mcp_servers.search.headers.")
    assert message.startswith("'${") and says in message


def test_a_registration_accepts_variables_only_in_its_servers_headers():
    document = workflow(servers=search(), agent={"prompt": "Search ${TOPIC}."})

    assert list(problems(document, registered_servers=REGISTERED)) == ["agents[0].prompt"]


def test_another_servers_variables_are_refused_where_one_is_registered():
    servers = {**search(), "other": {"type": "http", "url": "https://other.example/mcp", "headers": TOKEN}}

    assert list(problems(workflow(servers=servers), registered_servers=REGISTERED)) == [
        "workflow.runtime.mcp_servers.other.headers.Authorization"
    ]


def test_an_inline_sub_workflow_is_read_with_the_teams_registrations():
    child = {**workflow(servers=search()), "agents": [{"name": "c", "prompt": "hi", "routes": [{"to": "$end"}]}]}
    child["workflow"] = {**child["workflow"], "name": "child", "entry_point": "c"}
    document = workflow(agent={"type": "workflow", "workflow": child, "prompt": None})
    document["agents"][0].pop("prompt")

    load_definition(document, provider_routes=ROUTES, registered_servers=REGISTERED)
    assert any("would read the environment variable" in message for message in problems(document).values())


def test_what_is_sent_is_the_registrations_headers_in_place_of_the_workflows_and_never_a_variable():
    written = {"authorization": "Bearer ${SEARCH_TOKEN}", "X-Client": "budgetsvc", "X-Trace": "${TRACE}"}

    assert headers_to_send(written=written, registered={"Authorization": "Bearer s3cret"}) == {
        "X-Client": "budgetsvc",
        "Authorization": "Bearer s3cret",
    }
    # No registration (any more): the workflow's literal headers only; the server will refuse.
    assert headers_to_send(written=written, registered=None) == {"X-Client": "budgetsvc"}
