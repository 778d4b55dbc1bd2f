"""An agent's tool loop on its run's admin page: each model call and tool call is a step of the
timeline, each with its event and, for a model call, its ledger entry."""

import pytest
from django.urls import reverse

from tests.services.test_tool_loop import BOOK, LOOKUP, Tools, drive, source, start
from tests.mcp_servers import http_server

pytestmark = pytest.mark.django_db


def test_the_run_page_lists_the_loops_calls_with_their_events(admin_client, team):
    tools = Tools()
    with http_server(server=tools.server) as url:
        run = drive(start(team, source(url, tool_calls=[[LOOKUP, BOOK]])))

    shown = admin_client.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()

    assert run.status == "completed", run.error
    assert shown.count("a model call of its agent") == 2 and shown.count("a tool call of its agent") == 2
    events = ("Tools Listed", "Model Call Completed", "Tool Call Completed", "Agent Completed")
    assert [shown.count(f">{event}<") for event in events] == [1, 1, 2, 1]
    assert shown.count("travel__book") >= 2  # the model asked for it, and its call's event names it
