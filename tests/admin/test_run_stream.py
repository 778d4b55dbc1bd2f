"""The admin's copy of a run's event stream, which the run page follows (workflows/static/workflows/admin/
run_live.js): the same frames as the API's, for staff who can see the run and no one else."""

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.urls import reverse

from tests.admin.test_runs import waiting  # noqa: F401 - a fixture
from tests.factories import TeamFactory
from tests.security.test_admin_scoping import staff_client
from workflows.models import EventType

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def free_slots():
    cache.delete_many([f"event-stream:team-{team_id}:slot-{slot}" for team_id in range(1, 50) for slot in range(20)])


def stream_url(run) -> str:
    return reverse("admin:workflows_run_events_stream", args=[run.pk])


def body_of(response) -> str:
    async def collect():
        return [chunk async for chunk in response.streaming_content]

    return b"".join(async_to_sync(collect)()).decode()


def test_the_run_page_streams_the_runs_events_after_the_last_it_shows_and_ends(admin_client, waiting):  # noqa: F811
    page = admin_client.get(reverse("admin:workflows_run_change", args=[waiting.pk])).content.decode()
    last = waiting.events.order_by("-id").first()
    assert f'data-stream-url="{stream_url(waiting)}"' in page
    assert f'<tr data-event-id="{last.pk}" ' in page
    assert 'id="run-status"' in page and 'id="run-spent"' in page and "workflows/admin/run_live.js" in page

    response = admin_client.get(f"{stream_url(waiting)}?after={last.pk - 1}")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = body_of(response)
    assert f"id: {last.pk}\nevent: {EventType.INPUT_REQUESTED}\ndata: " in body
    assert body.endswith('event: end\ndata: {"status": "waiting_for_input"}\n\n')


def test_staff_of_another_team_get_a_404_and_so_does_a_stranger(client, waiting):  # noqa: F811
    insider, outsider = staff_client("ops", waiting.team), staff_client("other-ops", TeamFactory())

    assert body_of(insider.get(stream_url(waiting))).endswith('{"status": "waiting_for_input"}\n\n')
    assert outsider.get(stream_url(waiting)).status_code == 404
    assert client.get(stream_url(waiting)).status_code == 302  # to the login page


def test_a_bad_start_is_a_400_in_the_error_shape(admin_client, waiting):  # noqa: F811
    response = admin_client.get(stream_url(waiting), HTTP_LAST_EVENT_ID="x")

    assert response.status_code == 400
    assert response.json()["error"]["details"] == [{"path": "Last-Event-ID", "message": "must be a whole number from 0 to 9223372036854775807"}]
