"""The X-Request-ID header: kept when it is a request id, made when missing, replaced when hostile, and
the id of the request on each log line and event the request records."""

import json
import logging
import re
from logging.config import DictConfigurator

import pytest
from django.conf import settings
from django.urls import reverse

from budgetsvc.logs import ContextFilter
from tests.factories import THREE_STEP_YAML, workflow_version
from workflows.models import Run
from workflows.services.events import event_record

pytestmark = pytest.mark.django_db

NEW_ID = re.compile(r"[0-9a-f]{32}")


def formatter(name: str) -> logging.Formatter:
    """The formatter LOGGING configures under `name`, as the service's processes get it."""
    return DictConfigurator(settings.LOGGING).configure_formatter(dict(settings.LOGGING["formatters"][name]))


@pytest.mark.parametrize("given", ["3f2b8c9e-1d4a-4c7b-9e0f-5a6b7c8d9e0f", "nginx0123456789abcdef0123456789ab", "lb:req.42_a-b", "x" * 64])
def test_a_request_id_the_client_gives_is_returned(api, given):
    response = api.get("/api/v1/team", headers={"X-Request-ID": given})
    assert response.status_code == 200
    assert response["X-Request-ID"] == given


def test_without_the_header_each_request_gets_a_new_id_even_when_it_fails(client, api):
    first = api.get("/api/v1/team")
    refused = client.get("/api/v1/team")  # no API key: 401, in the error shape
    assert refused.status_code == 401
    ids = [first["X-Request-ID"], refused["X-Request-ID"]]
    assert all(NEW_ID.fullmatch(request_id) for request_id in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    "hostile",
    [
        "x" * 65,
        "",
        "abc\r\nSet-Cookie: session=stolen",
        "r\u00e9sum\u00e9",
        "<script>alert(1)</script>",
        "id with spaces",
        "\u00a00123456789abcdef0123456789abcdef",  # a UUID's digits behind a no-break space, which int() would skip
    ],
)
def test_a_header_that_is_not_a_request_id_is_replaced_never_echoed(api, hostile):
    response = api.get("/api/v1/team", headers={"X-Request-ID": hostile})
    assert response.status_code == 200
    assert NEW_ID.fullmatch(response["X-Request-ID"])
    assert not hostile or all(hostile not in value for value in response.headers.values())


def test_a_log_line_of_a_request_is_json_with_its_request_id_and_not_the_hostile_header(api, caplog):
    caplog.handler.setFormatter(formatter("json"))
    caplog.handler.addFilter(ContextFilter())
    hostile = "abc\r\nforged line"
    response = api.get("/api/v1/team", headers={"X-Request-ID": hostile})

    [line] = [json.loads(line) for line in caplog.text.splitlines() if "budgetsvc.request_id" in line]
    assert set(line) == {"timestamp", "level", "logger", "message", "request_id"}
    assert (line["level"], line["logger"], line["request_id"]) == ("INFO", "budgetsvc.request_id", response["X-Request-ID"])
    assert "forged" not in caplog.text


def test_a_plain_log_line_shows_the_request_id_or_a_dash(api, caplog):
    caplog.handler.setFormatter(formatter("plain"))
    caplog.handler.addFilter(ContextFilter())
    response = api.get("/api/v1/team", headers={"X-Request-ID": "\u00e9"})
    logging.getLogger("tests").warning("Outside any request.")

    lines = caplog.text.splitlines()
    assert f"INFO budgetsvc.request_id [{response['X-Request-ID']}] The request's X-Request-ID header" in lines[0]
    assert lines[-1].endswith(" WARNING tests [-] Outside any request.")


def test_events_a_request_records_carry_its_request_id_in_the_api(api, team):
    workflow_version(team=team, source=THREE_STEP_YAML)
    started = api.post(
        "/api/v1/runs", {"workflow": "research-pipeline", "inputs": {"topic": "x"}}, format="json", headers={"X-Request-ID": "start-1"}
    )
    run_id = started.json()["id"]
    cancelled = api.post(f"/api/v1/runs/{run_id}/cancel", {}, format="json")

    events = api.get(f"/api/v1/runs/{run_id}/events").json()["results"]
    assert [(e["type"], e["request_id"]) for e in events] == [
        ("run_started", "start-1"),
        ("run_cancelled", cancelled["X-Request-ID"]),
    ]
    # Outside any request or task (a management command, a shell), no id is known; none lingers.
    assert event_record(run=Run.objects.get(pk=run_id), type="run_completed").request_id is None


def test_the_admin_finds_the_events_of_one_request_by_its_id(api, team, admin_client):
    workflow_version(team=team, source=THREE_STEP_YAML)
    body = {"workflow": "research-pipeline", "inputs": {"topic": "x"}}
    first = api.post("/api/v1/runs", body, format="json", headers={"X-Request-ID": "first-start"}).json()["id"]
    api.post("/api/v1/runs", body, format="json", headers={"X-Request-ID": "second-start"})

    page = admin_client.get(reverse("admin:workflows_event_changelist"), {"q": "first-start"})
    assert [event.run_id for event in page.context["cl"].result_list] == [first]
    assert "first-start" in page.content.decode()
