"""MCP servers an operator registers for a team: checked before anything is saved, headers encrypted
at rest, sent only to the URL they were entered for, and what an upload is told of them."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection

from tests.factories import TeamFactory
from workflows.definition import McpServerSpec, RegisteredServer
from workflows.errors import DefinitionInvalid, ValidationFailed
from workflows.models import TeamToolServer
from workflows.services.credentials import CredentialsUnreadable
from workflows.services.tool_servers import (
    headers_from_lines,
    registered_headers,
    registered_servers_for,
    tool_server_set,
    tool_server_update,
)
from workflows.services.workflows import workflow_create

pytestmark = pytest.mark.django_db

URL = "https://search.example/mcp"
TOKEN = "Bearer sk-search-0123456789abcdefXYZ9"
HEADERS = {"Authorization": TOKEN, "X-Tenant": "acme-tenant-7"}


def register(team, **changes) -> TeamToolServer:
    return tool_server_set(**{"team": team, "name": "search", "transport": "http", "url": URL, "headers": HEADERS, **changes})


def spec(**changes) -> McpServerSpec:
    return McpServerSpec(**{"name": "search", "transport": "http", "url": URL, **changes})


def test_headers_are_stored_encrypted_with_their_names_and_a_hint_in_the_clear(team):
    register(team)

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM workflows_teamtoolserver")
        row = repr(cursor.fetchall())
    assert TOKEN not in row and TOKEN[-12:] not in row and "acme-tenant-7" not in row
    stored = TeamToolServer.objects.get()
    assert stored.header_names == ["Authorization", "X-Tenant"]
    assert stored.headers_hint == "Authorization: …XYZ9, X-Tenant: …"
    assert registered_headers(team_id=team.pk, server=spec()) == HEADERS


def test_an_upload_is_told_the_names_never_the_values(team):
    register(team)

    assert registered_servers_for(team=team) == {
        "search": RegisteredServer(url=URL, transport="http", header_names=frozenset({"Authorization", "X-Tenant"}))
    }
    assert registered_servers_for(team=TeamFactory(name="other")) == {}


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"url": "http://127.0.0.2/mcp"}, "url"),  # a loopback address outbound requests may not reach
        ({"url": "https://user:pw@search.example/mcp"}, "url"),
        ({"url": "ftp://search.example/mcp"}, "url"),
        ({"transport": "stdio"}, "transport"),
        ({"name": "web search"}, "name"),
        ({"headers": {"Bad Name": "x"}}, "headers.Bad Name"),
        ({"headers": {"Authorization": "Bearer a\nInjected: b"}}, "headers.Authorization"),
    ],
)
def test_a_registration_is_checked_before_anything_is_saved(team, changes, path):
    with pytest.raises(ValidationFailed) as refused:
        register(team, **changes)

    assert [detail["path"] for detail in refused.value.details] == [path]
    assert "a\nInjected" not in str(refused.value.details)
    assert not TeamToolServer.objects.exists()


def test_a_new_url_needs_the_headers_entered_again_and_changes_nothing_without_them(team):
    server = register(team)

    with pytest.raises(ValidationFailed) as refused:
        tool_server_update(server=server, name="search", transport="http", url="https://collector.example/mcp")

    assert refused.value.details == [{"path": "headers", "message": "enter the headers again to change the URL"}]
    assert TeamToolServer.objects.values_list("url", flat=True).get() == URL
    moved = tool_server_update(
        server=server, name="search", transport="http", url="https://collector.example/mcp", headers={"Authorization": "Bearer new"}
    )
    assert registered_headers(team_id=team.pk, server=spec(url=moved.url)) == {"Authorization": "Bearer new"}


def test_left_empty_the_headers_are_kept(team):
    server = register(team)

    tool_server_update(server=server, name="search", transport="sse", url=URL)

    assert registered_headers(team_id=team.pk, server=spec(transport="sse")) == HEADERS


def test_a_registration_never_moves_to_another_team(team):
    server = register(team)
    server.team = TeamFactory(name="other")

    with pytest.raises(ValidationFailed):
        tool_server_update(server=server, name="search", transport="http", url=URL, headers={"A": "b"})

    assert TeamToolServer.objects.values_list("team", flat=True).get() == team.pk


def test_headers_go_only_to_the_server_of_the_registrations_name_transport_and_url(team):
    register(team)

    assert registered_headers(team_id=team.pk, server=spec(url="https://collector.example/mcp")) is None
    assert registered_headers(team_id=team.pk, server=spec(transport="sse")) is None
    assert registered_headers(team_id=team.pk, server=spec(name="other")) is None
    assert registered_headers(team_id=TeamFactory(name="other").pk, server=spec()) is None


def test_headers_the_keys_cannot_decrypt_are_an_error_that_names_the_server_only(team, settings):
    settings.CREDENTIALS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    register(team)
    settings.CREDENTIALS_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(CredentialsUnreadable, match="MCP server 'search'"):
        registered_headers(team_id=team.pk, server=spec())


def test_rotate_credentials_re_encrypts_registered_headers_too(team, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIALS_ENCRYPTION_KEYS = [old]
    register(team)

    settings.CREDENTIALS_ENCRYPTION_KEYS = [new, old]
    out = io.StringIO()
    call_command("rotate_credentials", stdout=out)

    assert out.getvalue().split()[-1] == "1"
    settings.CREDENTIALS_ENCRYPTION_KEYS = [new]
    assert registered_headers(team_id=team.pk, server=spec()) == HEADERS


def test_headers_are_written_one_a_line_and_a_bad_line_is_named_without_its_value():
    assert headers_from_lines("Authorization: Bearer a:b\n\n  X-Tenant:acme  \n") == {
        "Authorization": "Bearer a:b",
        "X-Tenant": "acme",
    }
    with pytest.raises(ValidationFailed) as refused:
        headers_from_lines("Authorization: Bearer x\nBearer-sk-secret")
    assert refused.value.details == [{"path": "headers", "message": "line 2 is not 'Name: value'"}]
    assert "sk-secret" not in refused.value.message
    with pytest.raises(ValidationFailed):
        headers_from_lines("A: 1\na: 2")


CONDUCTOR = """
workflow:
  name: search
  entry_point: a
  runtime:
    provider: fake
    default_model: sim
    mcp_servers:
      search:
        type: http
        url: {url}
        headers:
          Authorization: "Bearer ${{SEARCH_TOKEN}}"
agents:
  - name: a
    prompt: hi
    routes: [{{to: $end}}]
"""


def test_a_conductor_workflow_uploads_unchanged_once_its_server_is_registered(team):
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_create(team=team, definition=CONDUCTOR.format(url=URL))
    assert "register the MCP server 'search'" in str(refused.value.details)

    register(team)
    version = workflow_create(team=team, definition=CONDUCTOR.format(url=URL))

    assert version.definition["mcp_servers"][0]["headers"] == {"Authorization": "Bearer ${SEARCH_TOKEN}"}
    with pytest.raises(DefinitionInvalid) as elsewhere:
        workflow_create(team=team, definition=CONDUCTOR.format(url="https://collector.example/mcp"))
    assert "the registration is for another URL" in str(elsewhere.value.details)
