"""Registered MCP servers on the team's page: headers typed as 'Name: value' lines are stored
encrypted, never shown again (not even sent back with an error), kept when left empty, and needed
again for a new URL."""

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from tests.admin.test_teams import change_url, form_data
from workflows.models import TeamToolServer
from workflows.definition import McpServerSpec
from workflows.services.tool_servers import registered_headers, tool_server_set

pytestmark = pytest.mark.django_db

URL = "https://search.example/mcp"
TOKEN = "Bearer sk-search-0123456789abcdef-SECRET"


def inline(**fields) -> dict:
    return {f"tool_servers-0-{name}": value for name, value in fields.items()}


def add_server(client, team, **fields):
    data = form_data(client, team, **{"tool_servers-TOTAL_FORMS": "1", "change_reason": ""})
    data |= inline(**{"name": "search", "transport": "http", "url": URL, "headers": f"Authorization: {TOKEN}", **fields})
    return client.post(change_url(team), data)


def sent(team, **changes) -> dict | None:
    server = McpServerSpec(**{"name": "search", "transport": "http", "url": URL, **changes})
    return registered_headers(team_id=team.pk, server=server)


def errors(response) -> list:
    [formset] = [each.formset for each in response.context["inline_admin_formsets"] if each.formset.prefix == "tool_servers"]
    return formset.errors


def test_an_operator_registers_a_server_whose_headers_are_stored_encrypted_and_never_shown(admin_client, team):
    response = add_server(admin_client, team)

    assert response.status_code == 302, errors(response)
    stored = TeamToolServer.objects.get(team=team)
    assert TOKEN not in stored.headers_encrypted and stored.header_names == ["Authorization"]
    assert sent(team) == {"Authorization": TOKEN}
    page = admin_client.get(change_url(team)).content.decode()
    assert "Authorization: …CRET" in page  # the hint
    assert TOKEN not in page and "sk-search" not in page and stored.headers_encrypted not in page


def test_left_empty_the_headers_are_kept_and_a_new_url_needs_them_again(admin_client, team):
    tool_server_set(team=team, name="search", transport="http", url=URL, headers={"Authorization": TOKEN})

    kept = admin_client.post(change_url(team), form_data(admin_client, team, **inline(transport="sse", headers="")))
    assert kept.status_code == 302, errors(kept)
    assert sent(team, transport="sse") == {"Authorization": TOKEN}

    moved = admin_client.post(
        change_url(team), form_data(admin_client, team, **inline(url="https://collector.example/mcp", headers=""))
    )
    assert moved.status_code == 200
    assert errors(moved) == [{"headers": ["enter the headers again to change the URL"]}]
    assert TeamToolServer.objects.values_list("url", flat=True).get() == URL


def test_a_refused_registration_is_a_form_error_that_sends_no_header_back(admin_client, team):
    response = add_server(admin_client, team, url="http://10.0.0.5/mcp")

    assert response.status_code == 200
    assert list(errors(response)[0]) == ["url"]
    assert TOKEN not in response.content.decode()
    assert not TeamToolServer.objects.exists()

    bad_line = add_server(admin_client, team, headers=f"Authorization: {TOKEN}\nsk-search-no-colon")
    assert errors(bad_line) == [{"headers": ["line 2 is not 'Name: value'"]}]
    assert "sk-search" not in bad_line.content.decode()


def test_staff_of_the_team_register_its_servers_as_they_set_its_credentials(team):
    user = User.objects.create_user("ops", password="x", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="workflows"))
    team.staff.add(user)
    client = Client()
    client.force_login(user)

    response = add_server(client, team)

    assert response.status_code == 302, errors(response)
    assert sent(team) == {"Authorization": TOKEN}
