"""The admin's run page follows a run live in Chromium, served as `make run` serves it (tests/integration/
test_streams.py): rows appear and the status and spend change while the page stays loaded."""

import pytest
from django.conf import settings
from django.test import Client

from tests.admin.chromium import CHROMIUM, Chromium
from tests.factories import TeamFactory
from tests.integration.test_streams import start_slow_run, streaming_service  # noqa: F401 - a fixture
from workflows.admin.base import format_usd
from workflows.models import Run
from workflows.services.teams import api_key_create

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(300),
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)"),
]

PAGE_STATE = """(() => ({
  rows: [...document.querySelectorAll("#run-events tr[data-event-id]")].map(row => Number(row.dataset.eventId)),
  status: document.getElementById("run-status").textContent.trim(),
  spent: document.getElementById("run-spent").textContent.trim(),
  loadedOnce: window.loadedOnce === true,
}))()"""


def test_the_run_page_shows_a_run_live_until_it_completes(streaming_service, django_user_model, tmp_path):  # noqa: F811
    team = TeamFactory(name="live")
    _, key = api_key_create(team=team, name="live")
    run_id = start_slow_run(streaming_service, {"Authorization": f"Bearer {key}"}, team, latency_ms=4000)
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("operator", password="unused"))
    cookie = {"name": settings.SESSION_COOKIE_NAME, "value": client.cookies[settings.SESSION_COOKIE_NAME].value}

    with Chromium(profile=tmp_path / "profile", log=tmp_path / "chromium.log") as browser:
        browser.command("Storage.setCookies", cookies=[{**cookie, "url": streaming_service}])
        page = browser.open_page(width=1400, height=1000)
        browser.navigate(page, f"{streaming_service}/admin/workflows/run/{run_id}/change/")
        browser.evaluate(page, "window.loadedOnce = true")
        at_load = browser.evaluate(page, PAGE_STATE)
        browser.wait_until(page, "document.getElementById('run-events').dataset.streamEnded === 'completed'", timeout=60)
        at_end = browser.evaluate(page, PAGE_STATE)
        (tmp_path / "run.png").write_bytes(browser.screenshot(page))

    run = Run.objects.get(pk=run_id)
    assert at_load["status"] in ("Queued", "Running"), at_load
    assert at_end["loadedOnce"], "the page was not reloaded"
    assert at_end["status"] == "Completed"
    assert at_end["rows"] == list(run.events.order_by("id").values_list("id", flat=True))
    assert len(at_end["rows"]) > len(at_load["rows"])
    assert at_end["spent"] == format_usd(run.spent_usd) != at_load["spent"]
