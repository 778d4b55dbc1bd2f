"""Request rates per API key and per staff user (workflows/api/throttles.py): past its rate a caller gets a 429
in the error shape with Retry-After; scopes and keys count apart; the count is shared by every process."""

import subprocess
import sys
import uuid

import pytest
from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.redis import RedisCache
from rest_framework.test import APIClient

from budgetsvc.settings import cache_from_url
from tests.api.test_staff import basic, staff_user
from tests.conftest import client_for
from tests.factories import TeamFactory, workflow_version
from tests.integration.conftest import ON_REDIS, service_env
from tests.reports.ledger import start_run, taken_over
from workflows.models import Run
from workflows.services.teams import api_key_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def cache_url(settings, tmp_path) -> str:
    """A cache of this test's own, of the kind the settings chose: the broker's Redis, or files."""
    configured = settings.CACHES["default"]
    if configured["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
        return f"{configured['LOCATION']}?key_prefix=throttle-test-{uuid.uuid4().hex}"
    return f"filecache://{tmp_path / 'cache'}"


@pytest.fixture
def throttle(settings, cache_url):
    """Sets the rates of this test, counted in its own cache."""
    settings.CACHES = {"default": cache_from_url(cache_url)}

    def rates(**given: str) -> None:
        settings.API_THROTTLE_RATES = given

    return rates


def assert_throttled(response) -> int:
    assert response.status_code == 429, response.content
    wait = int(response["Retry-After"])
    assert 1 <= wait <= 60
    assert response.json() == {
        "error": {
            "type": "throttled",
            "message": f"Request was throttled. Expected available in {wait} seconds.",
            "details": {"retry_after_seconds": wait},
        }
    }
    return wait


def test_a_key_past_its_read_rate_is_answered_429_with_retry_after_in_the_error_shape(api, throttle):
    throttle(read="2/minute")

    assert [api.get("/api/v1/team").status_code for _ in range(2)] == [200, 200]
    assert_throttled(api.get("/api/v1/runs"))


def test_reads_writes_and_reports_are_counted_apart(api, team, throttle):
    throttle(write="1/minute", report="1/minute")
    workflow_version(team=team)
    start = {"workflow": "research-pipeline", "inputs": {"topic": "x"}}

    assert api.post("/api/v1/runs", start, format="json").status_code == 202
    assert_throttled(api.post("/api/v1/runs", start, format="json"))
    assert Run.objects.count() == 1
    assert api.get("/api/v1/spend").status_code == 200
    assert_throttled(api.get("/api/v1/spend"))
    # Reads have no rate here: never throttled.
    assert {api.get("/api/v1/runs").status_code for _ in range(5)} == {200}


def test_one_teams_throttled_key_leaves_another_teams_key_alone(api, throttle):
    throttle(read="1/minute")
    other = client_for(TeamFactory(name="globex"))

    assert api.get("/api/v1/team").status_code == 200
    assert_throttled(api.get("/api/v1/team"))
    assert other.get("/api/v1/team").status_code == 200


def test_the_staff_endpoint_is_throttled_per_user(team, throttle):
    throttle(staff="1/minute")
    staff_user("ops", team)
    staff_user("ops2", team)
    run = start_run(team=team, version=workflow_version(team=team))
    taken_over(run, sequence=1)
    estimate = run.ledger_entries.get(basis="estimated")
    url = f"/api/v1/ledger/{estimate.pk}/adjustments"
    adjustment = {"amount_usd": "0.01", "reason": "billed late"}

    assert basic("ops").post(url, adjustment, format="json").status_code == 201
    assert_throttled(basic("ops").post(url, adjustment, format="json"))
    assert basic("ops2").post(url, adjustment, format="json").status_code == 201


def test_a_rate_lowered_while_counts_are_kept_still_says_when_to_try_again(api, throttle):
    throttle(read="3/minute")
    assert [api.get("/api/v1/team").status_code for _ in range(3)] == [200, 200, 200]

    throttle(read="1/minute")

    assert_throttled(api.get("/api/v1/team"))


def test_a_cache_that_does_not_answer_lets_requests_through_unthrottled(api, settings, caplog):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.API_THROTTLE_RATES = {"read": "1/minute"}

    assert [api.get("/api/v1/team").status_code for _ in range(2)] == [200, 200]
    assert "The throttle's cache did not answer; read request let through." in caplog.text


# Another process of the service, as a second gunicorn worker would be: its own settings, the same cache.
READ_TEAM = """
import sys
import django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {sys.argv[1]}")
print(" ".join(str(client.get("/api/v1/team").status_code) for _ in range(int(sys.argv[2]))))
"""


@pytest.mark.django_db(transaction=True)
def test_processes_share_the_count(team, throttle, cache_url, tmp_path):
    throttle(read="3/minute")
    _, raw_key = api_key_create(team=team, name="shared")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    # The cache every process uses: Redis where the broker is Redis, files under VAR_DIR otherwise.
    assert isinstance(caches["default"], RedisCache if ON_REDIS else FileBasedCache)

    assert client.get("/api/v1/team").status_code == 200
    env = {**service_env(tmp_path / "var"), "CACHE_URL": cache_url, "API_THROTTLE_READ": "3/minute"}
    other_process = subprocess.run(
        [sys.executable, "-c", READ_TEAM, raw_key, "3"], env=env, capture_output=True, text=True, timeout=60
    )

    assert other_process.stdout.split() == ["200", "200", "429"], other_process.stderr
    assert_throttled(client.get("/api/v1/team"))
