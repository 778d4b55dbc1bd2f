"""/healthz, /readyz and /metrics as a load balancer and Prometheus call them.

The readiness checks run on threads with their own database connections, which see only what is
committed: these tests commit (transaction=True).
"""

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from budgetsvc.celery import app
from tests.conftest import wait_until
from workflows.models import SweepHeartbeat
from workflows.services.sweeper import sweep_stuck_steps

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-test-token-0123456789"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def broker_at(settings):
    """Point the broker at a Redis URL, whichever transport the tests run on."""

    def point(url: str) -> None:
        settings.CELERY_BROKER_URL = url
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
        if hasattr(settings, "CELERY_BROKER_TRANSPORT"):
            del settings.CELERY_BROKER_TRANSPORT

    return point


@pytest.fixture
def swept():
    sweep_stuck_steps()


def readyz(client: Client | None = None):
    response = (client or Client()).get("/readyz")
    return response.status_code, response.json()


def test_healthz_answers_without_the_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_answers_200_when_every_check_passes(swept):
    assert readyz() == (
        200,
        {"status": "ready", "checks": {"database": "ok", "broker": "ok", "migrations": "ok", "sweeper": "ok"}},
    )


def test_probes_answer_a_host_that_allowed_hosts_does_not_list(swept):
    """A load balancer probes by the instance's address; the API still refuses that Host."""
    by_address = Client(HTTP_HOST="10.20.30.40")
    assert by_address.get("/healthz").status_code == 200
    assert readyz(by_address)[0] == 200
    assert by_address.get("/api/v1/runs").status_code == 400


def test_readyz_names_an_unreachable_broker(swept, broker_at):
    port = closed_port()
    broker_at(f"redis://127.0.0.1:{port}/0")

    status, body = readyz()

    assert status == 503
    assert body["error"]["type"] == "not_ready"
    assert body["error"]["message"] == "Not ready: broker."
    assert set(body["error"]["details"]) == {"broker"}
    # The finding names the failure, not where the broker is.
    assert str(port) not in str(body) and "127.0.0.1" not in str(body)


def test_readyz_gives_up_on_a_hung_broker_within_the_timeout(swept, broker_at, settings):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    # A socket that accepts connections and never answers: a hung Redis.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        broker_at(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")

        started = time.monotonic()
        status, body = readyz()
        assert time.monotonic() - started < 3
        assert status == 503
        assert set(body["error"]["details"]) == {"broker"}


def test_readyz_names_a_missing_filesystem_broker_folder(swept, settings, tmp_path):
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("the filesystem transport's folder")
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "data_folder_in": str(tmp_path / "gone"),
        "data_folder_out": str(tmp_path / "gone"),
    }
    status, body = readyz()
    assert status == 503
    assert set(body["error"]["details"]) == {"broker"}


def test_readyz_names_an_unapplied_migration(swept):
    recorder = MigrationRecorder(connection)
    latest = max(name for app, name in recorder.applied_migrations() if app == "workflows")
    recorder.record_unapplied("workflows", latest)
    try:
        status, body = readyz()
    finally:
        recorder.record_applied("workflows", latest)

    assert status == 503
    assert set(body["error"]["details"]) == {"migrations"}
    assert body["error"]["details"]["migrations"] == f"1 migrations are not applied: workflows.{latest}."


def test_readyz_names_a_sweeper_that_stopped(swept, settings):
    SweepHeartbeat.objects.update(swept_at=timezone.now() - timedelta(seconds=settings.HEALTH_SWEEP_MAX_AGE_SECONDS + 5))

    status, body = readyz()

    assert status == 503
    assert set(body["error"]["details"]) == {"sweeper"}
    assert "is celery beat running" in body["error"]["details"]["sweeper"]


def test_readyz_names_a_sweeper_that_never_ran():
    status, body = readyz()
    assert status == 503
    assert body["error"]["details"] == {"sweeper": "No sweep has run yet: is celery beat running, with a worker?"}


def test_metrics_is_off_without_a_token(settings):
    settings.METRICS_TOKEN = ""
    response = Client().get("/metrics")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", TOKEN])
def test_metrics_refuses_a_request_without_the_token(settings, authorization):
    settings.METRICS_TOKEN = TOKEN
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "not_authenticated"
    assert b"budgetsvc_" not in response.content


@pytest.fixture
def one_message_queued():
    """The service's queues emptied, then one message waiting on the steps queue."""
    app.control.purge()
    app.send_task("workflows.purge_idempotency_keys")
    yield
    app.control.purge()


def test_metrics_answers_with_the_token_and_reads_the_gauges_at_scrape_time(settings, one_message_queued):
    settings.METRICS_TOKEN = TOKEN
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }
    assert samples[("budgetsvc_reserved_usd", ())] == 0
    assert samples[("budgetsvc_running_steps", ())] == 0
    steps_queue, alerts_queue = settings.CELERY_TASK_QUEUES
    assert samples[("budgetsvc_queue_depth", (("queue", steps_queue.name),))] == 1
    assert samples[("budgetsvc_queue_depth", (("queue", alerts_queue.name),))] == 0


def test_metrics_sums_the_processes_writing_to_one_multiprocess_directory(settings, tmp_path, monkeypatch):
    """Two processes (as two gunicorn or Celery pool workers) record; one scrape shows their sum."""
    settings.METRICS_TOKEN = TOKEN
    record = (
        "import django; django.setup(); "
        "from workflows import metrics; from workflows.services.sweeper import SweepReport; "
        "metrics.sweep_recorded(report=SweepReport(crashed_resent={crashed}, lost_resent=1)); "
        "metrics.webhook_attempted(status='delivered')"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for crashed in (2, 3):
        subprocess.run(
            [sys.executable, "-c", record.format(crashed=crashed)], cwd=settings.BASE_DIR, env=env, check=True, timeout=60
        )

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()

    assert 'budgetsvc_sweeper_actions_total{action="crashed_resent"} 5.0' in text
    assert 'budgetsvc_sweeper_actions_total{action="lost_resent"} 2.0' in text
    assert 'budgetsvc_webhook_attempts_total{outcome="delivered"} 2.0' in text


def test_readyz_gives_up_on_a_hung_query_and_starts_no_second_beside_it(swept, settings):
    """A table locked by another session hangs the migrations check's query, as a hung database would."""
    if connection.vendor != "postgresql":
        pytest.skip("a reader that a lock blocks: SQLite's WAL lets readers through")
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    locked, release = threading.Event(), threading.Event()

    def hold_lock():
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE django_migrations IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)
        connection.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        first = readyz()
        second = readyz()
        assert time.monotonic() - started < 3
    finally:
        release.set()
        holder.join()

    assert first[0] == second[0] == 503
    assert first[1]["error"]["details"] == {"migrations": "No answer within 0.5 s."}
    assert second[1]["error"]["details"] == {"migrations": "An earlier check has not finished yet; it is hanging."}
    wait_until(lambda: readyz()[0] == 200, timeout=10, message="the check to pass once the lock is gone")
